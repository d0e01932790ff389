"""Schema migrations of the routing database: apply, report, and grant.

Owns ``migrations/NNNN_name.sql`` (applied in order of NNNN, each in its own
transaction, each recorded in ``mxgate_schema_version``), the advisory lock
that makes two gateways migrating at once safe, the ``status`` report behind
``mxgate db status``, and the GRANTs of a read-only role for ``mxgate serve``.

Never changes a row of the five tables except where a migration says so
(0001 turns a NULL ``transport.node`` into ''), and never runs a migration
file twice: idempotence comes from the version table, and each file also
checks the catalog before it alters anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import asyncpg

from mxgate.directory.connect import DirectoryError, connection
from mxgate.directory.queries import CHANGE_LOG, SCHEMA_VERSION, TABLE_NAMES
from mxgate.directory.srs_keys import SRS_KEY_TABLE

# pg_advisory_lock key: "mxgate" in ASCII, then 0001. Session-level, so it is
# held across the per-migration transactions and released even on failure.
MIGRATE_LOCK = 0x6D78_6761_7465_0001

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_VERSION_TABLE = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA_VERSION} (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

# Column-level grant for mailbox: a gateway never needs password hashes.
_READ_COLUMNS: Mapping[str, str] = {"mailbox": "(email, quota, node, comment)"}


class MigrationError(DirectoryError):
    """A migration failed; the database is left as it was before that migration."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """What ``mxgate db status`` reports.

    version:         highest applied migration number (0: none)
    applied:         names of the applied migrations, in order
    pending:         names of the migrations ``migrate`` would apply
    modified:        applied migrations whose file has changed since
    tutorial:        the tutorial's schema as created by its DDL, never migrated
    missing_tables:  which of the five routing tables do not exist
    change_capture:  whether the change-log table exists
    row_counts:      rows per existing table (five tables and the change log)
    """

    version: int
    applied: tuple[str, ...]
    pending: tuple[str, ...]
    modified: tuple[str, ...]
    tutorial: bool
    missing_tables: tuple[str, ...]
    change_capture: bool
    row_counts: dict[str, int] = field(default_factory=dict)


def migrations() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    found: list[Migration] = []
    for entry in resources.files("mxgate.directory").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match[1]), entry.name[:-4], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise MigrationError("two migration files share a number")
    return found


async def _applied(conn: asyncpg.Connection) -> dict[int, tuple[str, str]]:
    if not await conn.fetchval(f"SELECT to_regclass('{SCHEMA_VERSION}') IS NOT NULL"):
        return {}
    rows = await conn.fetch(f"SELECT version, name, checksum FROM {SCHEMA_VERSION}")
    return {int(r["version"]): (str(r["name"]), str(r["checksum"])) for r in rows}


async def migrate(conn_or_dsn: asyncpg.Connection | str) -> list[str]:
    """Apply the pending migrations; return the names of those applied.

    Safe to run from several gateways at once: the second waits for the
    advisory lock, then finds nothing left to do. The connection must not be
    inside a transaction (each migration is its own). Raises MigrationError
    (naming the file) when a migration fails, DirectoryError when the
    database cannot be reached.
    """
    async with connection(conn_or_dsn, "migrate") as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATE_LOCK)
        try:
            await conn.execute(_CREATE_VERSION_TABLE)
            done = await _applied(conn)
            applied: list[str] = []
            for migration in migrations():
                if migration.version in done:
                    continue
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            f"INSERT INTO {SCHEMA_VERSION} (version, name, checksum)"
                            " VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {migration.name} failed: {exc}") from exc
                applied.append(migration.name)
            return applied
        finally:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATE_LOCK)


async def _present(conn: asyncpg.Connection, names: tuple[str, ...]) -> set[str]:
    rows = await conn.fetch(
        "SELECT n FROM unnest($1::text[]) AS n WHERE to_regclass(n) IS NOT NULL", list(names)
    )
    return {str(r["n"]) for r in rows}


async def _forward_key(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        """
        SELECT a.attname::text AS col
        FROM pg_constraint c
        CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
        WHERE c.conrelid = to_regclass('forward') AND c.contype = 'p'
        ORDER BY k.ord
        """
    )
    return [str(r["col"]) for r in rows]


async def status(conn_or_dsn: asyncpg.Connection | str) -> SchemaStatus:
    """Report the schema version, pending migrations and row counts (read-only)."""
    async with connection(conn_or_dsn, "status") as conn:
        done = await _applied(conn)
        shipped = migrations()
        present = await _present(conn, (*TABLE_NAMES, CHANGE_LOG, SRS_KEY_TABLE))
        counts: dict[str, int] = {}
        for name in (*TABLE_NAMES, CHANGE_LOG, SRS_KEY_TABLE):
            if name in present:
                # Names are our constants, not input.
                counts[name] = int(await conn.fetchval(f"SELECT count(*) FROM {name}"))
        missing = tuple(n for n in TABLE_NAMES if n not in present)
        tutorial = not done and not missing and await _forward_key(conn) == ["source"]
        checksums = {m.version: m.checksum for m in shipped}
        return SchemaStatus(
            version=max(done, default=0),
            applied=tuple(done[v][0] for v in sorted(done)),
            pending=tuple(m.name for m in shipped if m.version not in done),
            modified=tuple(
                done[v][0] for v in sorted(done) if v in checksums and checksums[v] != done[v][1]
            ),
            tutorial=tutorial,
            missing_tables=missing,
            change_capture=CHANGE_LOG in present,
            row_counts=counts,
        )


def quote_ident(name: str) -> str:
    """SQL identifier quoting, as PostgreSQL's quote_ident does it."""
    return '"' + name.replace('"', '""') + '"'


def grant_statements(role: str, schema: str = "public") -> list[str]:
    """GRANTs that let ``role`` run ``mxgate serve`` and ``mxgate db status``.

    SELECT only, and on mailbox not the password column; the SRS keys too
    (every gateway signs and verifies with them). LISTEN needs no
    privilege at all; CONNECT on the database is granted to PUBLIC by default
    (add ``GRANT CONNECT ON DATABASE ...`` where that was revoked).
    """
    who = quote_ident(role)
    where = quote_ident(schema)
    statements = [f"GRANT USAGE ON SCHEMA {where} TO {who};"]
    whole = [
        t
        for t in (*TABLE_NAMES, CHANGE_LOG, SCHEMA_VERSION, SRS_KEY_TABLE)
        if t not in _READ_COLUMNS
    ]
    tables = ", ".join(f"{where}.{quote_ident(t)}" for t in whole)
    statements.append(f"GRANT SELECT ON TABLE {tables} TO {who};")
    for table, columns in _READ_COLUMNS.items():
        statements.append(f"GRANT SELECT {columns} ON TABLE {where}.{quote_ident(table)} TO {who};")
    return statements
