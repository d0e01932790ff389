"""The SRS keys in PostgreSQL: read them, rotate them (``mxgate srs``).

Owns the SQL of the ``mxgate_srs_key`` table (migration 0003) and its NOTIFY
channel: reading every key as a ``core.srs_keys.SrsKeyRing``, and rotation:
one transaction that adds a new key signing ``delay`` seconds from now,
retires the keys it replaces at that moment, and deletes keys retired longer
ago than the grace period (they verify nothing any more).

Times come from the database's clock (``now()``), so that gateways whose
clocks differ still agree on when a key starts to sign. Never keeps a
connection (the long-running reader is ``srs_holder.SrsKeyHolder``); a
database without the table (not migrated to 0003) has no keys, and SRS then
rewrites nothing.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import asyncpg

from mxgate.core.srs_keys import SrsKey, SrsKeyRing
from mxgate.directory.connect import DirectoryError, connection

SRS_KEY_TABLE = "mxgate_srs_key"
SRS_CHANNEL = "mxgate_srs_keys"
"""NOTIFY channel of the table's trigger: a hint to read the keys again."""

HAS_TABLE = f"SELECT to_regclass('{SRS_KEY_TABLE}') IS NOT NULL"

READ = f"""
SELECT id, secret,
       extract(epoch FROM created)::float8 AS created,
       extract(epoch FROM signs_from)::float8 AS signs_from,
       extract(epoch FROM retired_at)::float8 AS retired_at
FROM {SRS_KEY_TABLE}
ORDER BY id
"""

_INSERT = f"""
INSERT INTO {SRS_KEY_TABLE} (secret, signs_from)
VALUES ($1, now() + make_interval(secs => $2))
RETURNING id, extract(epoch FROM signs_from)::float8 AS signs_from
"""

_RETIRE = f"""
UPDATE {SRS_KEY_TABLE}
SET retired_at = (SELECT signs_from FROM {SRS_KEY_TABLE} WHERE id = $1)
WHERE retired_at IS NULL AND id <> $1
"""

_PRUNE = f"""
DELETE FROM {SRS_KEY_TABLE}
WHERE retired_at IS NOT NULL AND retired_at + make_interval(secs => $1) < now()
RETURNING id
"""

MIN_SECRET_LENGTH = 16  # the table's CHECK


@dataclass(frozen=True, slots=True)
class Rotation:
    """What ``rotate`` did.

    key_id:      the new key
    signs_from:  Unix time (database clock) from which it signs
    retired:     how many keys it replaced
    pruned:      ids of keys deleted (retired longer ago than the grace period)
    """

    key_id: int
    signs_from: float
    retired: int
    pruned: tuple[int, ...]


def new_secret() -> str:
    """A fresh secret: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


async def read_keys(conn: asyncpg.Connection, timeout: float | None = None) -> tuple[SrsKey, ...]:
    """Every key, oldest first; none when the table does not exist."""
    if not await conn.fetchval(HAS_TABLE, timeout=timeout):
        return ()
    rows = await conn.fetch(READ, timeout=timeout)
    return tuple(
        SrsKey(
            id=int(r["id"]),
            secret=str(r["secret"]),
            signs_from=float(r["signs_from"]),
            retired_at=float(r["retired_at"]) if r["retired_at"] is not None else None,
            created=float(r["created"]),
        )
        for r in rows
    )


async def load_keys(conn_or_dsn: asyncpg.Connection | str) -> SrsKeyRing:
    """The key ring, read once (for one-shot commands). Raises DirectoryError."""
    async with connection(conn_or_dsn, "SRS keys") as conn:
        keys = await read_keys(conn)
    return SrsKeyRing(keys, "database", time.time())


async def rotate(
    conn_or_dsn: asyncpg.Connection | str,
    *,
    delay: float,
    grace: float,
    secret: str | None = None,
) -> Rotation:
    """Add a key that signs ``delay`` seconds from now, retire the others
    then, delete the keys past ``grace``. Raises DirectoryError (also when
    the table is missing: ``mxgate db migrate`` first)."""
    key = new_secret() if secret is None else secret
    if len(key) < MIN_SECRET_LENGTH:
        raise DirectoryError(f"an SRS secret needs at least {MIN_SECRET_LENGTH} characters")
    async with connection(conn_or_dsn, "SRS key rotation") as conn:
        if not await conn.fetchval(HAS_TABLE):
            raise DirectoryError(f"no table {SRS_KEY_TABLE}: run mxgate db migrate first")
        async with conn.transaction():
            # Two rotations at once must not both leave a key unretired.
            await conn.execute(f"LOCK TABLE {SRS_KEY_TABLE} IN SHARE ROW EXCLUSIVE MODE")
            row = await conn.fetchrow(_INSERT, key, float(delay))
            assert row is not None
            key_id = int(row["id"])
            status = await conn.execute(_RETIRE, key_id)
            pruned = await conn.fetch(_PRUNE, float(grace))
    return Rotation(
        key_id=key_id,
        signs_from=float(row["signs_from"]),
        retired=int(status.rsplit(" ", 1)[-1]),
        pruned=tuple(int(r["id"]) for r in pruned),
    )
