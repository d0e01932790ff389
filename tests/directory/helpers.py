"""Shared helpers of the directory tests: tutorial databases, dumps, waiting."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from mxgate.core.snapshot import RoutingData
from mxgate.directory import SnapshotHolder

HERE = Path(__file__).parent
TUTORIAL_DDL = (HERE / "tutorial.sql").read_text()
TUTORIAL_DATA = (HERE / "tutorial_data.sql").read_text()
TABLES = ("domain", "forward", "relay", "mailbox", "transport")


def as_user(dsn: str, user: str) -> str:
    """The same DSN, connecting as another (password-less) role."""
    parts = urlsplit(dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}@{host}", parts.path, parts.query, parts.fragment))


def closed_port_dsn() -> str:
    """A DSN nobody listens on: a database that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nothing"


async def execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


async def make_tutorial(dsn: str, *, data: bool = True) -> None:
    """A database as the tutorial's reader left it."""
    await execute(dsn, TUTORIAL_DDL, *([TUTORIAL_DATA] if data else []))


async def all_rows(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the five tables, every column, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table in TABLES:
        rows = await conn.fetch(f"SELECT * FROM {table}")
        out[table] = sorted(tuple(r) for r in rows)
    return out


async def schema_dump(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog facts a migration can change: columns, constraints, indexes,
    triggers and functions of the public schema."""
    queries = {
        "columns": """
            SELECT table_name, column_name, data_type, character_maximum_length,
                   is_nullable, column_default
            FROM information_schema.columns WHERE table_schema = 'public'""",
        "constraints": """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
        "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
        "triggers": """
            SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
            FROM pg_trigger WHERE NOT tgisinternal""",
        "functions": """
            SELECT proname, prosrc, coalesce(proconfig, '{}'), prosecdef
            FROM pg_proc WHERE pronamespace = 'public'::regnamespace""",
    }
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name, sql in queries.items():
        out[name] = sorted(tuple(r) for r in await conn.fetch(sql))
    return out


def snap(holder: SnapshotHolder) -> RoutingData:
    """The holder's snapshot, which the test expects to exist."""
    data = holder.current
    assert data is not None
    return data


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 1.0, interval: float = 0.005
) -> float:
    """Seconds until ``predicate()`` held; AssertionError after ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
