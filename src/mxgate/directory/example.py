"""The tutorial's example data, for a first ``mxgate serve`` on an empty database.

Owns the handful of example rows (SPEC section 2: two domains on node
"maila", one gateway transport, one mailbox, two relays and a catch-all
forward) and the test of whether a database is still empty.

Never inserts into a database that holds any routing row: the example is for
a fresh (usually embedded) database, not for someone's production data.
"""

from __future__ import annotations

import asyncpg

from mxgate.directory.connect import DirectoryError
from mxgate.directory.queries import TABLE_NAMES

# The mailbox gets a locked password ("{CRYPT}!" matches no password): mxgate
# never authenticates anyone, and an example must not create a login on a
# Dovecot that shares the database. Set a real one with the CLI.
EXAMPLE_ROWS: dict[str, list[tuple[object, ...]]] = {
    "domain": [
        ("server1.example.com", "maila", "example domain"),
        ("other.example.com", "maila", "example domain"),
    ],
    "transport": [
        # The tutorial writes smtp:[<ip of maila>]; the example's "maila" is a
        # server on this machine (README: run smtp-sink there to watch mail arrive).
        ("server1.example.com", "smtp:[127.0.0.1]:2526", "", "gateways relay to maila"),
    ],
    "mailbox": [
        ("james@server1.example.com", "{CRYPT}!", "maila", "example mailbox"),
    ],
    "relay": [
        ("david@server1.example.com", "maila", "example relay address"),
        ("@other.example.com", "maila", "relay every address of other.example.com"),
    ],
    "forward": [
        ("@server1.example.com", "james@example.com", "catch-all forward"),
    ],
}

_COLUMNS = {
    "domain": "(domain, node, comment)",
    "transport": "(domain, transport, node, comment)",
    "mailbox": "(email, password, node, comment)",
    "relay": "(source, node, comment)",
    "forward": "(source, destination, comment)",
}


class NotEmptyError(DirectoryError):
    """The database already holds routing rows; the example is not loaded."""


async def is_empty(conn: asyncpg.Connection) -> bool:
    """True when none of the five tables holds a row (a missing table counts as empty)."""
    for table in TABLE_NAMES:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            continue
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
            return False
    return True


async def load_example_data(conn: asyncpg.Connection) -> None:
    """Insert the example rows into a migrated, empty database, in one transaction."""
    async with conn.transaction():
        if not await is_empty(conn):
            raise NotEmptyError("the database already holds routing data; example not loaded")
        for table, rows in EXAMPLE_ROWS.items():
            placeholders = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
            await conn.executemany(
                f"INSERT INTO {table} {_COLUMNS[table]} VALUES ({placeholders})", rows
            )
