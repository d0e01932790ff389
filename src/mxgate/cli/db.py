"""``mxgate db migrate|status``: create or upgrade the schema, report its state."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from mxgate.app import database
from mxgate.cli.common import ConfigOption, fail, settings

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
    from mxgate.directory.migrate import grant_statements, migrate

    if grants_for is not None:
        for statement in grant_statements(grants_for):
            typer.echo(statement)
        return
    loaded = settings(config)
    with database(loaded.config) as dsn:
        try:
            applied = asyncio.run(migrate(dsn))
        except (OSError, ConnectionError) as exc:
            fail(f"cannot reach the database: {exc}")
    if applied:
        for name in applied:
            typer.echo(f"applied {name}")
    else:
        typer.echo("schema is up to date; nothing to do")


@app.command("status")
def status_cmd(config: ConfigOption = None) -> None:
    """Schema version, pending migrations and row counts."""
    from mxgate.directory.migrate import status

    loaded = settings(config)
    with database(loaded.config) as dsn:
        try:
            result = asyncio.run(status(dsn))
        except (OSError, ConnectionError) as exc:
            fail(f"cannot reach the database: {exc}")
    typer.echo(str(result))
