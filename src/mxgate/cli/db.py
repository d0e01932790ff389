"""``mxgate db migrate|status``: create or upgrade the schema, report its state."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from mxgate.app import database
from mxgate.cli.common import EXIT_USAGE, ConfigOption, fail, settings
from mxgate.directory import DirectoryError, SchemaStatus, grant_statements, migrate, status
from mxgate.embedded import EmbeddedPostgresError

app = typer.Typer(no_args_is_help=True, help="Database schema: migrate and status.")


@app.command("migrate")
def migrate_cmd(
    config: ConfigOption = None,
    grants_for: Annotated[
        str | None,
        typer.Option(
            "--print-grants",
            metavar="ROLE",
            help="Only print the GRANTs that give ROLE the read-only access serve needs.",
        ),
    ] = None,
) -> None:
    """Create the tables on an empty database or upgrade the tutorial's in place."""
    if grants_for is not None:
        if not grants_for.strip():
            fail("--print-grants: give the role's name", EXIT_USAGE)
        for statement in grant_statements(grants_for):
            typer.echo(statement)
        return
    loaded = settings(config)
    try:
        with database(loaded.config) as dsn:
            applied = asyncio.run(migrate(dsn))
    except (DirectoryError, EmbeddedPostgresError) as exc:
        fail(str(exc))
    if applied:
        for name in applied:
            typer.echo(f"applied {name}")
    else:
        typer.echo("schema is up to date; nothing to do")


def describe(result: SchemaStatus) -> list[str]:
    if result.tutorial:
        state = "the tutorial's schema, never migrated (mxgate serves it read-only)"
    elif result.missing_tables:
        state = "missing tables: " + ", ".join(result.missing_tables)
    elif result.pending:
        state = "migrations pending"
    else:
        state = "up to date"
    lines = [
        f"schema version: {result.version} ({state})",
        f"applied:        {', '.join(result.applied) or '-'}",
        f"pending:        {', '.join(result.pending) or '-'}",
        f"change capture: {'yes' if result.change_capture else 'no (periodic full reloads)'}",
    ]
    if result.modified:
        lines.append(f"MODIFIED since applied: {', '.join(result.modified)}")
    # The counts in one column, after the longest name (mxgate_change_log).
    width = max((len(table) + 2 for table in result.row_counts), default=0)
    width = max(width, 16)
    for table, count in result.row_counts.items():
        lines.append(f"rows in {table + ':':<{width}}{count}")
    return lines


@app.command("status")
def status_cmd(config: ConfigOption = None) -> None:
    """Schema version, pending migrations and row counts."""
    loaded = settings(config)
    try:
        with database(loaded.config) as dsn:
            result = asyncio.run(status(dsn))
    except (DirectoryError, EmbeddedPostgresError) as exc:
        fail(str(exc))
    for line in describe(result):
        typer.echo(line)
