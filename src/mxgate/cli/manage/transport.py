"""``mxgate transport add|list|show|edit|remove``: where the mail of a domain goes.

A row is keyed by (key, node): node '' is for the gateways, a node's name
for an mxgate in the node role on that node (SPEC section 1).
"""

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
from mxgate.core.explain import describe_route
from mxgate.core.transport import Route, parse_transport
from mxgate.directory import manage

app = typer.Typer(no_args_is_help=True, help="Routes (the transport table).")

KeyArg = Annotated[
    str,
    typer.Argument(
        metavar="KEY", help="A domain, .parent.domain (its subdomains), an address, or '*'."
    ),
]
RowNodeOpt = Annotated[
    str, typer.Option("--node", help="The row's node: '' (default) for the gateways.")
]


@app.command("add")
def add_cmd(
    key: KeyArg,
    transport: Annotated[
        str, typer.Argument(help="e.g. smtp:[10.0.0.5]:25, smtp:mx.example, lmtp:unix:/path")
    ],
    config: ConfigOption = None,
    node: RowNodeOpt = "",
    comment: CommentOpt = None,
) -> None:
    """Add a transport row (the value must parse as Postfix's transport(5))."""
    with refusals():
        name = rules.transport_key(key)
        value = rules.transport_value(transport)
        node_value = rules.node_name(node)
        text = rules.comment(comment)
        warnings = on_database(
            config, lambda dsn: manage.add_transport(dsn, name, value, node_value, text)
        )
    warn(warnings)
    typer.echo(f"added transport {name} (node {node_value!r}) -> {value}")


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
    """List transport rows, a page at a time."""
    list_table(
        config,
        "transport",
        pattern=pattern,
        domain=domain,
        node=node,
        limit=limit,
        offset=offset,
        as_json=as_json,
    )


@app.command("show")
def show_cmd(key: KeyArg, config: ConfigOption = None, as_json: JsonOpt = False) -> None:
    """The rows of a key, one per node, and what each means."""
    with refusals():
        name = rules.transport_key(key)
        rows = on_database(config, lambda dsn: manage.transport_details(dsn, name))
    if not rows:
        not_found(f"transport {name}")
    for row in rows:
        route = parse_transport(str(row["transport"]))
        row["means"] = describe_route(route) if isinstance(route, Route) else route.reason
    show_object(f"transport {name}", {"key": name, "rows": rows}, as_json)


@app.command("edit")
def edit_cmd(
    key: KeyArg,
    config: ConfigOption = None,
    node: RowNodeOpt = "",
    transport: Annotated[str | None, typer.Option("--transport", help="New value.")] = None,
    comment: CommentOpt = None,
) -> None:
    """Change the value or comment of the row (KEY, --node)."""
    changes: dict[str, object] = {}
    with refusals():
        name = rules.transport_key(key)
        node_value = rules.node_name(node)
        if transport is not None:
            changes["transport"] = rules.transport_value(transport)
        if comment is not None:
            changes["comment"] = rules.comment(comment)
        need_change(changes, "--transport or --comment")
        on_database(config, lambda dsn: manage.edit_transport(dsn, name, node_value, changes))
    typer.echo(f"changed transport {name} (node {node_value!r})")


@app.command("remove")
def remove_cmd(key: KeyArg, config: ConfigOption = None, node: RowNodeOpt = "") -> None:
    """Remove the row (KEY, --node)."""
    with refusals():
        name = rules.transport_key(key)
        node_value = rules.node_name(node)
        on_database(config, lambda dsn: manage.remove_transport(dsn, name, node_value))
    typer.echo(f"removed transport {name} (node {node_value!r})")
