"""``mxgate domain|mailbox|forward|relay|transport ...`` against a real database.

The tutorial's example data to start from: domains server1.example.com (with a
gateway transport and a catch-all forward to james@example.com) and
other.example.com (a relay catch-all, no transport); mailbox
james@server1.example.com; relay david@server1.example.com.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.directory.admin import prepare_example_database
from mxgate.passwords import verify

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


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr)."""
    result = runner.invoke(app, list(args), env=env, input=stdin)
    return result.exit_code, result.output


def run_json(env: dict[str, str], *args: str) -> Any:
    result = runner.invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def sql(env: dict[str, str], query: str, *args: object) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(env["MXGATE_DATABASE_URL"])
        try:
            return [tuple(r) for r in await conn.fetch(query, *args)]
        finally:
            await conn.close()

    return asyncio.run(go())


S1 = "server1.example.com"


# --- normalisation ------------------------------------------------------------


def test_addresses_are_stored_lower_case(env: dict[str, str]) -> None:
    code, out = run(env, "mailbox", "add", "James2@Server1.Example.COM", stdin="secret\n")
    assert code == 0, out
    assert "added mailbox james2@server1.example.com" in out
    assert sql(env, "SELECT email, node FROM mailbox WHERE email LIKE 'james2%'") == [
        ("james2@server1.example.com", "maila")  # the domain's node, inherited
    ]


def test_internationalised_domains_are_stored_as_a_labels(env: dict[str, str]) -> None:
    code, out = run(env, "domain", "add", "Bücher.Example", "--node", "maila")
    assert code == 0, out
    assert sql(env, "SELECT domain, node FROM domain WHERE domain LIKE 'xn--%'") == [
        ("xn--bcher-kva.example", "maila")
    ]
    assert run(env, "transport", "add", "bücher.example", "smtp:[192.0.2.7]")[0] == 0
    code, out = run(env, "mailbox", "add", "info@BÜCHER.example", stdin="pw\n")
    assert code == 0, out
    assert sql(env, "SELECT email FROM mailbox WHERE email LIKE 'info@%'") == [
        ("info@xn--bcher-kva.example",)
    ]
    assert run_json(env, "domain", "show", "bücher.example")["mailboxes"] == 1
    assert run(env, "domain", "add", "xn--bcher-kva.example")[0] == 1  # the same, as A-label
    for bad in ("xn--zz.example", "xn--a.example"):
        code, out = run(env, "domain", "add", bad)
        assert code == 1 and "is not a valid IDNA A-label" in out, out


def test_forward_destinations_outside_keep_their_local_part(env: dict[str, str]) -> None:
    code, out = run(env, "forward", "add", "Info@" + S1, "Bob.Smith@Example.ORG", "JAMES@" + S1)
    assert code == 0, out
    rows = sql(env, "SELECT source, destination FROM forward WHERE source = $1", "info@" + S1)
    # Outside our domains the local part is someone else's to interpret.
    assert sorted(rows) == [("info@" + S1, "Bob.Smith@example.org"), ("info@" + S1, "james@" + S1)]


# --- the tutorial's rules -----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ("forward", "add", "x@nowhere.example", "a@b.example"),
            ["nowhere.example", "not one of our domains"],
        ),
        (
            ("forward", "add", "@nowhere.example", "a@b.example"),
            ["@nowhere.example", "not one of our domains"],
        ),
        (
            ("relay", "add", "x@nowhere.example", "--node", "n"),
            ["nowhere.example", "not one of our domains"],
        ),
        (
            ("relay", "add", "bob@other.example.com"),
            ["other.example.com", "no transport row for the gateways"],
        ),
        (("relay", "add", "@other.example.com"), ["already exists"]),
        (("mailbox", "add", "x@nowhere.example"), ["nowhere.example", "not one of our domains"]),
        (("mailbox", "add", "JAMES@" + S1), ["mailbox james@" + S1, "already exists"]),
        (("domain", "add", "Server1.Example.com"), ["domain " + S1, "already exists"]),
        (("domain", "add", "bad_domain.example"), ["'bad_domain.example'", "not a domain name"]),
        (("domain", "add", "trailing.example."), ["ends with a dot"]),
        (("mailbox", "add", "nobody"), ["'nobody'", "fully-qualified"]),
        (("mailbox", "add", "a%b@" + S1), ["'%'", "relay access denied"]),
        (("forward", "add", "x@" + S1, "not an address"), ["destination", "not an address"]),
        (("forward", "add", "x@" + S1, "unqualified"), ["'unqualified'", "fully-qualified"]),
        (
            ("forward", "add", "james@" + S1, "a@b.example"),
            ["james@" + S1 + " is a mailbox", "--force"],
        ),
        (("forward", "add", "@" + S1, "james@example.com"), ["already exists"]),
        (("transport", "add", S1, "smtp:[127.0.0.1]:9"), ["already exists", "transport edit"]),
        (
            ("transport", "add", "new.example", "frob:[x]"),
            ["'frob:[x]'", "does not parse", "unsupported transport"],
        ),
        (("transport", "add", "new.example", "smtp:[host"), ["does not parse"]),
        (("domain", "add", "n.example", "--node", "bad node"), ["'bad node'", "node name"]),
        (("mailbox", "edit", "james@" + S1, "--quota", "lots"), ["'lots'", "quota"]),
        (("mailbox", "show", "nobody@" + S1), ["mailbox nobody@" + S1, "does not exist"]),
        (("mailbox", "remove", "nobody@" + S1), ["does not exist"]),
        (("relay", "edit", "nobody@" + S1, "--comment", "x"), ["does not exist"]),
        (("transport", "remove", S1, "--node", "maila"), ["node 'maila'", "does not exist"]),
        (
            ("forward", "remove", "@" + S1, "someone@else.example"),
            ["no row with destination", "james@example.com"],
        ),
        (("domain", "remove", "nowhere.example"), ["domain nowhere.example does not exist"]),
    ],
)
def test_refusals_name_the_value_and_the_rule(
    env: dict[str, str], args: tuple[str, ...], words: list[str]
) -> None:
    code, out = run(env, *args, stdin="secret\n")
    assert code == 1, out
    assert out.startswith("mxgate: ")
    for word in words:
        assert word in out


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert run(env, "mailbox", "edit", "james@" + S1)[0] == 2  # nothing to change
    assert run(env, "forward", "add", "x@" + S1)[0] == 2  # no destination
    assert run(env, "mailbox", "list", "--limit", "0")[0] == 2
    # There is no way to give a password on the command line.
    assert run(env, "mailbox", "add", "x@" + S1, "--password", "secret")[0] == 2


def test_forward_loops_are_refused(env: dict[str, str]) -> None:
    assert run(env, "forward", "add", "loop1@" + S1, "loop2@" + S1)[0] == 0
    code, out = run(env, "forward", "add", "loop2@" + S1, "loop1@" + S1)
    assert code == 1
    assert "loop" in out and f"loop2@{S1} -> loop1@{S1} -> loop2@{S1}" in out
    code, out = run(env, "forward", "add", "loop2@" + S1, "loop1@" + S1, "--force")
    assert code == 1, "--force never stores a loop"
    assert sql(env, "SELECT count(*) FROM forward WHERE source = $1", "loop2@" + S1) == [(0,)]


def test_a_catch_all_loop_is_refused(env: dict[str, str]) -> None:
    assert run(env, "domain", "add", "loop.example")[0] == 0
    # A dead end for now: loop.example has no rows yet.
    assert run(env, "forward", "add", "back@" + S1, "anyone@loop.example")[0] == 1
    assert run(env, "forward", "add", "back@" + S1, "anyone@loop.example", "--force")[0] == 0
    code, out = run(env, "forward", "add", "@loop.example", "back@" + S1)
    assert code == 1 and "loop" in out and "anyone@loop.example" in out


def test_the_expansion_limit_is_refused(env: dict[str, str]) -> None:
    env = dict(env, MXGATE_VIRTUAL_ALIAS_EXPANSION_LIMIT="2")
    code, out = run(env, "forward", "add", "many@" + S1, "a@x.example", "b@x.example", "c@x.ex")
    assert code == 1 and "expansion limit" in out


def test_dead_ends_are_refused_unless_forced(env: dict[str, str]) -> None:
    assert run(env, "domain", "add", "closed.example", "--node", "maila")[0] == 0
    assert run(env, "transport", "add", "closed.example", "smtp:[192.0.2.9]")[0] == 0
    code, out = run(env, "forward", "add", "sales@closed.example", "ghost@closed.example")
    assert code == 1
    assert "dead end" in out and "ghost@closed.example" in out and "--force" in out
    code, out = run(
        env, "forward", "add", "sales@closed.example", "ghost@closed.example", "--force"
    )
    assert code == 0 and "warning: dead end" in out
    # Covered by a catch-all, a target is not a dead end.
    assert run(env, "forward", "add", "sales@" + S1, "ghost@" + S1)[0] == 0


def test_a_forward_keeping_an_address_nothing_takes_is_refused_unless_forced(
    env: dict[str, str],
) -> None:
    assert run(env, "domain", "add", "keep.example", "--node", "maila")[0] == 0
    assert run(env, "transport", "add", "keep.example", "smtp:[192.0.2.9]")[0] == 0
    code, out = run(env, "forward", "add", "z@keep.example", "z@keep.example", "x@y.example")
    assert code == 1
    assert "z@keep.example maps to itself, but no mailbox" in out and "--force" in out
    assert "z@keep.example" not in run(env, "forward", "list")[1]
    code, out = run(
        env, "forward", "add", "z@keep.example", "z@keep.example", "x@y.example", "--force"
    )
    assert code == 0 and "warning: z@keep.example maps to itself" in out
    # A relay catch-all takes it: nothing to say.
    assert run(env, "relay", "add", "@keep.example", "--node", "maila")[0] == 0
    assert run(env, "forward", "add", "w@keep.example", "w@keep.example")[0] == 0


def test_several_destinations_are_one_row_each(env: dict[str, str]) -> None:
    code, out = run(
        env, "forward", "add", "info@" + S1, "a@x.example", "b@y.example", "a@x.example"
    )
    assert code == 0, out
    assert sql(
        env, "SELECT destination FROM forward WHERE source = $1 ORDER BY 1", "info@" + S1
    ) == [
        ("a@x.example",),
        ("b@y.example",),
    ]
    code, out = run(env, "forward", "add", "info@" + S1, "c@z.example", "A@X.example")
    assert code == 1 and "already exists" in out
    assert run(env, "forward", "add", "info@" + S1, "c@z.example")[0] == 0
    doc = run_json(env, "forward", "show", "info@" + S1)
    assert doc["destinations"] == ["a@x.example", "b@y.example", "c@z.example"]
    assert run(env, "forward", "remove", "info@" + S1, "B@Y.example")[0] == 0
    code, out = run(env, "forward", "remove", "info@" + S1)
    assert (code, out.strip()) == (0, f"removed 2 forward row(s) of info@{S1}")
    assert sql(env, "SELECT count(*) FROM forward WHERE source = $1", "info@" + S1) == [(0,)]


def test_relay_needs_a_gateway_transport(env: dict[str, str]) -> None:
    code, out = run(
        env, "transport", "add", "other.example.com", "smtp:[192.0.2.5]", "--node", "maila"
    )
    assert code == 0, out
    assert run(env, "relay", "add", "bob@other.example.com")[0] == 1  # a node row is not enough
    assert run(env, "transport", "add", "other.example.com", "smtp:[192.0.2.5]:25")[0] == 0
    code, out = run(env, "relay", "add", "Bob@Other.Example.com")
    assert code == 0, out
    assert sql(env, "SELECT source, node FROM relay WHERE source LIKE 'bob%'") == [
        ("bob@other.example.com", "maila")
    ]


def test_domain_remove_refuses_then_cascades(env: dict[str, str]) -> None:
    code, out = run(env, "domain", "remove", S1)
    assert code == 1
    assert "1 mailboxes, 1 relays, 1 forwards, 1 transports" in out and "--cascade" in out
    assert sql(env, "SELECT count(*) FROM domain WHERE domain = $1", S1) == [(1,)]
    code, out = run(env, "domain", "remove", S1, "--cascade")
    assert code == 0, out
    assert "1 mailboxes, 1 relays, 1 forwards, 1 transports" in out
    tables = {"domain": "domain", "mailbox": "email", "relay": "source", "forward": "source"}
    for table, column in {**tables, "transport": "domain"}.items():
        assert sql(env, f"SELECT count(*) FROM {table} WHERE {column} LIKE '%server1%'") == [(0,)]
    # The other domain and its rows are untouched.
    assert sql(env, "SELECT count(*) FROM relay") == [(1,)]
    assert run(env, "domain", "remove", "other.example.com")[0] == 1  # still has its relay


def test_case_variants_written_by_other_tools_are_found(env: dict[str, str]) -> None:
    sql(
        env,
        "INSERT INTO mailbox (email, password, node) VALUES ($1, 'x', 'maila')",
        "Mixed@SERVER1.example.com",
    )
    code, out = run(env, "mailbox", "add", "mixed@server1.example.com", stdin="pw\n")
    assert code == 1 and "stored as 'Mixed@SERVER1.example.com'" in out
    assert run_json(env, "mailbox", "show", "MIXED@server1.example.com")["email"] == (
        "Mixed@SERVER1.example.com"
    )
    assert run(env, "mailbox", "remove", "mixed@server1.example.com")[0] == 0
    assert sql(env, "SELECT count(*) FROM mailbox WHERE lower(email) LIKE 'mixed%'") == [(0,)]


# --- SQL injection ------------------------------------------------------------

INJECTIONS = [
    "x'); DROP TABLE mailbox; --",
    "'; DELETE FROM domain WHERE ''='",
    "\\'; TRUNCATE forward; --",
    "$1 $$; DROP TABLE relay; $$",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_in_values_is_stored_literally(env: dict[str, str], payload: str) -> None:
    code, out = run(env, "domain", "add", "inj.example", "--comment", payload)
    assert code == 0, out
    assert sql(env, "SELECT comment FROM domain WHERE domain = 'inj.example'") == [(payload,)]
    assert run(env, "transport", "add", "inj.example", "error:5.1.1 " + payload)[0] == 0
    doc = run_json(env, "transport", "show", "inj.example")
    assert doc["rows"][0]["transport"] == "error:5.1.1 " + payload
    code, _out = run(env, "mailbox", "add", f"{payload}@inj.example", stdin="pw\n")
    assert code == 1
    # Patterns are globs: LIKE characters in them match only themselves.
    assert run_json(env, "domain", "list", "--pattern", payload)["total"] == 0
    assert run_json(env, "domain", "list", "--pattern", "%")["total"] == 0
    for table in ("domain", "mailbox", "relay", "forward", "transport"):
        assert sql(env, f"SELECT count(*) > 0 FROM {table}") == [(True,)]


def test_quoted_and_apostrophe_addresses_are_parameters(env: dict[str, str]) -> None:
    code, out = run(env, "mailbox", "add", "o'brien@" + S1, stdin="pw\n")
    assert code == 0, out
    code, out = run(env, "forward", "add", '"it\'s; drop table forward"@' + S1, "o'brien@" + S1)
    assert code == 0, out
    assert run_json(env, "mailbox", "list", "--pattern", "*'*")["rows"][0]["email"] == (
        "o'brien@" + S1
    )
    assert sql(env, "SELECT source FROM forward WHERE destination = $1", "o'brien@" + S1) == [
        ('"it\'s; drop table forward"@' + S1,)
    ]
    assert run_json(env, "mailbox", "show", "o'brien@" + S1)["forwarded_from"] == [
        '"it\'s; drop table forward"@' + S1
    ]


# --- list, show, edit ---------------------------------------------------------


def _many(env: dict[str, str], n: int) -> None:
    values = ", ".join(
        f"('user{i:02}@{S1}', 'x', '{'maila' if i % 2 else 'mailb'}')" for i in range(n)
    )
    sql(env, f"INSERT INTO mailbox (email, password, node) VALUES {values}")


def test_list_pages_and_filters(env: dict[str, str]) -> None:
    _many(env, 12)
    doc = run_json(env, "mailbox", "list", "--limit", "5")
    assert (doc["table"], doc["total"], doc["offset"], doc["limit"]) == ("mailbox", 13, 0, 5)
    assert [r["email"] for r in doc["rows"]][:2] == ["james@" + S1, "user00@" + S1]
    assert set(doc["rows"][0]) == {"email", "node", "quota", "comment"}  # never the password
    doc = run_json(env, "mailbox", "list", "--limit", "5", "--offset", "10")
    assert [r["email"] for r in doc["rows"]] == [f"user{i:02}@{S1}" for i in (9, 10, 11)]
    code, out = run(env, "mailbox", "list", "--limit", "5")
    assert code == 0 and "... 8 more (next page: --offset 5); 13 in all" in out
    assert run_json(env, "mailbox", "list", "--node", "mailb")["total"] == 6
    assert run_json(env, "mailbox", "list", "--pattern", "USER1*")["total"] == 2
    assert run_json(env, "mailbox", "list", "--pattern", "user0?@*")["total"] == 10
    assert run_json(env, "mailbox", "list", "--domain", "other.example.com")["total"] == 0
    assert run_json(env, "relay", "list", "--domain", S1)["rows"] == [
        {"source": "david@" + S1, "node": "maila", "comment": "example relay address"}
    ]
    assert run_json(env, "forward", "list", "--to", "*@example.com")["total"] == 1
    assert run_json(env, "transport", "list", "--node", "")["total"] == 1
    assert run_json(env, "domain", "list", "--pattern", "other.*")["rows"][0]["node"] == "maila"


def test_list_table_for_people(env: dict[str, str]) -> None:
    code, out = run(env, "transport", "list")
    assert code == 0
    assert "smtp:[127.0.0.1]:2526" in out  # brackets are text, not markup
    assert "server1.example.com" in out


def test_show_domain_counts_its_rows(env: dict[str, str]) -> None:
    doc = run_json(env, "domain", "show", S1)
    assert (doc["mailboxes"], doc["relays"], doc["forwards"]) == (1, 1, 1)
    assert doc["catch_all_forward"] == ["james@example.com"]
    assert doc["gateway_route"] == {"key": S1, "node": "", "transport": "smtp:[127.0.0.1]:2526"}
    assert doc["transports"][0]["transport"] == "smtp:[127.0.0.1]:2526"
    code, out = run(env, "domain", "show", S1)
    assert code == 0 and "mailboxes:" in out


def test_edits(env: dict[str, str]) -> None:
    assert run(env, "mailbox", "edit", "james@" + S1, "--quota", "20M", "--node", "mailb")[0] == 0
    assert sql(env, "SELECT quota, node FROM mailbox WHERE email = $1", "james@" + S1) == [
        (20 * 1024 * 1024, "mailb")
    ]
    assert run(env, "domain", "edit", S1, "--node", "", "--comment", "")[0] == 0
    assert sql(env, "SELECT node, comment FROM domain WHERE domain = $1", S1) == [(None, None)]
    assert run(env, "transport", "edit", S1, "--transport", "lmtp:unix:/run/lmtp")[0] == 0
    doc = run_json(env, "transport", "show", S1)
    assert doc["rows"][0]["means"] == "lmtp to unix:/run/lmtp (UNIX socket)"
    assert run(env, "transport", "edit", S1, "--transport", "nonsense:x")[0] == 1
    assert run(env, "relay", "edit", "david@" + S1, "--node", "mailc")[0] == 0
    assert sql(env, "SELECT node FROM relay WHERE source = $1", "david@" + S1) == [("mailc",)]


def test_password_change(env: dict[str, str]) -> None:
    code, out = run(env, "mailbox", "passwd", "james@" + S1, stdin="new secret\n")
    assert code == 0, out
    [(stored,)] = sql(env, "SELECT password FROM mailbox WHERE email = $1", "james@" + S1)
    assert stored.startswith("{SHA512-CRYPT}$6$") and verify("new secret", stored)
    assert run_json(env, "mailbox", "show", "james@" + S1)["password_scheme"] == "SHA512-CRYPT"
    assert run(env, "mailbox", "passwd", "james@" + S1, stdin="\n")[0] == 1  # empty


def test_removing_a_forward_target_warns_about_dead_ends(env: dict[str, str]) -> None:
    assert run(env, "domain", "add", "closed.example", "--node", "maila")[0] == 0
    assert run(env, "transport", "add", "closed.example", "smtp:[192.0.2.9]")[0] == 0
    assert run(env, "mailbox", "add", "m@closed.example", stdin="pw\n")[0] == 0
    assert run(env, "forward", "add", "f@closed.example", "m@closed.example")[0] == 0
    code, out = run(env, "mailbox", "remove", "m@closed.example")
    assert code == 0
    assert "warning: forwards from f@closed.example point at m@closed.example" in out
    # In a domain with a catch-all the target is still known: no warning.
    assert run(env, "mailbox", "add", "m@" + S1, stdin="pw\n")[0] == 0
    assert run(env, "forward", "add", "f@" + S1, "m@" + S1)[0] == 0
    code, out = run(env, "mailbox", "remove", "m@" + S1)
    assert code == 0 and "warning" not in out


def test_a_stdout_that_cannot_encode_the_text(env: dict[str, str]) -> None:
    """A UTF-8 comment on a terminal or pipe in ASCII: the table shows it
    escaped (it raised UnicodeEncodeError), and export still writes UTF-8,
    the same bytes as --output."""
    code, out = run(env, "domain", "add", "neu.example", "--comment", "für alle")
    assert code == 0, out
    ascii_env = {**os.environ, **env, "PYTHONIOENCODING": "ascii", "COLUMNS": "200"}
    listed = subprocess.run(
        [sys.executable, "-m", "mxgate", "domain", "list"],
        capture_output=True,
        env=ascii_env,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert b"f\\xfcr alle" in listed.stdout
    exported = subprocess.run(
        [sys.executable, "-m", "mxgate", "export"], capture_output=True, env=ascii_env, timeout=60
    )
    assert exported.returncode == 0, exported.stderr
    assert '"comment": "für alle"'.encode() in exported.stdout


def test_a_database_without_the_tables_says_to_migrate(database_url: str, tmp_path: Path) -> None:
    env = {"MXGATE_DATABASE_URL": database_url, "MXGATE_STATE_DIR": str(tmp_path / "state")}
    code, out = run(env, "domain", "list")
    assert code == 1
    assert 'relation "domain" does not exist: the database lacks mxgate\'s tables' in out
    assert "(mxgate db migrate makes them)" in out


def test_control_characters_in_comments(env: dict[str, str]) -> None:
    """Refused from the command line; rows written by other tools are shown
    escaped (ESC reached the terminal raw, a newline forged a row)."""
    code, out = run(env, "domain", "add", "ctl.example", "--comment", "a\x1b[31mred")
    assert code == 1 and "control characters (newlines, tabs, ESC) are refused" in out
    sql(env, "INSERT INTO domain (domain, comment) VALUES ('raw.example', $1)", "x\x1b[2Jy\nz")
    code, out = run(env, "domain", "list")
    assert code == 0 and "\x1b" not in out and "x\\x1b[2Jy\\nz" in out, out
    code, out = run(env, "domain", "show", "raw.example")
    assert code == 0 and "\x1b" not in out and "x\\x1b[2Jy\\nz" in out, out
    code, out = run(env, "domain", "list", "--limit", str(2**63))
    assert code == 2, out


def test_narrow_terminals_fold_keys_rather_than_cut_them() -> None:
    """At 20 columns three xn-- domains were cut to the same "xn--…"."""
    import io

    from rich.console import Console

    from mxgate.cli.manage.output import _table

    table = _table(["domain", "node"])
    keys = ["xn--bcher-kva.example", "xn--mller-kva.example", "xn--caf-dma.example"]
    for key in keys:
        table.add_row(key, "maila")
    out = io.StringIO()
    Console(file=out, width=20, highlight=False).print(table)
    text = out.getvalue()
    assert "…" not in text
    # The first column, its folded lines joined: every key whole.
    column = "".join(line.split("│")[0].strip() for line in text.splitlines()[2:])
    assert column == "".join(keys), text
