"""``mxgate explain`` and ``mxgate query`` against a real database with the tutorial's data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.directory.admin import prepare_example_database

runner = CliRunner()


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    asyncio.run(prepare_example_database(database_url))
    return {
        "MXGATE_DATABASE_URL": database_url,
        "MXGATE_STATE_DIR": str(tmp_path / "state"),
        "MXGATE_MYHOSTNAME": "mx.example.net",
        "MXGATE_POSTMASTER": "hostmaster@example.net",
    }


def run(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_explain_json_has_the_documented_shape(env: dict[str, str]) -> None:
    code, out = run(env, "explain", "--json", "james+news@server1.example.com")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["reply"] == {"code": 250, "enhanced": "2.1.5", "text": "Ok"}
    assert doc["deliveries"] == [
        {
            "recipient": "james+news@server1.example.com",
            "original_recipient": "james+news@server1.example.com",
            "transport": "smtp",
            "nexthop": "[127.0.0.1]:2526",
            "mx_lookup": False,
        }
    ]
    assert doc["bounces"] == [] and doc["deferred"] == []
    assert doc["snapshot"] == "database"


def test_explain_relay_denied_from_the_internet_but_not_from_mynetworks(
    env: dict[str, str],
) -> None:
    _code, out = run(env, "explain", "--json", "someone@gmail.com")
    assert json.loads(out)["reply"]["code"] == 554
    _code, out = run(env, "explain", "--json", "--client", "127.0.0.1", "someone@gmail.com")
    doc = json.loads(out)
    assert doc["reply"]["code"] == 250
    assert doc["deliveries"][0]["mx_lookup"] is True
    assert doc["deliveries"][0]["nexthop"] == "gmail.com"


def test_explain_text_names_the_matching_row(env: dict[str, str]) -> None:
    code, out = run(env, "explain", "nobody@server1.example.com")
    assert code == 0
    assert out.splitlines()[1].startswith("250 2.1.5")
    assert "@server1.example.com" in out and "james@example.com" in out


def test_explain_shows_the_expansion_tree_and_the_trace(env: dict[str, str]) -> None:
    """The SMTP session decides without them; explain asks for both."""
    code, out = run(env, "explain", "nobody@server1.example.com")
    assert code == 0
    assert "expansion:" in out and "trace:" in out
    assert "forward @server1.example.com (catch-all) -> james@example.com" in out
    _code, out = run(env, "explain", "--json", "nobody@server1.example.com")
    trace = json.loads(out)["trace"]
    assert trace[-1] == "reply: 250 2.1.5 Ok"
    assert any("catch-all" in line for line in trace)


def test_explain_uses_the_disk_cache_when_the_database_is_gone(
    env: dict[str, str], tmp_path: Path
) -> None:
    from mxgate.directory.cache import CacheFile, encode
    from mxgate.directory.loader import load_snapshot

    data = asyncio.run(load_snapshot(env["MXGATE_DATABASE_URL"]))
    state = Path(env["MXGATE_STATE_DIR"])
    state.mkdir()
    assert CacheFile(state / "snapshot.cache").write(encode(data, 0.0), 1)
    down = dict(env, MXGATE_DATABASE_URL="postgresql://nobody@127.0.0.1:1/mail")
    _code, out = run(down, "explain", "--json", "david@server1.example.com")
    doc = json.loads(out)
    assert doc["reply"]["code"] == 250
    assert doc["snapshot"].startswith("disk cache")


def test_explain_without_any_snapshot_is_451(tmp_path: Path) -> None:
    env = {
        "MXGATE_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/mail",
        "MXGATE_STATE_DIR": str(tmp_path),
    }
    _code, out = run(env, "explain", "--json", "james@server1.example.com")
    doc = json.loads(out)
    assert (doc["reply"]["code"], doc["reply"]["enhanced"]) == (451, "4.3.0")


@pytest.mark.parametrize(
    ("map_name", "key", "answer"),
    [
        ("transport", "server1.example.com", "smtp:[127.0.0.1]:2526"),
        ("relay_domains", "server1.example.com", "server1.example.com"),
        # The tutorial's query has no WHERE clause: every domain matched.
        ("relay_domains", "gmail.com", None),
        ("relay_recipients", "david@server1.example.com", "OK"),
        ("relay_recipients", "anyone@other.example.com", "OK"),
        ("virtual_email2email", "james@server1.example.com", "james@server1.example.com"),
        ("virtual_forward", "someone@server1.example.com", "james@example.com"),
        ("virtual_forward", "someone@other.example.com", None),
    ],
)
def test_query_answers_like_postmap(
    env: dict[str, str], map_name: str, key: str, answer: str | None
) -> None:
    code, out = run(env, "query", map_name, key)
    if answer is None:
        assert (code, out.strip()) == (1, "")
    else:
        assert (code, out.strip()) == (0, answer)


def test_query_unknown_map_is_a_usage_error(env: dict[str, str]) -> None:
    code, out = run(env, "query", "aliases", "x")
    assert code == 2 and "unknown map" in out
