"""``mxgate export`` and ``mxgate import`` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.directory.admin import prepare_example_database
from mxgate.directory.migrate import migrate
from tests.directory.helpers import TUTORIAL_DATA, TUTORIAL_DDL
from tests.pg import PgServer

runner = CliRunner()

INJECTION = "x'); DROP TABLE mailbox; --"

# Besides the tutorial's example rows: several forward rows per source, case
# variants, NULLs, node rows, and values that would break naive SQL or text.
EXTRA: list[tuple[str, list[Any]]] = [
    ("domain", ["Third.example.net", None, None]),
    ("forward", ["sales@server1.example.com", "a@example.org", None]),
    ("forward", ["sales@server1.example.com", "b@example.org, c@example.org", "two"]),
    ("forward", ["Sales@server1.example.com", "", INJECTION]),
    ("mailbox", ["o'brien@third.example.net", "{PLAIN}a'b\\c$1%s", None, "x'y", "é 😀\nl\tt"]),
    ("transport", ["server1.example.com", "lmtp:unix:/run/lmtp", "maila", None]),
    ("transport", ["*", "", "", "empty"]),
]


def inserts(rows: list[tuple[str, list[Any]]]) -> list[tuple[str, list[Any]]]:
    """Parameterised INSERTs of whole rows (columns in table order)."""
    return [
        (f"INSERT INTO {table} VALUES ({', '.join(f'${i + 1}' for i in range(len(row)))})", row)
        for table, row in rows
    ]


async def _rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table in ("domain", "forward", "relay", "mailbox", "transport"):
            records = await conn.fetch(f"SELECT * FROM {table}")
            out[table] = sorted((tuple(r) for r in records), key=repr)
        out["change log"] = [(await conn.fetchval("SELECT count(*) FROM mxgate_change_log"),)]
        return out
    finally:
        await conn.close()


def rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the five tables, and the size of the change log."""
    return asyncio.run(_rows(dsn))


def table_rows(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    found = rows(dsn)
    del found["change log"]
    return found


async def _execute(dsn: str, statements: list[tuple[str, list[Any]]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for sql, args in statements:
            await conn.execute(sql, *args)
    finally:
        await conn.close()


def execute(dsn: str, sql: str, *args: Any) -> None:
    statement: list[tuple[str, list[Any]]] = [(sql, list(args))]
    asyncio.run(_execute(dsn, statement))


@pytest.fixture
def source_db(database_url: str) -> str:
    asyncio.run(prepare_example_database(database_url))
    asyncio.run(_execute(database_url, inserts(EXTRA)))
    return database_url


@pytest.fixture
def empty_db(pg_server: PgServer) -> Iterator[str]:
    dsn = pg_server.create_database()
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        pg_server.drop_database(dsn)


def run(dsn: str, tmp_path: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    env = {"MXGATE_DATABASE_URL": dsn, "MXGATE_STATE_DIR": str(tmp_path / "state")}
    result = runner.invoke(app, list(args), env=env, input=stdin)
    return result.exit_code, result.stdout, result.stderr


def export(dsn: str, tmp_path: Path, fmt: str = "yaml") -> Path:
    path = tmp_path / f"data.{fmt}"
    code, _out, err = run(dsn, tmp_path, "export", "--format", fmt, "--output", str(path))
    assert code == 0, err
    return path


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_into_an_empty_database_gives_identical_rows(
    source_db: str, empty_db: str, tmp_path: Path, fmt: str
) -> None:
    path = export(source_db, tmp_path, fmt)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # password hashes inside
    code, out, err = run(empty_db, tmp_path, "import", str(path))
    assert code == 0, err
    assert "applied 14 row changes in one transaction" in out
    assert table_rows(empty_db) == table_rows(source_db)
    # A second export of the copy is the same text.
    again = tmp_path / "again"
    again.mkdir()
    assert export(empty_db, again, fmt).read_text() == path.read_text()


def test_export_to_stdout_and_import_from_stdin(
    source_db: str, empty_db: str, tmp_path: Path
) -> None:
    code, out, err = run(source_db, tmp_path, "export", "--format", "json")
    assert code == 0 and "exported domain 3, forward 4" in err
    doc = json.loads(out)
    assert doc["format"] == "mxgate-data" and doc["version"] == 1
    assert {"email": "o'brien@third.example.net", "password": "{PLAIN}a'b\\c$1%s"}.items() <= (
        doc["mailbox"][1].items()
    )
    code, _out, err = run(empty_db, tmp_path, "import", "-", stdin=out)
    assert code == 0, err
    assert table_rows(empty_db) == table_rows(source_db)


def test_injection_strings_are_stored_literally(empty_db: str, tmp_path: Path) -> None:
    doc = {
        "format": "mxgate-data",
        "version": 1,
        "domain": [
            {"domain": "a.example", "node": "'; DROP TABLE domain; --", "comment": INJECTION}
        ],
        "mailbox": [
            {"email": "x@a.example", "password": "$1 %s \\' \"", "node": "n", "comment": "\\N\t"}
        ],
    }
    path = tmp_path / "nasty.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, _out, err = run(empty_db, tmp_path, "import", str(path))
    assert code == 0, err
    found = table_rows(empty_db)
    assert found["domain"] == [("a.example", "'; DROP TABLE domain; --", INJECTION)]
    assert found["mailbox"] == [("x@a.example", "$1 %s \\' \"", 10485760, "n", "\\N\t")]


def test_dry_run_changes_nothing_and_shows_the_diff(
    source_db: str, empty_db: str, tmp_path: Path
) -> None:
    path = export(source_db, tmp_path)
    before = rows(empty_db)
    code, out, err = run(empty_db, tmp_path, "import", "--dry-run", str(path))
    assert code == 0, err
    assert "mailbox    +2 added  ~0 changed  -0 removed  (0 unchanged, 0 kept)" in out
    assert "  + forward sales@server1.example.com -> a@example.org" in out
    assert out.rstrip().endswith("dry run: nothing was written")
    code, out, err = run(empty_db, tmp_path, "import", "--dry-run", "--json", str(path))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["dry_run"] is True and doc["applied"] is False and doc["writes"] == 14
    assert doc["tables"]["transport"]["added"] == 3
    assert rows(empty_db) == before  # not even a change-log entry


def test_changes_and_kept_rows_without_replace(source_db: str, tmp_path: Path) -> None:
    doc = {
        "format": "mxgate-data",
        "version": 1,
        "mailbox": [
            {
                "email": "james@server1.example.com",
                "password": "{SHA512-CRYPT}new",
                "quota": 1,
                "node": "maila",
                "comment": "example mailbox",
            },
            {"email": "new@other.example.com", "password": "p", "node": "maila"},
        ],
        "forward": [{"source": "x@third.example.net", "destination": "y@example.org"}],
    }
    path = tmp_path / "change.json"
    path.write_text(json.dumps(doc))
    code, out, err = run(source_db, tmp_path, "import", str(path))
    assert code == 0, err
    assert "~ mailbox james@server1.example.com: password changed, quota 10485760 -> 1" in out
    assert "{SHA512-CRYPT}new" not in out
    assert "(0 unchanged, 1 kept)" in out  # the other mailbox stays
    found = table_rows(source_db)
    assert ("james@server1.example.com", "{SHA512-CRYPT}new", 1, "maila", "example mailbox") in (
        found["mailbox"]
    )
    assert len(found["mailbox"]) == 3 and len(found["domain"]) == 3


def test_replace_removes_the_rows_the_file_lacks(
    source_db: str, empty_db: str, tmp_path: Path
) -> None:
    execute(empty_db, "INSERT INTO domain (domain) VALUES ('extra.example')")
    execute(empty_db, "INSERT INTO relay VALUES ('x@extra.example', 'n', NULL)")
    path = export(source_db, tmp_path)
    code, out, err = run(empty_db, tmp_path, "import", str(path))
    assert code == 0, err
    assert ("extra.example", None, None) in table_rows(empty_db)["domain"]
    code, out, err = run(empty_db, tmp_path, "import", "--replace", str(path))
    assert code == 0, err
    assert "  - relay x@extra.example" in out and "  - domain extra.example" in out
    assert table_rows(empty_db) == table_rows(source_db)


def test_replace_needs_every_table(source_db: str, tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("format: mxgate-data\nversion: 1\ndomain: []\n")
    before = rows(source_db)
    code, _out, err = run(source_db, tmp_path, "import", "--replace", str(path))
    assert code == 1
    assert "table 'forward' is missing: --replace needs every table" in err
    assert rows(source_db) == before


def test_a_bad_row_anywhere_writes_nothing(source_db: str, empty_db: str, tmp_path: Path) -> None:
    path = export(source_db, tmp_path)
    text = path.read_text().replace('"domain": "*"', '"domain": "not a domain"')
    path.write_text(text)
    before = rows(empty_db)
    code, out, err = run(empty_db, tmp_path, "import", str(path))
    assert code == 1, out
    assert "refused, nothing was written (1 problems)" in err
    assert "transport row 1 (domain 'not a domain'): domain 'not a domain': not '*'" in err
    assert rows(empty_db) == before


def test_a_source_outside_our_domains_is_refused(source_db: str, tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(
        "format: mxgate-data\nversion: 1\n"
        "relay:\n- {source: x@third.example.net, node: n}\n- {source: y@nowhere.example, node: n}\n"
    )
    before = rows(source_db)
    code, _out, err = run(source_db, tmp_path, "import", str(path))
    assert code == 1
    # third.example.net is in the database (as Third.example.net): fine.
    assert "relay row 2: source 'y@nowhere.example': the domain 'nowhere.example'" in err
    assert "x@third" not in err
    assert rows(source_db) == before


def test_a_database_failure_midway_rolls_everything_back(
    source_db: str, empty_db: str, tmp_path: Path
) -> None:
    """domain, forward, relay and mailbox are written before transport fails."""
    path = export(source_db, tmp_path)
    execute(
        empty_db,
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'refused by test'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON transport FOR EACH ROW EXECUTE FUNCTION refuse();
        """,
    )
    before = rows(empty_db)
    code, _out, err = run(empty_db, tmp_path, "import", str(path))
    assert code == 1
    assert "refused by test" in err and "nothing was written" in err
    assert rows(empty_db) == before


def test_import_needs_a_migrated_schema(database_url: str, tmp_path: Path) -> None:
    execute(database_url, TUTORIAL_DDL)
    path = tmp_path / "d.yaml"
    path.write_text("format: mxgate-data\nversion: 1\ndomain: [{domain: a.example}]\n")
    code, _out, err = run(database_url, tmp_path, "import", str(path))
    assert code == 1 and "run `mxgate db migrate` first" in err


def test_export_reads_an_unmigrated_tutorial_database(
    database_url: str, empty_db: str, tmp_path: Path
) -> None:
    execute(database_url, TUTORIAL_DDL)
    execute(database_url, TUTORIAL_DATA)
    path = export(database_url, tmp_path)
    code, _out, err = run(empty_db, tmp_path, "import", str(path))
    assert code == 0, err
    assert table_rows(empty_db)["mailbox"] == [
        ("james@server1.example.com", "secret", 10485760, "maila", None)
    ]


def test_unreadable_and_malformed_files(empty_db: str, tmp_path: Path) -> None:
    code, _out, err = run(empty_db, tmp_path, "import", str(tmp_path / "missing.yaml"))
    assert code == 1 and "cannot read" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    code, _out, err = run(empty_db, tmp_path, "import", str(bad))
    assert code == 1 and "not valid JSON" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("format: [\n")
    code, _out, err = run(empty_db, tmp_path, "import", str(bad))
    assert code == 1 and "not valid YAML" in err
    code, _out, err = run(empty_db, tmp_path, "export", "--format", "xml")
    assert code == 2 and "one of yaml, json" in err


def test_a_table_given_twice_is_refused_not_merged(source_db: str, tmp_path: Path) -> None:
    """YAML and JSON readers keep the last of two equal keys: a second
    ``transport:`` section appended to an export would, with --replace,
    remove every transport row of the first. Refused in every reader."""
    before = rows(source_db)
    text = export(source_db, tmp_path).read_text()
    twice = tmp_path / "twice.yaml"
    twice.write_text(text + 'transport:\n- {"domain": "x.example", "transport": "smtp:[h]"}\n')
    code, _out, err = run(source_db, tmp_path, "import", "--replace", str(twice))
    assert code == 1 and "found the key 'transport' twice" in err, err

    data = export(source_db, tmp_path, "json").read_text()
    doubled = tmp_path / "twice.json"
    doubled.write_text(data.replace('"version": 1,', '"version": 1, "version": 1,'))
    code, _out, err = run(source_db, tmp_path, "import", str(doubled))
    assert code == 1 and "key 'version' given twice" in err, err

    # Within one row of the layout mxgate writes (read without PyYAML first).
    row_twice = tmp_path / "row.yaml"
    row_twice.write_text(text.replace('{"domain": ', '{"domain": "a.example", "domain": ', 1))
    code, _out, err = run(source_db, tmp_path, "import", str(row_twice))
    assert code == 1 and "found the key 'domain' twice" in err, err
    assert rows(source_db) == before


def test_input_nested_beyond_reason_is_refused_without_a_crash(
    empty_db: str, tmp_path: Path
) -> None:
    """PyYAML's C composer recurses once per level and dies of a stack
    overflow near 100,000 levels (the process segfaulted); JSON raised
    RecursionError (a traceback)."""
    for name, text in [
        ("flow.yaml", "format: mxgate-data\ndomain: " + "[" * 100_000),
        ("block.yaml", "domain:\n" + "- " * 100_000 + "x\n"),
        ("deep.json", '{"domain": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ]:
        path = tmp_path / name
        path.write_text(text)
        code, _out, err = run(empty_db, tmp_path, "import", str(path))
        assert code == 1 and "refused: nested" in err, (name, err[-300:])
    fine = tmp_path / "fine.yaml"  # what a hand-written data set nests: a few levels
    fine.write_text("format: mxgate-data\nversion: 1\ndomain:\n  - domain: a.example\n")
    code, _out, err = run(empty_db, tmp_path, "import", "--dry-run", str(fine))
    assert code == 0, err


def test_bytes_that_are_not_utf8_on_stdin(empty_db: str, tmp_path: Path) -> None:
    env = {"MXGATE_DATABASE_URL": empty_db, "MXGATE_STATE_DIR": str(tmp_path / "state")}
    result = runner.invoke(app, ["import", "-"], env=env, input=b"format: x\xff\n")
    assert result.exit_code == 1 and "cannot read -" in result.stderr, result.output


def test_export_never_replaces_what_is_not_a_regular_file(source_db: str, tmp_path: Path) -> None:
    """The export is renamed into place: onto a FIFO (or, as root, a device
    such as /dev/full) that replaced the special file. A symbolic link is
    written through, and an empty name is a usage error."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _out, err = run(source_db, tmp_path, "export", "--output", str(fifo))
    assert code == 1 and "not a regular file" in err, err
    assert stat.S_ISFIFO(fifo.lstat().st_mode)

    target = tmp_path / "real.yaml"
    target.write_text("old")
    link = tmp_path / "link.yaml"
    link.symlink_to(target)
    code, _out, err = run(source_db, tmp_path, "export", "--output", str(link))
    assert code == 0, err
    assert link.is_symlink() and target.read_text().startswith("# mxgate data set")

    for empty in ("", str(tmp_path)):
        code, _out, err = run(source_db, tmp_path, "export", "--output", empty)
        assert code == 2 and "give a file name" in err, err
