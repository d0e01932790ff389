"""``mxgate export postfix``: the map files, read by the real ``postmap -q``
(Debian's postfix-pgsql) against a real database, answer as ``mxgate
query`` does, over keys that cover every defect of SPEC section 9."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.core.postfix_maps import MAP_FILES
from mxgate.core.query import query
from mxgate.core.snapshot import RoutingData
from mxgate.directory import load_snapshot
from mxgate.directory.admin import prepare_example_database
from tests.pg import PgServer

runner = CliRunner()

EXTRA_ROWS = """
INSERT INTO domain (domain, node) VALUES
    ('closed.example.net', 'maila'), ('both.example.net', NULL);
INSERT INTO mailbox (email, password, node) VALUES
    ('Mixed@server1.example.com', '{CRYPT}!', 'maila'),
    ('alice@closed.example.net', '{CRYPT}!', 'maila');
INSERT INTO forward (source, destination) VALUES
    ('sales@server1.example.com', 'bob@example.org'),
    ('team@server1.example.com', 'a@example.org'),
    ('team@server1.example.com', 'b@example.org, c@example.org'),
    ('UPPER@server1.example.com', 'up@example.org'),
    ('empty@server1.example.com', ''),
    ('dead@closed.example.net', ' , '),
    ('@both.example.net', 'catch@example.org');
INSERT INTO relay (source, node) VALUES
    ('@both.example.net', 'maila'), ('Carol@closed.example.net', 'maila');
INSERT INTO transport (domain, transport, node) VALUES
    ('server1.example.com', 'lmtp:[192.0.2.10]:24', 'maila'),
    ('Other.example.com', 'smtp:[192.0.2.20]', ''),
    ('.example.net', 'smtp:[192.0.2.30]', ''),
    ('*', 'smtp:[192.0.2.40]', 'maila'),
    ('closed.example.net', '  ', ''),
    ('closed.example.net', 'smtp:[192.0.2.50]', 'maila'),
    ('alice@closed.example.net', 'smtp:[192.0.2.60]', '');
"""

KEYS = [
    # mailbox, case variants, plus-addresses (catch-all vs mailbox)
    "james@server1.example.com",
    "JAMES@Server1.Example.COM",
    "james+news@server1.example.com",
    "mixed@server1.example.com",
    "mixed+tag@server1.example.com",
    # catch-all vs a specific forward, several rows, dead rows
    "nobody@server1.example.com",
    "nobody+x@server1.example.com",
    "@server1.example.com",
    "sales@server1.example.com",
    "sales+x@server1.example.com",
    "Sales@Server1.example.com",
    "team@server1.example.com",
    "upper@server1.example.com",
    "empty@server1.example.com",
    "dead@closed.example.net",
    # relays and relay catch-alls
    "david@server1.example.com",
    "david+x@server1.example.com",
    "anyone@other.example.com",
    "@other.example.com",
    "carol@closed.example.net",
    "x@both.example.net",
    "@both.example.net",
    # unknown users and domains; relay_domains without a WHERE clause
    "alice@closed.example.net",
    "bob@closed.example.net",
    "someone@gmail.com",
    "gmail.com",
    "server1.example.com",
    "SERVER1.example.com",
    "sub.server1.example.com",
    "closed.example.net",
    "other.example.com",
    # transport keys: parents, '*', node rows, a blank transport
    ".example.net",
    "example.net",
    "*",
    "postmaster",
    # quoting
    "x'y@server1.example.com",
    "x'; DROP TABLE forward; --@server1.example.com",
    "100%s@server1.example.com",
]

# Postfix asks user+ext@d of every map before user@d (virtual(5)), so here
# the map must not answer with the catch-all, as the single-key `mxgate
# query` does: user@d is known and answers at the next step.
PLUS_GUARDED = {
    "james+news@server1.example.com",
    "mixed+tag@server1.example.com",
    "sales+x@server1.example.com",
    "david+x@server1.example.com",
}

ROLES = {
    "gateway": {},
    "node": {"MXGATE_NODE_NAME": "maila"},
    "node-fallback": {"MXGATE_NODE_NAME": "maila", "MXGATE_NODE_FALLBACK_TO_GATEWAY": "yes"},
}


def _tool(name: str) -> str:
    """The tool's path; skips, or fails when MXGATE_TEST_REQUIRE_TOOLS=1."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        problem = f"{name} is not installed (scripts/install-tools installs it)"
        if os.environ.get("MXGATE_TEST_REQUIRE_TOOLS") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    return path


@pytest.fixture(scope="module")
def postmap(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """postmap, with a config directory of its own (an empty main.cf)."""
    tool = _tool("postmap")
    confdir = tmp_path_factory.mktemp("postfix")
    (confdir / "main.cf").write_text("")
    # postconf -m lists the lookup table types this Postfix can open.
    types = subprocess.run(
        [_tool("postconf"), "-c", str(confdir), "-m"], capture_output=True, text=True, check=False
    )
    if "pgsql" not in types.stdout.split():
        problem = "postfix-pgsql is not installed (scripts/install-tools installs it)"
        if os.environ.get("MXGATE_TEST_REQUIRE_TOOLS") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    return tool, confdir


def lookup_all(postmap: tuple[str, Path], cf: Path, keys: list[str]) -> dict[str, str]:
    """``postmap -q - pgsql:cf`` for many keys at once: key -> answer."""
    tool, confdir = postmap
    proc = subprocess.run(
        [tool, "-c", str(confdir), "-q", "-", f"pgsql:{cf}"],
        input="".join(k + "\n" for k in keys),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode in (0, 1) and not proc.stderr, proc.stderr
    found = dict(line.split("\t", 1) for line in proc.stdout.splitlines())
    assert set(found) <= set(keys)
    return found


async def _prepare(dsn: str) -> RoutingData:
    await prepare_example_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(EXTRA_ROWS)
    finally:
        await conn.close()
    return await load_snapshot(dsn)


@pytest.fixture(scope="module")
def routed(pg_server: PgServer) -> Iterator[tuple[str, RoutingData]]:
    """A database of this module's own (the tests only read it), and its snapshot."""
    dsn = pg_server.create_database()
    try:
        yield dsn, asyncio.run(_prepare(dsn))
    finally:
        pg_server.drop_database(dsn)


def export_postfix(dsn: str, where: Path, **env: str) -> Path:
    settings = {"MXGATE_DATABASE_URL": dsn, "MXGATE_STATE_DIR": str(where / "state"), **env}
    result = runner.invoke(app, ["export", "postfix", str(where / "maps")], env=settings)
    assert result.exit_code == 0, result.output
    maps = where / "maps"
    # Postfix waits for a file changed in the last second to "cool down"
    # (dict_load_file) before it reads it; these were written just now.
    past = time.time() - 10
    for path in maps.iterdir():
        os.utime(path, (past, past))
    return maps


def targets(answer: str | None) -> list[str] | None:
    """A virtual alias answer as Postfix reads it: addresses split on commas
    and blanks (several rows arrive joined with ',')."""
    if answer is None:
        return None
    return sorted({t for t in re.split(r"[\s,]+", answer) if t})


@pytest.mark.parametrize("role", ROLES)
def test_postmap_answers_as_mxgate_query(
    postmap: tuple[str, Path], routed: tuple[str, RoutingData], tmp_path: Path, role: str
) -> None:
    database_url, routing = routed
    env = ROLES[role]
    maps = export_postfix(database_url, tmp_path, **env)
    node = env.get("MXGATE_NODE_NAME", "")
    fallback = "MXGATE_NODE_FALLBACK_TO_GATEWAY" in env
    checked = 0
    for cf in MAP_FILES:
        name = cf.removesuffix(".cf")
        found = lookup_all(postmap, maps / cf, KEYS)
        for key in KEYS:
            ours = query(routing, name, key, node_name=node, node_fallback_to_gateway=fallback)
            theirs = found.get(key)
            if name == "virtual_forward" and key in PLUS_GUARDED:
                assert theirs is None and ours is not None, key
                continue
            if name == "virtual_forward":
                assert targets(theirs) == targets(ours), (name, key)
            else:
                assert theirs == ours, (name, key)
            checked += 1
    assert checked == len(KEYS) * len(MAP_FILES) - len(PLUS_GUARDED)


def postfix_alias(postmap: tuple[str, Path], maps: Path, key: str) -> list[str]:
    """One virtual alias step the way Postfix takes it (virtual(5), "TABLE
    SEARCH ORDER" and "ADDRESS EXTENSION"): user+ext@d, user@d, then @d,
    each asked of every map in virtual_alias_maps order; an extension that
    was stripped is put back on the result; '@d' as a result means the same
    user in d."""
    local, _, domain = key.rpartition("@")
    base, plus, extension = local.partition("+")
    patterns = [(key, "")]
    if plus and base:
        patterns.append((f"{base}@{domain}", "+" + extension))
    patterns.append((f"@{domain}", ""))
    for pattern, ext in patterns:
        for cf in ("virtual_email2email.cf", "virtual_forward.cf"):
            answer = lookup_all(postmap, maps / cf, [pattern]).get(pattern)
            if answer is None:
                continue
            result = []
            for target in targets(answer) or []:
                user, _, where = target.rpartition("@")
                if not user:
                    user = local  # '@d': the same user in d
                elif ext:
                    user += ext  # propagate_unmatched_extensions = virtual
                result.append(f"{user}@{where}")
            return sorted(result)
    return [key]


@pytest.mark.parametrize(
    "key",
    [
        "james+news@server1.example.com",
        "mixed+tag@server1.example.com",
        "sales+x@server1.example.com",
        "david+x@server1.example.com",
        "nobody+x@server1.example.com",
        "team@server1.example.com",
        "x@both.example.net",
        "anyone@other.example.com",
    ],
)
def test_postfix_search_order_gives_mxgates_first_expansion_step(
    postmap: tuple[str, Path], routed: tuple[str, RoutingData], tmp_path: Path, key: str
) -> None:
    database_url = routed[0]
    maps = export_postfix(database_url, tmp_path)
    env = {
        "MXGATE_DATABASE_URL": database_url,
        "MXGATE_STATE_DIR": str(tmp_path / "state"),
        "MXGATE_MYHOSTNAME": "mx.example.net",
        "MXGATE_POSTMASTER": "hostmaster@example.net",
    }
    result = runner.invoke(app, ["explain", "--json", key], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    final = sorted(
        {d["recipient"] for d in doc["deliveries"]} | {d["recipient"] for d in doc["deferred"]}
    )
    assert postfix_alias(postmap, maps, key) == final


def _query_of(text: str) -> str:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("query = "))
    body = [lines[start].removeprefix("query = ")]
    body += [line for line in lines[start + 1 :] if line[:1].isspace()]
    return " ".join(body)


def expand(template: str, key: str) -> str:
    """Postfix's %s / %% expansion, with SQL quoting of the key."""
    quoted = key.replace("'", "''")
    return re.sub(r"%%|%s", lambda m: "%" if m.group() == "%%" else quoted, template)


async def _plans(dsn: str, queries: dict[str, str]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET enable_seqscan = off")
        plans = {}
        for name, sql in queries.items():
            rows = await conn.fetch("EXPLAIN " + sql)
            plans[name] = "\n".join(r[0] for r in rows)
        return plans
    finally:
        await conn.close()


@pytest.mark.parametrize("role", ROLES)
def test_no_lookup_scans_a_table(
    routed: tuple[str, RoutingData], tmp_path: Path, role: str
) -> None:
    """Every lookup is served by the lower() indexes of migration 0002 (the
    tutorial's relay_recipients query scanned mailbox for every rejection)."""
    database_url = routed[0]
    maps = export_postfix(database_url, tmp_path, **ROLES[role])
    queries = {
        f"{cf} {key}": expand(_query_of((maps / cf).read_text()), key)
        for cf in MAP_FILES
        for key in ("james+news@server1.example.com", "server1.example.com")
    }
    for name, plan in asyncio.run(_plans(database_url, queries)).items():
        assert "Seq Scan" not in plan, f"{name}:\n{plan}"


def test_files_modes_and_connection_lines(database_url: str, tmp_path: Path) -> None:
    maps = export_postfix(database_url, tmp_path, MXGATE_RECIPIENT_DELIMITER="-")
    names = sorted(p.name for p in maps.iterdir())
    assert names == sorted([*MAP_FILES, "postconf.txt"])
    port = re.search(r":(\d+)/", database_url)
    assert port is not None
    for cf in MAP_FILES:
        text = (maps / cf).read_text()
        assert stat.S_IMODE((maps / cf).stat().st_mode) == 0o640
        assert f"\nhosts = 127.0.0.1:{port.group(1)}\n" in text
        assert "\nuser = postgres\n" in text
        assert f"\ndbname = {database_url.rsplit('/', 1)[1]}\n" in text
        assert "lower(" in text
    assert "[^@-]+)\\-.*@" in (maps / "virtual_forward.cf").read_text()
    postconf = (maps / "postconf.txt").read_text()
    lines = [line for line in postconf.splitlines() if line.startswith("postconf -e ")]
    settings = {}
    for line in lines:
        name, _, value = shlex.split(line)[2].partition("=")
        settings[name.strip()] = value.strip()
    assert settings["virtual_alias_domains"] == "" and settings["mydestination"] == ""
    where = str(maps.resolve())
    assert settings["relay_domains"] == f"pgsql:{where}/relay_domains.cf"
    assert settings["virtual_alias_maps"] == (
        f"pgsql:{where}/virtual_email2email.cf, pgsql:{where}/virtual_forward.cf"
    )
    assert settings["recipient_delimiter"] == "-"
    assert "relay_domains" not in settings["parent_domain_matches_subdomains"]
    assert settings["smtpd_recipient_restrictions"].endswith("reject_unauth_destination")
    assert settings["mynetworks"] == "127.0.0.0/8 [::1]/128"


def test_a_url_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    env = {"MXGATE_DATABASE_URL": "mysql://x/y", "MXGATE_STATE_DIR": str(tmp_path)}
    result = runner.invoke(app, ["export", "postfix", str(tmp_path / "maps")], env=env)
    assert result.exit_code == 2 and "must start with postgresql://" in result.stderr


def test_config_given_to_export_applies_to_postfix(database_url: str, tmp_path: Path) -> None:
    config = tmp_path / "mxgate.toml"
    config.write_text('node_name = "maila"\n')
    env = {"MXGATE_DATABASE_URL": database_url, "MXGATE_STATE_DIR": str(tmp_path / "state")}
    args = ["export", "--config", str(config), "postfix", str(tmp_path / "maps")]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "= 'maila'" in (tmp_path / "maps" / "transport.cf").read_text()
    result = runner.invoke(app, ["export", "-o", "x", "postfix", str(tmp_path / "m2")], env=env)
    assert result.exit_code == 2 and "options of `mxgate export` alone" in result.stderr
