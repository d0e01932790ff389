"""Fixtures shared by every test tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mxgate.embedded import EmbeddedPostgres
from tests.pg import PgServer, start_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL for the whole test session."""
    yield from start_server()


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    """DSN of a fresh, empty database for this test alone."""
    dsn = pg_server.create_database()
    try:
        yield dsn
    finally:
        pg_server.drop_database(dsn)


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A private embedded server that the test may stop and start at will.

    For outage tests: stopping the shared server would break every other test.
    """
    server = EmbeddedPostgres(tmp_path / "pgdata")
    server.start()
    try:
        yield server
    finally:
        server.stop()
