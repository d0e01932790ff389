"""``mxgate forward add|list|show|remove``: forwards (virtual aliases), one row per destination.

``add`` vets the new rows on a fresh snapshot with the gateway's own
expansion (``mxgate.core.rules.vet_forward``): loops and limits are refused,
and so are dead ends (a target in our domains that nothing takes), an
address kept by mapping to itself that nothing else takes, and sources a
mailbox or relay shadows, unless ``--force``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from mxgate.app import database
from mxgate.cli.common import ConfigOption, settings
from mxgate.cli.manage.output import (
    DEFAULT_LIMIT,
    CommentOpt,
    DomainOpt,
    JsonOpt,
    LimitOpt,
    OffsetOpt,
    PatternOpt,
    list_table,
    not_found,
    on_database,
    refusals,
    show_object,
    warn,
)
from mxgate.core import rules
from mxgate.directory import load_snapshot, manage

app = typer.Typer(no_args_is_help=True, help="Forwards (the forward table).")

SourceArg = Annotated[
    str, typer.Argument(metavar="SOURCE", help="user@domain, or @domain (catch-all).")
]


@app.command("add")
def add_cmd(
    source: SourceArg,
    destinations: Annotated[
        list[str], typer.Argument(metavar="DESTINATION...", help="One row per destination.")
    ],
    config: ConfigOption = None,
    comment: CommentOpt = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Store dead ends and forwards that a mailbox or relay shadows (never loops).",
        ),
    ] = False,
) -> None:
    """Forward SOURCE to each DESTINATION (its source domain must be ours)."""
    loaded = settings(config)
    limits = rules.ExpansionSettings(
        delimiter=loaded.config.recipient_delimiter,
        postmaster=loaded.config.postmaster,
        recursion_limit=loaded.config.virtual_alias_recursion_limit,
        expansion_limit=loaded.config.virtual_alias_expansion_limit,
    )
    with refusals():
        key = rules.source(source, "forward source")
        text = rules.comment(comment)
        with database(loaded.config) as dsn:
            data = asyncio.run(load_snapshot(dsn))
            targets = list(dict.fromkeys(rules.destination(d, data.domains) for d in destinations))
            warnings = rules.vet_forward(data, key, targets, limits, force=force)
            asyncio.run(manage.add_forwards(dsn, key, targets, text))
    warn(warnings)
    typer.echo(f"added forward {key} -> {', '.join(targets)}")


@app.command("list")
def list_cmd(
    config: ConfigOption = None,
    domain: DomainOpt = None,
    pattern: PatternOpt = None,
    to: Annotated[
        str | None, typer.Option("--to", help="Only destinations matching this glob.")
    ] = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """List forward rows, a page at a time."""
    list_table(
        config,
        "forward",
        pattern=pattern,
        domain=domain,
        destination=to,
        limit=limit,
        offset=offset,
        as_json=as_json,
    )


@app.command("show")
def show_cmd(source: SourceArg, config: ConfigOption = None, as_json: JsonOpt = False) -> None:
    """A source's rows, what shadows it and who forwards to it (mxgate explain: the rest)."""
    with refusals():
        key = rules.source(source, "forward source")
        found = on_database(config, lambda dsn: manage.forward_details(dsn, key))
    if found is None:
        not_found(f"forward {key}")
    show_object(f"forward {key}", found, as_json)


@app.command("remove")
def remove_cmd(
    source: SourceArg,
    destinations: Annotated[
        list[str] | None,
        typer.Argument(metavar="[DESTINATION]...", help="Only these rows (default: all)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Remove the rows SOURCE -> DESTINATION, or every row of SOURCE."""
    with refusals():
        key = rules.source(source, "forward source")
        targets = [rules.destination(d, ()) for d in destinations or ()]
        removed, warnings = on_database(
            config, lambda dsn: manage.remove_forwards(dsn, key, targets)
        )
    warn(warnings)
    typer.echo(f"removed {removed} forward row(s) of {key}")
