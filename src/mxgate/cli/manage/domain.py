"""``mxgate domain add|list|show|edit|remove``: the domains the gateway serves."""

from __future__ import annotations

from typing import Annotated

import typer

from mxgate.cli.common import ConfigOption
from mxgate.cli.manage.output import (
    DEFAULT_LIMIT,
    CommentOpt,
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
)
from mxgate.core import rules
from mxgate.directory import manage

app = typer.Typer(no_args_is_help=True, help="Our domains (the domain table).")

DomainArg = Annotated[
    str, typer.Argument(metavar="DOMAIN", help="e.g. example.com (IDNA allowed).")
]


@app.command("add")
def add_cmd(
    domain: DomainArg,
    config: ConfigOption = None,
    node: Annotated[
        str | None, typer.Option("--node", help="Node of its mailboxes (default: none).")
    ] = None,
    comment: CommentOpt = None,
) -> None:
    """Add a domain: mail for it is accepted for the addresses the other tables know."""
    with refusals():
        name = rules.domain_name(domain)
        node_value = rules.node_name(node) if node else None
        text = rules.comment(comment)
        on_database(config, lambda dsn: manage.add_domain(dsn, name, node_value, text))
    typer.echo(f"added domain {name}")


@app.command("list")
def list_cmd(
    config: ConfigOption = None,
    pattern: PatternOpt = None,
    node: NodeOpt = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """List domains, in order, a page at a time."""
    list_table(
        config, "domain", pattern=pattern, node=node, limit=limit, offset=offset, as_json=as_json
    )


@app.command("show")
def show_cmd(domain: DomainArg, config: ConfigOption = None, as_json: JsonOpt = False) -> None:
    """A domain with its counts of mailboxes, relays and forwards, catch-alls and routes."""
    with refusals():
        name = rules.domain_name(domain)
        found = on_database(config, lambda dsn: manage.domain_details(dsn, name))
    if found is None:
        not_found(f"domain {name}")
    show_object(f"domain {name}", found, as_json)


@app.command("edit")
def edit_cmd(
    domain: DomainArg,
    config: ConfigOption = None,
    node: Annotated[str | None, typer.Option("--node", help="New node ('' clears it).")] = None,
    comment: CommentOpt = None,
) -> None:
    """Change a domain's node or comment."""
    changes: dict[str, object] = {}
    with refusals():
        name = rules.domain_name(domain)
        if node is not None:
            changes["node"] = rules.node_name(node)
        if comment is not None:
            changes["comment"] = rules.comment(comment)
        need_change(changes, "--node or --comment")
        on_database(config, lambda dsn: manage.edit_domain(dsn, name, changes))
    typer.echo(f"changed domain {name}")


@app.command("remove")
def remove_cmd(
    domain: DomainArg,
    config: ConfigOption = None,
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade",
            help="Also remove its mailboxes, relays, forwards and transports, in one transaction.",
        ),
    ] = False,
) -> None:
    """Remove a domain; refused while it has mailboxes, relays, forwards or transports."""
    with refusals():
        name = rules.domain_name(domain)
        removed = on_database(config, lambda dsn: manage.remove_domain(dsn, name, cascade))
    others = ", ".join(f"{n} {label}" for label, n in removed.items() if n and label != "domains")
    typer.echo(f"removed domain {name}" + (f" and {others}" if others else ""))
