"""Connections for one-shot commands, and the one error type callers catch.

Owns ``connection`` (use a caller's connection, or open one to a DSN for the
duration) and ``DirectoryError``: the CLI and the composition root may not
import asyncpg (only this package does), so every database failure of a
one-shot operation (migrate, status, load, example data) reaches them as a
``DirectoryError`` whose message says what failed and why.

Never retries and never hides a failure; the long-running follower has its
own reconnect loop (follower.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

# What a database that is down, unreachable, misconfigured or refusing us
# raises (asyncpg raises OSError subclasses for refused or reset connections).
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


class DirectoryError(RuntimeError):
    """A database operation failed; the message says which and why."""


@asynccontextmanager
async def connection(
    conn_or_dsn: asyncpg.Connection | str, what: str = "database"
) -> AsyncIterator[asyncpg.Connection]:
    """The given connection, or one opened to the DSN and closed afterwards.

    Database errors inside the block become ``DirectoryError("<what>: ...")``.
    """
    try:
        if not isinstance(conn_or_dsn, str):
            yield conn_or_dsn
            return
        conn = await asyncpg.connect(conn_or_dsn)
        try:
            yield conn
        finally:
            await conn.close()
    except asyncpg.UndefinedTableError as exc:
        raise DirectoryError(
            f"{what}: {exc}: the database lacks mxgate's tables (mxgate db migrate makes them)"
        ) from exc
    except DATABASE_ERRORS as exc:
        raise DirectoryError(f"{what}: {type(exc).__name__}: {exc}") from exc
