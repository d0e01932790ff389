"""``mxgate relay add|list|show|edit|remove``: addresses relayed to a node as they are."""

from __future__ import annotations

from typing import Annotated

import typer

from mxgate.cli.common import ConfigOption
from mxgate.cli.manage.output import (
    DEFAULT_LIMIT,
    CommentOpt,
    DomainOpt,
    JsonOpt,
    LimitOpt,
    NodeOpt,
    OffsetOpt,
    PatternOpt,
    list_table,
    need_change,
    not_found,
    on_database,
    refusals,
    show_object,
    warn,
)
from mxgate.core import rules
from mxgate.directory import manage

app = typer.Typer(no_args_is_help=True, help="Relayed addresses (the relay table).")

SourceArg = Annotated[
    str, typer.Argument(metavar="SOURCE", help="user@domain, or @domain for all of a domain.")
]


@app.command("add")
def add_cmd(
    source: SourceArg,
    config: ConfigOption = None,
    node: Annotated[
        str | None, typer.Option("--node", help="Its node (default: the domain's node).")
    ] = None,
    comment: CommentOpt = None,
) -> None:
    """Add a relay: its domain must be ours and have a transport for the gateways."""
    with refusals():
        key = rules.source(source, "relay source")
        node_value = rules.node_name(node) if node is not None else None
        text = rules.comment(comment)
        on_database(config, lambda dsn: manage.add_relay(dsn, key, node_value, text))
    typer.echo(f"added relay {key}")


@app.command("list")
def list_cmd(
    config: ConfigOption = None,
    domain: DomainOpt = None,
    node: NodeOpt = None,
    pattern: PatternOpt = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """List relays, a page at a time."""
    list_table(
        config,
        "relay",
        pattern=pattern,
        domain=domain,
        node=node,
        limit=limit,
        offset=offset,
        as_json=as_json,
    )


@app.command("show")
def show_cmd(source: SourceArg, config: ConfigOption = None, as_json: JsonOpt = False) -> None:
    """A relay, its gateway route and the forwards that reach it."""
    with refusals():
        key = rules.source(source, "relay source")
        found = on_database(config, lambda dsn: manage.relay_details(dsn, key))
    if found is None:
        not_found(f"relay {key}")
    show_object(f"relay {key}", found, as_json)


@app.command("edit")
def edit_cmd(
    source: SourceArg,
    config: ConfigOption = None,
    node: Annotated[str | None, typer.Option("--node", help="Move it to this node.")] = None,
    comment: CommentOpt = None,
) -> None:
    """Change a relay's node or comment."""
    changes: dict[str, object] = {}
    with refusals():
        key = rules.source(source, "relay source")
        if node is not None:
            if not node.strip():
                raise rules.Refusal("relay node: a relay must have a node")
            changes["node"] = rules.node_name(node)
        if comment is not None:
            changes["comment"] = rules.comment(comment)
        need_change(changes, "--node or --comment")
        on_database(config, lambda dsn: manage.edit_relay(dsn, key, changes))
    typer.echo(f"changed relay {key}")


@app.command("remove")
def remove_cmd(source: SourceArg, config: ConfigOption = None) -> None:
    """Remove a relay (rows that differ only in case go too)."""
    with refusals():
        key = rules.source(source, "relay source")
        warnings = on_database(config, lambda dsn: manage.remove_relay(dsn, key))
    warn(warnings)
    typer.echo(f"removed relay {key}")
