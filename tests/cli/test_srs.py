"""``mxgate srs`` and SRS in ``mxgate explain``, against a real database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.directory.admin import prepare_example_database

runner = CliRunner()
SENDER = "alice@example.org"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    asyncio.run(prepare_example_database(database_url))
    return {
        "MXGATE_DATABASE_URL": database_url,
        "MXGATE_STATE_DIR": str(tmp_path / "state"),
        "MXGATE_MYHOSTNAME": "mx.example.net",
        "MXGATE_POSTMASTER": "hostmaster@example.net",
        "MXGATE_SRS_DOMAIN_OVERRIDES": "other.example.com=srs.other.example.com",
    }


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_encode_then_decode(env: dict[str, str]) -> None:
    code, out, err = run(env, "srs", "encode", SENDER)
    assert code == 0, err
    rewritten = out.strip()
    assert rewritten.startswith("SRS0=") and rewritten.endswith("=example.org=alice@mx.example.net")
    code, out, err = run(env, "srs", "decode", rewritten)
    assert (code, out) == (0, f"{SENDER}\n"), err
    code, out, _err = run(env, "srs", "decode", rewritten.upper())
    assert code == 0 and out.lower() == f"{SENDER}\n"
    code, out, _err = run(env, "srs", "encode", SENDER, "--alias-domain", "Other.Example.com")
    assert code == 0 and out.strip().endswith("@srs.other.example.com")
    code, out, _err = run(env, "srs", "decode", out.strip())
    assert (code, out) == (0, f"{SENDER}\n")


def test_decode_says_why_and_fails(env: dict[str, str]) -> None:
    _code, out, _err = run(env, "srs", "encode", SENDER)
    tag, hash_, rest = out.strip().split("=", 2)
    forged = f"{tag}={'AAAA' if hash_ != 'AAAA' else 'BBBB'}={rest}"
    code, out, err = run(env, "srs", "decode", forged)
    assert code == 1 and out == ""
    assert f"mxgate: {forged}: hash does not verify" in err
    code, _out, err = run(env, "srs", "decode", "SRS0=abcd=AA=example.org=alice@elsewhere.example")
    assert code == 1 and "not an SRS address of ours" in err and "mx.example.net" in err
    code, _out, err = run(env, "srs", "decode", "SRS0=abcd=AA@mx.example.net")
    assert code == 1 and "malformed SRS address" in err
    code, _out, err = run(env, "srs", "decode", "not an address")
    assert code == 2


def test_encode_leaves_the_null_sender_and_our_own_addresses(env: dict[str, str]) -> None:
    code, out, err = run(env, "srs", "encode", "<>")
    assert (code, out) == (0, "<>\n") and "null sender" in err
    ours = "SRS0=abcd=AA=example.org=alice@mx.example.net"
    code, out, err = run(env, "srs", "encode", ours)
    assert (code, out) == (0, f"{ours}\n") and "already at our SRS domain" in err


def test_keys_hide_secrets_unless_asked_and_rotation_keeps_old_addresses(
    env: dict[str, str],
) -> None:
    code, out, _err = run(env, "srs", "keys")
    assert code == 0 and "key 1: signing" in out and "(hidden)" in out
    code, out, _err = run(env, "srs", "keys", "--json")
    [key] = json.loads(out)
    assert key["id"] == 1 and key["state"] == "signing" and key["secret"] is None
    _code, before, _err = run(env, "srs", "encode", SENDER)

    code, out, err = run(env, "srs", "rotate", "--delay", "0")
    assert code == 0, err
    assert out.startswith("new SRS key 2 signs from ")
    assert "1 key(s) retired then; they verify until " in out
    code, out, _err = run(env, "srs", "keys", "--json", "--show-secrets")
    old, new = json.loads(out)
    assert new["state"] == "signing" and old["state"] == "verifying only (retired)"
    assert len(new["secret"]) >= 32 and old["secret"] != new["secret"]
    assert old["verifies_until"] is not None

    _code, after, _err = run(env, "srs", "encode", SENDER)
    assert after != before  # the new key signs
    for address in (before.strip(), after.strip()):
        code, out, err = run(env, "srs", "decode", address)
        assert (code, out) == (0, f"{SENDER}\n"), err

    code, _out, err = run(env, "srs", "rotate", "--delay", "soon")
    assert code == 2 and "--delay" in err


def test_explain_shows_the_srs_decision(env: dict[str, str]) -> None:
    code, out, _err = run(
        env, "explain", "--json", "--sender", SENDER, "nobody@server1.example.com"
    )
    assert code == 0
    trace = json.loads(out)["trace"]
    [note] = [line for line in trace if line.startswith("srs: ")]
    assert "james@example.com is outside our domains, reached through a forward" in note
    assert f"sender <{SENDER}> rewritten to <SRS0=" in note and "@mx.example.net>" in note
    code, out, _err = run(env, "explain", "--sender", SENDER, "nobody@server1.example.com")
    assert f"      srs: {note.removeprefix('srs: ')}" in out
    # The null sender (the default) is never rewritten, and the text says so.
    code, out, _err = run(env, "explain", "nobody@server1.example.com")
    assert code == 0 and "rewritten to" not in out and "srs: " in out, out
    # Options as in MAIL FROM: <> is the null sender; a client must be an address.
    code, out, _err = run(env, "explain", "--sender", "<>", "nobody@server1.example.com")
    assert code == 0 and "<<>>" not in out
    code, _out, err = run(env, "explain", "--client", "notanip", "james@server1.example.com")
    assert code == 2 and "--client 'notanip': not an IP address" in err
    code, _out, err = run(env, "explain", "--sender", "bad addr", "james@server1.example.com")
    assert code == 2 and "--sender 'bad addr': not a mail address" in err
    # A mailbox of ours: nothing about SRS.
    _code, out, _err = run(
        env, "explain", "--json", "--sender", SENDER, "james@server1.example.com"
    )
    assert not any(line.startswith("srs: ") for line in json.loads(out)["trace"])

    # The reverse path: a bounce to the rewritten address goes back to the sender.
    _code, rewritten, _err = run(env, "srs", "encode", SENDER)
    code, out, _err = run(env, "explain", "--json", rewritten.strip())
    doc = json.loads(out)
    assert doc["reply"]["code"] == 250
    assert [d["recipient"] for d in doc["deliveries"]] == [SENDER]
    assert any("SRS address verified" in line for line in doc["trace"])
    forged = rewritten.strip().replace("=example.org=", "=example.net=")
    _code, out, _err = run(env, "explain", "--json", forged)
    reply = json.loads(out)["reply"]
    assert (reply["code"], reply["enhanced"]) == (550, "5.1.1")
    assert "invalid SRS address: hash does not verify" in reply["text"]


def test_srs_can_be_switched_off_and_settings_are_checked(env: dict[str, str]) -> None:
    off = {**env, "MXGATE_SRS_ENABLED": "no"}
    code, _out, err = run(off, "srs", "encode", SENDER)
    assert code == 1 and "SRS is off" in err
    code, out, _err = run(off, "explain", "--json", "--sender", SENDER, "x@server1.example.com")
    assert code == 0 and not any(line.startswith("srs: ") for line in json.loads(out)["trace"])
    for name, value in (
        ("MXGATE_SRS_HASH_LENGTH", "3"),
        ("MXGATE_SRS_MAX_AGE", "2000d"),
        ("MXGATE_SRS_DOMAIN", "not a domain"),
        ("MXGATE_SRS_DOMAIN_OVERRIDES", "only.example"),
    ):
        code, _out, err = run({**env, name: value}, "srs", "keys")
        assert code == 2 and name in err, (name, err)


def test_encode_fails_without_a_key(env: dict[str, str]) -> None:
    async def empty() -> None:
        conn = await asyncpg.connect(env["MXGATE_DATABASE_URL"])
        try:
            await conn.execute("DELETE FROM mxgate_srs_key")
        finally:
            await conn.close()

    asyncio.run(empty())
    code, out, err = run(env, "srs", "encode", SENDER)
    assert code == 1 and out == "" and "cannot rewrite: no SRS key that can sign" in err
    code, out, _err = run(env, "srs", "keys")
    assert code == 0 and "no SRS keys" in out


def test_keys_when_they_cannot_be_read_is_an_error(env: dict[str, str], tmp_path: Path) -> None:
    """The database unreachable and no cached copy: it said "no SRS keys (mxgate
    db migrate creates the first one)" and exit 0, which is not what is wrong."""
    closed = {**env, "MXGATE_DATABASE_URL": "postgresql://mx@127.0.0.1:1/mail"}
    closed["MXGATE_STATE_DIR"] = str(tmp_path / "empty-state")
    code, out, err = run(closed, "srs", "keys")
    assert code == 1 and out == ""
    assert "cannot tell the SRS keys: (database unreachable: " in err and "no disk cache)" in err


def test_encode_refuses_an_alias_domain_that_is_not_a_domain(env: dict[str, str]) -> None:
    code, out, err = run(env, "srs", "encode", SENDER, "--alias-domain", "bad dom")
    assert code == 2 and out == "" and "--alias-domain 'bad dom' is not a domain name" in err
