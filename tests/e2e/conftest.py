"""Fixtures of the end-to-end tests: a database with the example data, gateways, tools."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest

from mxgate.directory.admin import prepare_example_database
from tests.e2e.gateway import HOSTNAME, Gateway, SettingValue, blackhole_port
from tests.pg import PgServer

# Besides the tutorial's example data: a route for other.example.com (whose
# relay catch-all has none in the example data); closed.example.net, a domain
# without any catch-all (an unknown user is refused there), with a mailbox that
# is also the configured postmaster, a forward loop and a forward to nobody;
# and noroute.example.net, a domain with a mailbox but no transport.
EXTRA_ROWS = """
INSERT INTO domain (domain, node, comment) VALUES
    ('closed.example.net', 'maila', 'e2e'),
    ('noroute.example.net', 'maila', 'e2e');
INSERT INTO mailbox (email, password, node, comment) VALUES
    ('alice@closed.example.net', '{CRYPT}!', 'maila', 'e2e'),
    ('bob@noroute.example.net', '{CRYPT}!', 'maila', 'e2e');
INSERT INTO forward (source, destination, comment) VALUES
    ('loop1@closed.example.net', 'loop2@closed.example.net', 'e2e'),
    ('loop2@closed.example.net', 'loop1@closed.example.net', 'e2e'),
    ('dead@closed.example.net', 'ghost@closed.example.net', 'e2e');
INSERT INTO transport (domain, transport, node, comment) VALUES
    ('closed.example.net', 'smtp:[127.0.0.1]:BLACKHOLE', '', 'e2e'),
    ('other.example.com', 'smtp:[127.0.0.1]:BLACKHOLE', '', 'e2e');
UPDATE transport SET transport = 'smtp:[127.0.0.1]:BLACKHOLE';
"""


async def _prepare(dsn: str) -> None:
    await prepare_example_database(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        # Every next hop refuses at once (see blackhole_port): nothing leaves loopback.
        await conn.execute(EXTRA_ROWS.replace("BLACKHOLE", str(blackhole_port())))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def e2e_database(pg_server: PgServer) -> Iterator[str]:
    """A database of this module's own: the example data plus EXTRA_ROWS."""
    dsn = pg_server.create_database()
    try:
        asyncio.run(_prepare(dsn))
        yield dsn
    finally:
        pg_server.drop_database(dsn)


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def start_gateway(tmp_path: Path, e2e_database: str) -> Iterator[GatewayFactory]:
    """Starts gateways of this test alone; stops them cleanly (asserted) afterwards.

    ``start_gateway(name="gw", workers=1, database_url=None, **settings)``;
    settings are keys of mxgate.toml and override the defaults of ``Gateway``.
    """
    started: list[Gateway] = []

    def start(
        name: str = "gw",
        workers: int = 1,
        database_url: str | None = None,
        **settings: SettingValue,
    ) -> Gateway:
        gateway = Gateway(
            tmp_path / name, database_url or e2e_database, workers=workers, **settings
        )
        started.append(gateway)
        gateway.start()
        return gateway

    try:
        yield start
        for gateway in started:
            if gateway.process is not None and gateway.process.poll() is None:
                gateway.stop()
    finally:
        for gateway in started:
            gateway.close()


# MXGATE_TEST_REQUIRE_TOOLS is the same switch under a name that mxgate's own
# settings loader ignores (it refuses unknown MXGATE_* variables).
REQUIRE_TOOLS = ("MXGATE_TEST_REQUIRE_TOOLS",)


def _find_tool(name: str) -> str:
    """The path of a mail tool; skips the test when it is missing, or fails
    when MXGATE_TEST_REQUIRE_TOOLS=1 says it must be there."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        missing(f"{name} is not installed (scripts/install-tools installs it)")
    return path


def missing(message: str) -> NoReturn:
    """Skip for a missing tool, or fail when MXGATE_TEST_REQUIRE_TOOLS=1."""
    if any(os.environ.get(variable) == "1" for variable in REQUIRE_TOOLS):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def swaks() -> str:
    return _find_tool("swaks")


@pytest.fixture
def smtp_source() -> str:
    return _find_tool("smtp-source")


@pytest.fixture
def pflogsumm() -> str:
    return _find_tool("pflogsumm")


@pytest.fixture
def systemd_analyze() -> str:
    return _find_tool("systemd-analyze")


@pytest.fixture
def fail2ban_regex() -> str:
    return _find_tool("fail2ban-regex")


@pytest.fixture
def logrotate() -> str:
    return _find_tool("logrotate")


@pytest.fixture
def haproxy() -> str:
    return _find_tool("haproxy")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for mx.test.example and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={HOSTNAME}",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
