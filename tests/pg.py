"""Real PostgreSQL for the tests: one server per test session, one database per test.

The server is the embedded one (a private cluster under a temporary directory),
or the one named by ``MXGATE_TEST_DATABASE_URL`` when that is set; either way
each test gets a database of its own, created empty and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mxgate.embedded import EmbeddedPostgres

_counter = itertools.count()


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointed at another database."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class PgServer:
    """A running server on which tests create throwaway databases."""

    admin_dsn: str
    embedded: EmbeddedPostgres | None

    def create_database(self) -> str:
        name = f"mxgate_test_{os.getpid()}_{next(_counter)}"
        asyncio.run(_admin(self.admin_dsn, f'CREATE DATABASE "{name}" TEMPLATE template0'))
        return with_database(self.admin_dsn, name)

    def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        asyncio.run(_admin(self.admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def start_server() -> Iterator[PgServer]:
    url = os.environ.get("MXGATE_TEST_DATABASE_URL")
    if url:
        yield PgServer(admin_dsn=url, embedded=None)
        return
    with tempfile.TemporaryDirectory(prefix="mxgate-pg-") as tmp:
        embedded = EmbeddedPostgres(Path(tmp) / "pgdata")
        dsn = embedded.start()
        try:
            yield PgServer(admin_dsn=dsn, embedded=embedded)
        finally:
            embedded.stop()
