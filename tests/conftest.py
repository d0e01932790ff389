"""Fixtures shared by every test tier."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mxgate import native
from mxgate.embedded import EmbeddedPostgres
from tests.pg import PgServer, start_server


def pytest_configure(config: pytest.Config) -> None:
    # A compiled module shadows its source: tests of an old build would pass or
    # fail for code that no longer exists.
    why = native.stale()
    if why is not None:
        raise pytest.UsageError(
            f"{why}: run scripts/build-native (or MXGATE_PURE=1 to remove them)"
        )


def pytest_report_header() -> str:
    built = sum(path.parent != native.PACKAGE_ROOT.parent for path in native.extension_paths())
    return f"mxgate: {built} of {len(native.MODULES)} hot modules compiled (mypyc)"


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
