"""Benchmark: routing snapshot speed and memory at the issue's scale.

Builds a routing database of 100,000 domains, 1,000,000 mailboxes, 200,000
forwards, 50,000 relay rows and a gateway transport row per domain (``--quick``:
a tenth of everything), then measures, each next to its target:

  PG load        ``load_snapshot`` wall time, 3 runs, median
  disk cache     the holder's cache file: encode + write (with fsync), and
                 ``CacheFile.read``, 3 runs each, median (the file is in the
                 page cache: this is a warm read)
  memory         VmRSS of a fresh process after a PG load and after a cache
                 load, the delta over that process before loading, and the
                 size of the snapshot's objects (sys.getsizeof, shared objects
                 counted once); also this process's own VmRSS
  decisions      ``decide_recipient`` over 200,000 recipients drawn at random
                 (seeded, equal weights) from six classes, from a client
                 outside mynetworks; perf_counter_ns around each call, the
                 garbage collector left on, the snapshot frozen out of its
                 full collections as SnapshotHolder leaves it after a full
                 load; p50/p99/p99.9 per class and overall.
                 Every reply is checked against the class's expected reply.
  edit-to-effect a running ``SnapshotHolder`` on the big database; 50 mailbox
                 INSERTs through a separate connection, one at a time, each
                 timed from the INSERT until ``holder.current`` has the row
                 (polled every 5 ms in the same event loop)

Usage: python bench/routing.py [--quick] [--dsn DSN [--reset]] [--json FILE] [--seed N]

Without ``--dsn`` a private PostgreSQL (mxgate.embedded) runs in a temporary
directory and is stopped and removed at the end. With ``--dsn`` the data set
is built in that database, which must hold no routing rows (``--reset``
truncates the five tables first); the rows are left there afterwards. The bulk
INSERTs run with the change-capture row triggers disabled (in the same
transaction), so that set-up does not write a million change-log entries; the
edits of the last phase go through the triggers as any edit does.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from mxgate.core.policy import decide_recipient
from mxgate.core.routing import RoutingPolicy
from mxgate.core.snapshot import RoutingData
from mxgate.directory import SnapshotHolder, is_empty, load_snapshot, migrate
from mxgate.directory.admin import ensure_database
from mxgate.directory.cache import CacheFile, encode
from mxgate.directory.memory import freeze_long_lived
from mxgate.directory.queries import TABLE_NAMES
from mxgate.embedded import EmbeddedPostgres

BENCH_DATABASE = "mxgate_bench"
LOAD_RUNS = 3
EDITS = 50
EDIT_TIMEOUT = 10.0  # seconds before an edit counts as never taking effect
WARMUP_DECISIONS = 5_000

# Targets of the issue.
TARGET_DECISION_P50_US = 20.0
TARGET_DECISION_P99_US = 100.0
TARGET_PG_LOAD_S = 15.0
TARGET_CACHE_LOAD_S = 3.0
TARGET_RSS_MB = 500.0
TARGET_EDIT_P99_S = 1.0

MB = 1024 * 1024
CLIENT = ip_address("203.0.113.7")  # outside mynetworks
SENDER = "sender@example.org"
POLICY = RoutingPolicy(
    myhostname="mx1.bench.example",
    mynetworks=(ip_network("10.0.0.0/8"),),
    local_addresses=(ip_address("192.0.2.10"),),
    postmaster="postmaster@d1.bench.example",
)


# -- the data set ------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Row counts. Domain i is ``d{i}.bench.example``; mailbox j is
    ``user{j}@d{j % domains}``, so every domain has mailboxes.

    Domains with i % 10 == 0 have a forward catch-all (to their own mailbox
    user{i}), domains with i % 20 == 5 a relay catch-all. Exact forwards:
    half ``fwd{k}@...`` to outside addresses, the rest ``alias{k}@...`` to one
    of our mailboxes. Exact relays: ``relay{k}@...``.
    """

    domains: int
    mailboxes: int
    forwards: int
    relays: int
    decisions: int

    @property
    def forward_catch_alls(self) -> int:
        return len(range(0, self.domains, 10))

    @property
    def forwards_outside(self) -> int:
        return self.forwards // 2

    @property
    def forwards_own(self) -> int:
        return self.forwards - self.forward_catch_alls - self.forwards_outside

    @property
    def relay_catch_alls(self) -> int:
        return len(range(5, self.domains, 20))

    @property
    def relays_exact(self) -> int:
        return self.relays - self.relay_catch_alls


FULL = Scale(
    domains=100_000, mailboxes=1_000_000, forwards=200_000, relays=50_000, decisions=200_000
)
QUICK = Scale(domains=10_000, mailboxes=100_000, forwards=20_000, relays=5_000, decisions=20_000)


def _build_statements(s: Scale) -> list[str]:
    """Set-based INSERTs (all numbers are ints of ours, never input)."""
    d = "'.bench.example'"
    node = "CASE WHEN {} % 2 = 0 THEN 'maila' ELSE 'mailb' END"
    return [
        f"""INSERT INTO domain (domain, node)
            SELECT 'd' || g || {d}, {node.format("g")}
            FROM generate_series(0, {s.domains - 1}) AS g""",
        f"""INSERT INTO transport (domain, transport, node)
            SELECT 'd' || g || {d}, 'smtp:[10.0.0.' || (g % 20 + 1) || ']', ''
            FROM generate_series(0, {s.domains - 1}) AS g""",
        f"""INSERT INTO mailbox (email, password, node)
            SELECT 'user' || g || '@d' || (g % {s.domains}) || {d}, '{{CRYPT}}!',
                   {node.format(f"(g % {s.domains})")}
            FROM generate_series(0, {s.mailboxes - 1}) AS g""",
        f"""INSERT INTO forward (source, destination)
            SELECT '@d' || g || {d}, 'user' || g || '@d' || g || {d}
            FROM generate_series(0, {s.domains - 1}, 10) AS g""",
        f"""INSERT INTO forward (source, destination)
            SELECT 'fwd' || g || '@d' || (g % {s.domains}) || {d},
                   'someone' || g || '@outside' || (g % 1000) || '.example.net'
            FROM generate_series(0, {s.forwards_outside - 1}) AS g""",
        f"""INSERT INTO forward (source, destination)
            SELECT 'alias' || g || '@d' || (g % {s.domains}) || {d},
                   'user' || m || '@d' || (m % {s.domains}) || {d}
            FROM (SELECT g, (g::bigint * 7919) % {s.mailboxes} AS m
                  FROM generate_series(0, {s.forwards_own - 1}) AS g) AS t""",
        f"""INSERT INTO relay (source, node)
            SELECT '@d' || g || {d}, {node.format("g")}
            FROM generate_series(5, {s.domains - 1}, 20) AS g""",
        f"""INSERT INTO relay (source, node)
            SELECT 'relay' || g || '@d' || (g % {s.domains}) || {d},
                   {node.format(f"(g % {s.domains})")}
            FROM generate_series(0, {s.relays_exact - 1}) AS g""",
    ]


async def build_dataset(dsn: str, scale: Scale, reset: bool) -> float:
    """Migrate and fill the database; return the seconds it took."""
    started = time.perf_counter()
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        if reset:
            await conn.execute(f"TRUNCATE {', '.join(TABLE_NAMES)}")
        elif not await is_empty(conn):
            raise SystemExit(
                "the database already holds routing rows; use an empty one, or --reset"
            )
        async with conn.transaction():
            for table in TABLE_NAMES:
                await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER mxgate_capture")
            for sql in _build_statements(scale):
                await conn.execute(sql)
            for table in TABLE_NAMES:
                await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER mxgate_capture")
        # As a database in service would be: hint bits set, statistics known.
        await conn.execute(f"VACUUM ANALYZE {', '.join(TABLE_NAMES)}")
    finally:
        await conn.close()
    return time.perf_counter() - started


def expected_counts(s: Scale) -> dict[str, int]:
    return {
        "domain": s.domains,
        "mailbox": s.mailboxes,
        "relay": s.relays,
        "forward": s.forwards,
        "transport": s.domains,
    }


# -- machine and memory ------------------------------------------------------


def proc_status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def machine_info(dsn: str, embedded: bool) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        pg_version = await conn.fetchval("SHOW server_version")
        shared_buffers = await conn.fetchval("SHOW shared_buffers")
    finally:
        await conn.close()
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "postgresql": str(pg_version),
        "postgresql_shared_buffers": str(shared_buffers),
        "postgresql_server": "embedded, temporary" if embedded else "given by --dsn",
    }


def snapshot_object_bytes(data: RoutingData) -> int:
    """sys.getsizeof of every dict, tuple, key and value, each object once."""
    seen: set[int] = set()
    total = sys.getsizeof(data)
    stack: list[object] = [
        data.domains,
        data.mailboxes,
        data.relays,
        data.forwards,
        data.transports,
    ]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, tuple):
            stack.extend(obj)
    return total


def memory_probe(source: str, dsn: str, cache_file: Path) -> dict[str, int]:
    """Run in a fresh process: RSS before and after one load from ``source``."""
    gc.collect()
    before = proc_status_bytes("VmRSS")
    if source == "pg":
        data = asyncio.run(load_snapshot(dsn))
    else:
        found = CacheFile(cache_file).read()
        if found is None:
            raise SystemExit(f"no usable cache file at {cache_file}")
        data = found[0]
    gc.collect()
    after = proc_status_bytes("VmRSS")
    return {
        "rss_before": before,
        "rss_after": after,
        "rss_delta": after - before,
        "rss_peak": proc_status_bytes("VmHWM"),
        "object_bytes": snapshot_object_bytes(data),
    }


def run_memory_probe(source: str, dsn: str, cache_file: Path) -> dict[str, int]:
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-probe",
            source,
            "--dsn",
            dsn,
            "--cache-file",
            str(cache_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"memory probe ({source}) failed:\n{proc.stderr}")
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- loads ---------------------------------------------------------------------


async def measure_pg_loads(dsn: str, scale: Scale) -> tuple[RoutingData, list[float]]:
    """LOAD_RUNS full loads; the last snapshot is kept (one at a time in memory)."""
    times: list[float] = []
    data: RoutingData | None = None
    for _ in range(LOAD_RUNS):
        data = None
        gc.collect()
        started = time.perf_counter()
        data = await load_snapshot(dsn)
        times.append(time.perf_counter() - started)
    assert data is not None
    counts = data.counts()
    if counts != expected_counts(scale):
        raise SystemExit(f"loaded {counts}, expected {expected_counts(scale)}")
    return data, times


def measure_cache(data: RoutingData, path: Path) -> dict[str, Any]:
    encode_s: list[float] = []
    write_s: list[float] = []
    read_s: list[float] = []
    cache = CacheFile(path)
    for seq in range(1, LOAD_RUNS + 1):
        started = time.perf_counter()
        parts = encode(data, time.time())
        encoded = time.perf_counter()
        if not cache.write(parts, seq):
            raise SystemExit("cache write skipped")
        encode_s.append(encoded - started)
        write_s.append(time.perf_counter() - encoded)
        del parts
    for _ in range(LOAD_RUNS):
        gc.collect()
        started = time.perf_counter()
        found = CacheFile(path).read()
        read_s.append(time.perf_counter() - started)
        if found is None or found[0] != data:
            raise SystemExit("the cache file does not give back the snapshot")
        del found
    return {
        "file_bytes": path.stat().st_size,
        "encode_s": encode_s,
        "write_s": write_s,
        "load_s": read_s,
    }


# -- decisions -----------------------------------------------------------------

Generator = Callable[[random.Random], str]


def recipient_classes(s: Scale) -> dict[str, tuple[Generator, tuple[int, str]]]:
    """Class name -> (recipient generator, expected (code, enhanced status))."""
    dom = ".bench.example"
    plain = [i for i in range(s.domains) if i % 10 not in (0, 5)]  # no catch-all of any kind

    def mailbox(r: random.Random) -> str:
        j = r.randrange(s.mailboxes)
        return f"<user{j}@d{j % s.domains}{dom}>"

    def extension(r: random.Random) -> str:
        j = r.randrange(s.mailboxes)
        return f"<user{j}+tag{r.randrange(1000)}@d{j % s.domains}{dom}>"

    def unknown(r: random.Random) -> str:
        return f"<nobody{r.randrange(10**6)}@d{r.choice(plain)}{dom}>"

    def catch_all(r: random.Random) -> str:
        return f"<someone{r.randrange(10**6)}@d{10 * r.randrange(s.forward_catch_alls)}{dom}>"

    def forward(r: random.Random) -> str:
        k = r.randrange(s.forwards_outside + s.forwards_own)
        if k < s.forwards_outside:
            return f"<fwd{k}@d{k % s.domains}{dom}>"
        k -= s.forwards_outside
        return f"<alias{k}@d{k % s.domains}{dom}>"

    def relay_denied(r: random.Random) -> str:
        n = r.randrange(10**6)
        return f"<someone{n}@foreign{n % 5000}.example.org>"

    accepted = (250, "2.1.5")
    return {
        "mailbox": (mailbox, accepted),
        "extension": (extension, accepted),
        "unknown": (unknown, (550, "5.1.1")),
        "catch-all": (catch_all, accepted),
        "forward": (forward, accepted),
        "relay-denied": (relay_denied, (554, "5.7.1")),
    }


Number = TypeVar("Number", int, float)


def percentile(ordered: Sequence[Number], q: float) -> Number:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_stats(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "n": len(ordered),
        "mean_us": statistics.fmean(ordered) / 1000,
        "p50_us": percentile(ordered, 50) / 1000,
        "p99_us": percentile(ordered, 99) / 1000,
        "p99_9_us": percentile(ordered, 99.9) / 1000,
        "max_us": ordered[-1] / 1000,
    }


def measure_decisions(data: RoutingData, scale: Scale, seed: int) -> dict[str, dict[str, float]]:
    classes = recipient_classes(scale)
    names = list(classes)
    rng = random.Random(seed)
    draws = [(name, classes[name][0](rng)) for name in rng.choices(names, k=scale.decisions)]

    warm = random.Random(seed + 1)
    for name in warm.choices(names, k=WARMUP_DECISIONS):
        decide_recipient(data, POLICY, classes[name][0](warm), CLIENT, SENDER)

    samples: dict[str, list[int]] = {name: [] for name in names}
    wrong: dict[str, list[str]] = {}
    clock = time.perf_counter_ns
    for name, rcpt in draws:
        started = clock()
        decision = decide_recipient(data, POLICY, rcpt, CLIENT, SENDER, False, 0)
        elapsed = clock() - started
        samples[name].append(elapsed)
        reply = decision.reply
        if (reply.code, reply.enhanced) != classes[name][1]:
            wrong.setdefault(name, []).append(f"{rcpt}: {reply.line()}")
    if wrong:
        lines = [f"  {name}: {len(w)} wrong, e.g. {w[0]}" for name, w in wrong.items()]
        raise SystemExit(
            "unexpected replies, the benchmark measures the wrong paths:\n" + "\n".join(lines)
        )

    stats = {name: latency_stats(samples[name]) for name in names}
    stats["overall"] = latency_stats([t for name in names for t in samples[name]])
    return stats


# -- edit-to-effect --------------------------------------------------------------


async def measure_edits(dsn: str, scale: Scale, cache_path: Path, seed: int) -> dict[str, Any]:
    rng = random.Random(seed + 2)
    token = f"{os.getpid()}t{time.time_ns()}"
    holder = SnapshotHolder(dsn, cache_path=cache_path)
    started = time.perf_counter()
    await holder.start()
    start_s = time.perf_counter() - started
    if holder.status().source != "database":
        raise SystemExit(f"the holder did not load from the database: {holder.status()}")
    latencies: list[float] = []
    commits: list[float] = []
    timeouts = 0
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(EDITS):
            # Edits arrive at random moments, not back to back, so that some
            # meet the holder's debounced cache writes as they would in service.
            await asyncio.sleep(rng.uniform(0, 0.1))
            key = f"edit{n}-{token}@d{rng.randrange(scale.domains)}.bench.example"
            started = time.perf_counter()
            await conn.execute(
                "INSERT INTO mailbox (email, password, node) VALUES ($1, '{CRYPT}!', 'maila')",
                key,
            )
            commits.append(time.perf_counter() - started)
            while True:
                current = holder.current
                if current is not None and key in current.mailboxes:
                    latencies.append(time.perf_counter() - started)
                    break
                if time.perf_counter() - started > EDIT_TIMEOUT:
                    timeouts += 1
                    break
                await asyncio.sleep(0.005)
    finally:
        await conn.close()
        await holder.stop()
    ordered = sorted(latencies)
    return {
        "holder_start_s": start_s,
        "edits": EDITS,
        "timeouts": timeouts,
        "p50_s": percentile(ordered, 50) if ordered else None,
        "p99_s": percentile(ordered, 99) if ordered else None,
        "max_s": ordered[-1] if ordered else None,
        "insert_commit_p50_s": statistics.median(commits),
        "latencies_s": latencies,
    }


# -- report ----------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def render(results: dict[str, Any]) -> str:
    m, scale = results["machine"], results["scale"]
    loads, cache = results["pg_load_s"], results["cache"]
    mem_pg, mem_cache = results["memory"]["pg"], results["memory"]["cache"]
    out = [
        f"machine:  nproc {m['nproc']}, {m['cpu_model']}, {m['memory_gib']} GiB RAM",
        f"          {m['python']}; PostgreSQL {m['postgresql']} "
        f"({m['postgresql_server']}, shared_buffers {m['postgresql_shared_buffers']})",
        f"data set: {scale['domains']:,} domains, {scale['mailboxes']:,} mailboxes, "
        f"{scale['forwards']:,} forwards, {scale['relays']:,} relays, "
        f"{scale['domains']:,} transports (built in {results['build_s']:.1f} s)",
        "",
        f"{'measurement':<44}{'result':>14}   {'target':<12}",
        "-" * 78,
    ]

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else _verdict(ok)
        out.append(f"{name:<44}{value:>14}   {target:<12}{verdict}")

    pg_median = statistics.median(loads)
    row(
        "PG snapshot load, median of 3",
        f"{pg_median:.2f} s",
        f"< {TARGET_PG_LOAD_S:g} s",
        pg_median < TARGET_PG_LOAD_S,
    )
    row("  runs: " + ", ".join(f"{t:.2f}" for t in loads) + " s", "")
    row("disk cache encode, median of 3", f"{statistics.median(cache['encode_s']):.2f} s")
    row("disk cache write + fsync, median of 3", f"{statistics.median(cache['write_s']):.2f} s")
    row("disk cache file size", f"{cache['file_bytes'] / MB:.0f} MB")
    cache_median = statistics.median(cache["load_s"])
    row(
        "disk cache load (warm), median of 3",
        f"{cache_median:.2f} s",
        f"< {TARGET_CACHE_LOAD_S:g} s",
        cache_median < TARGET_CACHE_LOAD_S,
    )
    rss = mem_pg["rss_after"] / MB
    row(
        "RSS after PG load (fresh process)",
        f"{rss:.0f} MB",
        f"< {TARGET_RSS_MB:g} MB",
        rss < TARGET_RSS_MB,
    )
    row("  of which the snapshot (RSS delta)", f"{mem_pg['rss_delta'] / MB:.0f} MB")
    row("  snapshot objects (sys.getsizeof)", f"{mem_pg['object_bytes'] / MB:.0f} MB")
    row("  peak RSS during the load (VmHWM)", f"{mem_pg['rss_peak'] / MB:.0f} MB")
    row(
        "RSS after cache load (fresh process)",
        f"{mem_cache['rss_after'] / MB:.0f} MB",
        f"< {TARGET_RSS_MB:g} MB",
        mem_cache["rss_after"] / MB < TARGET_RSS_MB,
    )
    row("  of which the snapshot (RSS delta)", f"{mem_cache['rss_delta'] / MB:.0f} MB")
    row("  snapshot objects (sys.getsizeof)", f"{mem_cache['object_bytes'] / MB:.0f} MB")
    row("RSS of this process after 3 PG loads", f"{results['memory']['bench_rss'] / MB:.0f} MB")

    edits = results["edits"]
    row("holder start (full load) on this database", f"{edits['holder_start_s']:.2f} s")
    if edits["p99_s"] is None:
        row("edit in force, p99", "none took", f"< {TARGET_EDIT_P99_S:g} s", False)
    else:
        row("edit in force, p50", f"{edits['p50_s'] * 1000:.0f} ms")
        row(
            "edit in force, p99",
            f"{edits['p99_s'] * 1000:.0f} ms",
            f"< {TARGET_EDIT_P99_S:g} s",
            edits["p99_s"] < TARGET_EDIT_P99_S and edits["timeouts"] == 0,
        )
        row("edit in force, max", f"{edits['max_s'] * 1000:.0f} ms")
        row("  INSERT round trip + commit, p50", f"{edits['insert_commit_p50_s'] * 1000:.1f} ms")
    if edits["timeouts"]:
        row(f"  edits not in force after {EDIT_TIMEOUT:g} s", f"{edits['timeouts']} of {EDITS}")

    decisions = results["decisions"]
    out += [
        "",
        f"decide_recipient latency, µs ({scale['decisions']:,} recipients, one process; "
        f"targets p50 < {TARGET_DECISION_P50_US:g}, p99 < {TARGET_DECISION_P99_US:g})",
        f"{'class':<14}{'n':>8}{'mean':>9}{'p50':>9}{'p99':>9}{'p99.9':>9}{'max':>10}   verdict",
        "-" * 78,
    ]
    for name, st in decisions.items():
        ok = st["p50_us"] < TARGET_DECISION_P50_US and st["p99_us"] < TARGET_DECISION_P99_US
        out.append(
            f"{name:<14}{st['n']:>8,}{st['mean_us']:>9.1f}{st['p50_us']:>9.1f}"
            f"{st['p99_us']:>9.1f}{st['p99_9_us']:>9.1f}{st['max_us']:>10.1f}   {_verdict(ok)}"
        )
    return "\n".join(out)


# -- main --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="mxgate-bench-routing-"))
    pg: EmbeddedPostgres | None = None
    try:
        dsn: str = args.dsn
        if dsn is None:
            pg = EmbeddedPostgres(workdir / "pgdata")
            admin_dsn = pg.start()
            asyncio.run(ensure_database(admin_dsn, BENCH_DATABASE))
            dsn = pg.dsn(BENCH_DATABASE)
        results: dict[str, Any] = {
            "machine": asyncio.run(machine_info(dsn, embedded=pg is not None)),
            "scale": asdict(scale),
            "seed": args.seed,
        }
        print("building the data set ...", flush=True)
        results["build_s"] = asyncio.run(build_dataset(dsn, scale, args.reset))

        print("loading from PostgreSQL ...", flush=True)
        data, results["pg_load_s"] = asyncio.run(measure_pg_loads(dsn, scale))
        freeze_long_lived()  # what SnapshotHolder does after each full load
        gc.collect()
        bench_rss = proc_status_bytes("VmRSS")

        print("disk cache ...", flush=True)
        cache_file = workdir / "snapshot.cache"
        results["cache"] = measure_cache(data, cache_file)

        print("memory (fresh processes) ...", flush=True)
        results["memory"] = {
            "pg": run_memory_probe("pg", dsn, cache_file),
            "cache": run_memory_probe("cache", dsn, cache_file),
            "bench_rss": bench_rss,
        }

        print(f"{scale.decisions:,} decisions ...", flush=True)
        results["decisions"] = measure_decisions(data, scale, args.seed)
        del data
        gc.collect()

        print(f"{EDITS} edits against a running SnapshotHolder ...", flush=True)
        holder_cache = workdir / "holder" / "snapshot"
        results["edits"] = asyncio.run(measure_edits(dsn, scale, holder_cache, args.seed))
        return results
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows and decisions")
    parser.add_argument("--dsn", help="use this (empty) database instead of an embedded server")
    parser.add_argument("--reset", action="store_true", help="with --dsn: truncate the tables")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--seed", type=int, default=1, help="seed of the recipient draws")
    parser.add_argument("--memory-probe", choices=("pg", "cache"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.dsn, args.cache_file)))
        return
    if args.reset and not args.dsn:
        parser.error("--reset only applies to --dsn")

    results = run(args)
    print()
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
