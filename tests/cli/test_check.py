"""``mxgate check`` against a real database with a crafted bad data set."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.directory.admin import prepare_example_database

runner = CliRunner()

# Besides the tutorial's example (whose other.example.com has a relay
# catch-all but no transport): one row or two for each kind of finding.
BAD_ROWS = """
INSERT INTO domain (domain, node) VALUES ('bad.example', 'maila'), ('BAD.example', 'x');
INSERT INTO transport (domain, transport, node) VALUES
    ('bad.example', 'frob:[192.0.2.1]', ''),
    ('server1.example.com', 'lmtp:unix:/run/lmtp', 'maila');
INSERT INTO mailbox (email, password, node) VALUES
    ('Mixed@server1.example.com', 'x', 'maila'),
    ('mixed@server1.example.com', 'x', 'maila'),
    ('lost@nowhere.example', 'x', 'maila');
INSERT INTO relay (source, node) VALUES ('x@nowhere.example', 'maila');
INSERT INTO forward (source, destination) VALUES
    ('loop1@server1.example.com', 'loop2@server1.example.com'),
    ('loop2@server1.example.com', 'loop1@server1.example.com'),
    ('dead@bad.example', 'ghost@bad.example'),
    ('empty@server1.example.com', ''),
    ('self@server1.example.com', 'self@server1.example.com'),
    ('@nowhere.example', 'a@b.example');
"""


async def _prepare(dsn: str, extra: str) -> None:
    await prepare_example_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(extra)
    finally:
        await conn.close()


def _env(dsn: str, tmp_path: Path) -> dict[str, str]:
    return {"MXGATE_DATABASE_URL": dsn, "MXGATE_STATE_DIR": str(tmp_path / "state")}


def test_check_finds_each_kind_and_fails(database_url: str, tmp_path: Path) -> None:
    asyncio.run(_prepare(database_url, BAD_ROWS))
    result = runner.invoke(app, ["check", "--json"], env=_env(database_url, tmp_path))
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert doc["role"] == "gateway"
    found = {(f["severity"], f["kind"], f["key"]) for f in doc["findings"]}
    for expected in [
        ("error", "forward-loop", "loop1@server1.example.com"),
        ("error", "dead-end", "dead@bad.example"),
        ("error", "no-transport", "other.example.com"),
        ("error", "bad-transport", "bad.example"),
        ("warning", "outside-domains", "x@nowhere.example"),
        ("warning", "outside-domains", "@nowhere.example"),
        ("warning", "outside-domains", "lost@nowhere.example"),
        ("warning", "case-variant", "mixed@server1.example.com"),
        ("warning", "case-variant", "bad.example"),
        ("warning", "empty-destination", "empty@server1.example.com"),
        ("warning", "forward-to-itself", "self@server1.example.com"),
        ("info", "catch-all-with-mailboxes", "@server1.example.com"),
    ]:
        assert expected in found
    assert doc["summary"]["error"] == sum(f["severity"] == "error" for f in doc["findings"])
    assert set(doc["findings"][0]) == {"severity", "kind", "table", "key", "message"}


def test_check_text_is_grouped_by_severity(database_url: str, tmp_path: Path) -> None:
    asyncio.run(_prepare(database_url, BAD_ROWS))
    result = runner.invoke(app, ["check"], env=_env(database_url, tmp_path))
    assert result.exit_code == 1
    out = result.stdout
    assert out.index("ERRORS (") < out.index("WARNINGS (") < out.index("INFOS (")
    assert "[forward-loop] mail forwarding loop:" in out


def test_check_passes_on_consistent_data(database_url: str, tmp_path: Path) -> None:
    # The example's one error: other.example.com's relay catch-all has no route.
    extra = "INSERT INTO transport (domain, transport, node) VALUES"
    extra += " ('other.example.com', 'smtp:[192.0.2.1]', '')"
    asyncio.run(_prepare(database_url, extra))
    result = runner.invoke(app, ["check"], env=_env(database_url, tmp_path))
    assert result.exit_code == 0, result.output
    assert "0 error(s)" in result.stdout


def test_check_names_a_transport_row_that_sends_mail_back_to_this_gateway(
    database_url: str, tmp_path: Path
) -> None:
    """other.example.com's row points at the address and port the gateway
    listens on (``listen``): an error, before any mail is deferred for it."""
    extra = "INSERT INTO transport (domain, transport, node) VALUES"
    extra += " ('other.example.com', 'smtp:[127.0.0.1]:2599', '')"
    asyncio.run(_prepare(database_url, extra))
    env = {**_env(database_url, tmp_path), "MXGATE_LISTEN": "127.0.0.1:2599"}
    result = runner.invoke(app, ["check", "--json"], env=env)
    assert result.exit_code == 1, result.output
    [found] = [
        f for f in json.loads(result.stdout)["findings"] if f["kind"] == "transport-to-myself"
    ]
    assert found["key"] == "other.example.com" and "is this gateway" in found["message"]
    # Listening elsewhere, the same row is a next hop like any other.
    env["MXGATE_LISTEN"] = "127.0.0.1:2598"
    result = runner.invoke(app, ["check"], env=env)
    assert result.exit_code == 0, result.output
