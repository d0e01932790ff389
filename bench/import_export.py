"""Benchmark: ``mxgate import`` and ``mxgate export`` of a 1,000,000-mailbox data set.

Generates a data set of 1,000 domains, 1,000,000 mailboxes (SHA512-CRYPT-sized
hashes), 20,000 forwards, 2,000 relays and a gateway transport per domain
(``--quick``: a tenth of the mailboxes), writes it in the layout ``mxgate
export`` writes (YAML by default, ``--format json``), then runs the real
command line, each in a process of its own, and times it:

  import          into a fresh, migrated, empty database (target: < 60 s)
  export          back to a file; the text must equal the generated file
  re-import       the same file again: everything unchanged, nothing written
  dry run         a changed copy (1,000 quotas changed, 1,000 mailboxes gone,
                  1,000 new) with --replace --dry-run: the diff, nothing written

Each line reports wall seconds and the peak RSS of the child process.

Usage: python bench/import_export.py [--quick] [--format yaml|json] [--dsn DSN] [--json FILE]

Without ``--dsn`` a private PostgreSQL (mxgate.embedded) runs in a temporary
directory and is removed at the end. With ``--dsn`` (a server's admin DSN) a
database ``mxgate_bench_transfer`` is created there (dropped first if it exists).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mxgate.core.transfer import DataSet, Row
from mxgate.core.transfer_text import json_lines, yaml_lines
from mxgate.directory import migrate
from mxgate.embedded import EmbeddedPostgres

DATABASE = "mxgate_bench_transfer"
TARGET_IMPORT_S = 60.0
HASH = "{SHA512-CRYPT}$6$rounds=5000$saltsaltsaltsalt$" + "x" * 86


def dataset(mailboxes: int, domains: int = 1000) -> DataSet:
    """A synthetic data set, rows sorted as an export sorts them."""
    names = [f"d{i:04d}.example.net" for i in range(domains)]
    data: DataSet = {
        "domain": [(d, "maila", None) for d in names],
        "forward": [
            (f"alias{i}@{names[i % domains]}", f"user{i}@{names[(i + 1) % domains]}", None)
            for i in range(20_000)
        ],
        "relay": [(f"relay{i}@{names[i % domains]}", "maila", "bench") for i in range(2_000)],
        "mailbox": [
            (f"user{i}@{names[i % domains]}", HASH, 10485760, f"node{i % 4}", None)
            for i in range(mailboxes)
        ],
        "transport": [(d, "lmtp:[192.0.2.1]:24", "", None) for d in names],
    }
    for rows in data.values():
        rows.sort(key=lambda row: tuple(str(v) for v in row[:1]))
    data["forward"].sort(key=lambda row: (str(row[0]), str(row[1])))
    return data


def changed_copy(data: DataSet) -> DataSet:
    """1,000 quotas changed, the first 1,000 mailboxes removed, 1,000 added."""
    mailboxes: list[Row] = data["mailbox"][1000:]
    for i in range(0, min(100_000, len(mailboxes)), 100):
        email, password, _quota, node, comment = mailboxes[i]
        mailboxes[i] = (email, password, 1 << 30, node, comment)
    mailboxes += [(f"new{i}@d0000.example.net", HASH, None, "maila", None) for i in range(1000)]
    return {**data, "mailbox": mailboxes}


def write(path: Path, data: DataSet, fmt: str) -> None:
    lines: Iterator[str] = yaml_lines(data) if fmt == "yaml" else json_lines(data)
    with path.open("w", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in lines)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def fresh_database(admin_dsn: str) -> str:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DATABASE}" TEMPLATE template0')
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, DATABASE)
    await migrate(dsn)
    return dsn


def mxgate(dsn: str, workdir: Path, *args: str) -> tuple[float, float, str]:
    """Run ``mxgate ARGS``: (seconds, peak RSS of the child in MiB, stdout)."""
    env = {
        **os.environ,
        "MXGATE_DATABASE_URL": dsn,
        "MXGATE_STATE_DIR": str(workdir / "state"),
    }
    env.pop("MXGATE_CONFIG", None)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mxgate", *args], env=env, stdout=out, stderr=err
        )
        # wait4: the resource usage of this child alone (getrusage would give
        # the largest of all children so far).
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"mxgate {' '.join(args)} failed:\n{err.read()}")
        return seconds, usage.ru_maxrss / 1024, out.read()


async def count_rows(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        tables = ("domain", "forward", "relay", "mailbox", "transport")
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in tables}
    finally:
        await conn.close()


def bench(admin_dsn: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    mailboxes = 100_000 if args.quick else 1_000_000
    results: dict[str, Any] = {"mailboxes": mailboxes, "format": args.format}
    source = workdir / f"data.{args.format}"
    start = time.perf_counter()
    data = dataset(mailboxes)
    write(source, data, args.format)
    results["generate_s"] = time.perf_counter() - start
    results["file_mib"] = source.stat().st_size / (1 << 20)
    changed = workdir / f"changed.{args.format}"
    write(changed, changed_copy(data), args.format)
    total = sum(map(len, data.values()))
    del data
    print(
        f"generated {total} rows, {results['file_mib']:.0f} MiB of {args.format}"
        f" in {results['generate_s']:.1f} s",
        flush=True,
    )

    dsn = asyncio.run(fresh_database(admin_dsn))
    seconds, rss, out = mxgate(dsn, workdir, "import", str(source))
    results["import_s"], results["import_rss_mib"] = seconds, rss
    counts = asyncio.run(count_rows(dsn))
    assert counts["mailbox"] == mailboxes, counts
    print(f"import        {seconds:6.1f} s  peak RSS {rss:5.0f} MiB  ({out.splitlines()[-1]})")

    exported = workdir / f"export.{args.format}"
    fmt = args.format
    seconds, rss, _ = mxgate(dsn, workdir, "export", "--format", fmt, "--output", str(exported))
    results["export_s"], results["export_rss_mib"] = seconds, rss
    same = exported.read_bytes() == source.read_bytes()
    results["export_equals_source"] = same
    print(
        f"export        {seconds:6.1f} s  peak RSS {rss:5.0f} MiB  (same text as imported: {same})"
    )

    seconds, rss, out = mxgate(dsn, workdir, "import", str(source))
    results["reimport_s"], results["reimport_rss_mib"] = seconds, rss
    print(f"re-import     {seconds:6.1f} s  peak RSS {rss:5.0f} MiB  ({out.splitlines()[-1]})")

    seconds, rss, out = mxgate(dsn, workdir, "import", "--dry-run", "--replace", str(changed))
    results["dry_run_s"], results["dry_run_rss_mib"] = seconds, rss
    summary = [line for line in out.splitlines() if not line.startswith("  ")]
    results["dry_run_diff"] = summary
    print(f"dry run       {seconds:6.1f} s  peak RSS {rss:5.0f} MiB  diff:")
    for line in summary:
        print(f"    {line}")
    assert asyncio.run(count_rows(dsn)) == counts, "the dry run wrote"

    verdict = "PASS" if results["import_s"] < TARGET_IMPORT_S else "FAIL"
    results["import_target_s"] = TARGET_IMPORT_S
    results["import_verdict"] = verdict
    print(f"import of {mailboxes} mailboxes: {results['import_s']:.1f} s, target < 60 s: {verdict}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 mailboxes")
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml")
    parser.add_argument("--dsn", help="admin DSN of a server to use instead of an embedded one")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mxgate-bench-transfer-") as tmp:
        workdir = Path(tmp)
        pg: EmbeddedPostgres | None = None
        admin = args.dsn
        if admin is None:
            pg = EmbeddedPostgres(workdir / "pgdata")
            admin = pg.start()
        try:
            results = bench(admin, workdir, args)
        finally:
            if pg is not None:
                pg.stop()
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
