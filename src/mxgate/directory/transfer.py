"""The SQL of ``mxgate export`` and ``mxgate import``: every row of the five
tables out, and a document's rows in, all or nothing.

Owns reading all columns (password hashes and comments too) in one
consistent snapshot, and applying an import: in ONE transaction, the five
tables locked against other writers (SHARE ROW EXCLUSIVE: gateways keep
reading), the current rows read, the source-domain rule checked against the
domains that will exist, the diff computed (``core.transfer_diff``) and
applied through a temporary table filled by COPY (``copy_records_to_table``,
the binary protocol: values never become SQL text), then one DELETE, one
UPDATE and one INSERT per table. Any failure rolls everything back. The
change-capture triggers see each row written, so gateways follow the import
like any other edit.

Never formats a value into SQL (table and column names are constants of
``core.transfer.SCHEMA``); never writes during a dry run (a READ ONLY
transaction); never imports into a schema that is not fully migrated (the
tutorial's varchar(20) password or its forward key would refuse good rows).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg

from mxgate.core.transfer import (
    SCHEMA,
    TABLES,
    DataSet,
    Document,
    DocumentError,
    Row,
    TableSchema,
    foreign_sources,
)
from mxgate.core.transfer_diff import Diff, TableDiff, compute_diff
from mxgate.directory.connect import DirectoryError, connection
from mxgate.directory.migrate import migrations
from mxgate.directory.queries import SCHEMA_VERSION

Progress = Callable[[str], None]
"""Called with a short description of each step, for a progress display."""


def _quiet(_step: str) -> None:
    return None


def _select(schema: TableSchema, ordered: bool) -> str:
    sql = f"SELECT {', '.join(schema.names)} FROM {schema.name}"
    if ordered:
        # Code-point order (COLLATE "C"), so that an export does not depend
        # on the database's locale and diffs well in version control.
        keys = ", ".join(f'{schema.columns[i].name} COLLATE "C"' for i in schema.key)
        sql += f" ORDER BY {keys}"
    return sql


async def read_tables(
    conn: asyncpg.Connection, *, ordered: bool = False, progress: Progress = _quiet
) -> DataSet:
    """Every row of the five tables, all columns, as tuples in schema order.
    Call inside a transaction for one consistent snapshot."""
    data: DataSet = {}
    for name, schema in SCHEMA.items():
        progress(f"reading table {name}")
        records = await conn.fetch(_select(schema, ordered))
        data[name] = [tuple(record) for record in records]
    return data


async def export_tables(dsn: str, progress: Progress = _quiet) -> DataSet:
    """The whole data set, in one REPEATABLE READ snapshot, sorted by key."""
    async with (
        connection(dsn, "export") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        return await read_tables(conn, ordered=True, progress=progress)


async def _require_migrated(conn: asyncpg.Connection) -> None:
    present = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", SCHEMA_VERSION)
    applied: set[int] = set()
    if present:
        rows = await conn.fetch(f"SELECT version FROM {SCHEMA_VERSION}")
        applied = {int(r["version"]) for r in rows}
    pending = [m.name for m in migrations() if m.version not in applied]
    if pending:
        raise DirectoryError(
            f"import: the schema is not migrated (pending: {', '.join(pending)});"
            " run `mxgate db migrate` first"
        )


def _key_match(schema: TableSchema) -> str:
    return " AND ".join(
        f"t.{schema.columns[i].name} = x.{schema.columns[i].name}" for i in schema.key
    )


def _count(status: str) -> int:
    """The row count of a command tag such as 'UPDATE 3' or 'INSERT 0 3'."""
    return int(status.rsplit(" ", 1)[1])


async def _apply_table(conn: asyncpg.Connection, change: TableDiff) -> None:
    schema = SCHEMA[change.table]
    names = schema.names
    temp = f"mxgate_import_{schema.name}"
    await conn.execute(
        f"CREATE TEMP TABLE {temp} (LIKE {schema.name}, mxgate_op text NOT NULL) ON COMMIT DROP"
    )
    records: list[Row] = [(*row, "D") for row in change.removed]
    records += [(*new, "U") for _, new in change.changed]
    records += [(*row, "I") for row in change.added]
    await conn.copy_records_to_table(temp, records=records, columns=[*names, "mxgate_op"])
    del records
    # Temporary tables are never analysed automatically; without statistics
    # the planner may join a million rows by nested loop.
    await conn.execute(f"ANALYZE {temp}")
    match = _key_match(schema)
    expected = {"D": len(change.removed), "U": len(change.changed), "I": len(change.added)}
    done = {"D": 0, "U": 0, "I": 0}
    if change.removed:
        done["D"] = _count(
            await conn.execute(
                f"DELETE FROM {schema.name} t USING {temp} x WHERE x.mxgate_op = 'D' AND {match}"
            )
        )
    if change.changed:
        values = [c.name for i, c in enumerate(schema.columns) if i not in schema.key]
        assignments = ", ".join(f"{c} = x.{c}" for c in values)
        done["U"] = _count(
            await conn.execute(
                f"UPDATE {schema.name} t SET {assignments} FROM {temp} x"
                f" WHERE x.mxgate_op = 'U' AND {match}"
            )
        )
    if change.added:
        columns = ", ".join(names)
        done["I"] = _count(
            await conn.execute(
                f"INSERT INTO {schema.name} ({columns})"
                f" SELECT {columns} FROM {temp} WHERE mxgate_op = 'I'"
            )
        )
    if done != expected:
        raise DirectoryError(
            f"import: table {schema.name}: expected {expected}, the database did {done};"
            " nothing was written"
        )


async def import_document(
    dsn: str,
    document: Document,
    *,
    replace: bool,
    dry_run: bool,
    progress: Progress = _quiet,
) -> Diff:
    """Make the database hold the document's rows; return what changed.

    Without ``replace`` rows absent from the document stay; with it the
    database becomes exactly the document. ``dry_run`` computes the same diff
    in a read-only transaction and writes nothing. Raises ``DocumentError``
    when a forward or relay source would be outside our domains, and
    ``DirectoryError`` for database failures; either way nothing is written.
    """
    async with connection(dsn, "import") as conn:
        await _require_migrated(conn)
        isolation = "repeatable_read" if dry_run else "read_committed"
        async with conn.transaction(isolation=isolation, readonly=dry_run):
            if not dry_run:
                progress("waiting for the table locks")
                # Sorted, so that two imports lock in the same order.
                await conn.execute(
                    f"LOCK TABLE {', '.join(sorted(TABLES))} IN SHARE ROW EXCLUSIVE MODE"
                )
            current = await read_tables(conn, progress=progress)
            progress("checking the source domains")
            kept_domains: Sequence[Row] = () if replace else current["domain"]
            foreign = foreign_sources(document, (str(row[0]) for row in kept_domains))
            if foreign:
                raise DocumentError(foreign[:200], len(foreign))
            progress("computing the differences")
            diff = compute_diff(current, document.tables, replace)
            del current
            if dry_run:
                return diff
            for change in diff.tables.values():
                if change.writes:
                    progress(f"writing table {change.table} ({change.writes} rows)")
                    await _apply_table(conn, change)
            progress("committing")
    return diff
