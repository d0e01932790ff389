"""``mxgate serve``: run the gateway."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console
from rich.table import Table

from mxgate.app import database
from mxgate.cli.common import ConfigOption, fail, settings
from mxgate.core.snapshot import RoutingData
from mxgate.directory import DirectoryError, load_snapshot


def routing_table(data: RoutingData) -> Table:
    table = Table(title=f"Routing data (change-log version {data.version})")
    table.add_column("table")
    table.add_column("key")
    table.add_column("value")
    for domain, node in sorted(data.domains.items()):
        table.add_row("domain", domain, f"node={node or ''}")
    for email, node in sorted(data.mailboxes.items()):
        table.add_row("mailbox", email, f"node={node}")
    for source, node in sorted(data.relays.items()):
        table.add_row("relay", source, f"node={node}")
    for source, destinations in sorted(data.forwards.items()):
        for destination in destinations:
            table.add_row("forward", source, f"-> {destination}")
    for key, by_node in sorted(data.transports.items()):
        for node, transport in sorted(by_node.items()):
            table.add_row("transport", key, f"{transport} (node={node!r})")
    return table


def serve(config: ConfigOption = None) -> None:
    """Run the gateway (embedded database with example data when none is configured)."""
    loaded = settings(config)
    with database(loaded.config, prepare=True) as dsn:
        try:
            data = asyncio.run(load_snapshot(dsn))
        except DirectoryError as exc:
            fail(f"cannot reach the database: {exc}")
    Console().print(routing_table(data))
    typer.echo(
        "mxgate: the SMTP server is not built yet (issue #4): this command loaded and "
        "printed the routing data above and stops here; nothing is listening.",
        err=True,
    )
