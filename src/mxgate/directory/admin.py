"""Server-level chores: create the database, prepare an example one.

Owns the few statements that run outside the mail database (CREATE DATABASE)
and the composition "migrate, then load the tutorial's example data" used by
the README's first command. Never touches an existing database's rows.
"""

from __future__ import annotations

import asyncpg


async def ensure_database(admin_dsn: str, name: str) -> bool:
    """Create database ``name`` when it does not exist; True when created."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        # Identifiers cannot be bound as parameters; quote it ourselves.
        quoted = '"' + name.replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted} TEMPLATE template0 ENCODING 'UTF8'")
        return True
    finally:
        await conn.close()


async def prepare_example_database(dsn: str) -> None:
    """Schema plus the tutorial's example rows, on an empty database."""
    from mxgate.directory.example import is_empty, load_example_data
    from mxgate.directory.migrate import migrate

    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        if await is_empty(conn):
            await load_example_data(conn)
    finally:
        await conn.close()
