"""``mxgate explain`` and ``mxgate query``: why an address does what it does."""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated

import typer

from mxgate.app import load_routing, routing_policy
from mxgate.cli.common import EXIT_USAGE, ConfigOption, fail, settings
from mxgate.cli.srs import context as srs_context
from mxgate.core.address import AddressError, parse_path
from mxgate.core.explain import to_json_dict, to_text
from mxgate.core.policy import decide_recipient
from mxgate.core.query import MAPS, query


def explain(
    address: Annotated[str, typer.Argument(help="The recipient, as given in RCPT TO.")],
    config: ConfigOption = None,
    client: Annotated[
        str, typer.Option("--client", help="SMTP client IP address (default: from the internet).")
    ] = "192.0.2.1",
    sender: Annotated[str, typer.Option("--sender", help="MAIL FROM address.")] = "",
    smtputf8: Annotated[
        bool, typer.Option("--smtputf8", help="As if MAIL FROM carried SMTPUTF8.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """The full decision for one recipient: reply, expansion, route of each final recipient."""
    try:
        client = str(ipaddress.ip_address(client))
    except ValueError:
        fail(f"--client {client!r}: not an IP address", EXIT_USAGE)
    # As in MAIL FROM: <> is the null sender, and the brackets are optional.
    sender = sender.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    if sender and isinstance(parse_path(sender, smtputf8=True), AddressError):
        fail(f"--sender {sender!r}: not a mail address", EXIT_USAGE)
    loaded = settings(config)
    snapshot = load_routing(loaded.config)
    decision = decide_recipient(
        snapshot.data,
        routing_policy(loaded.config),
        address,
        client_ip=client,
        sender=sender,
        smtputf8=smtputf8,
        explain=True,
        srs=srs_context(loaded),
    )
    if as_json:
        document = to_json_dict(decision)
        document["snapshot"] = snapshot.source
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        typer.echo(f"routing data: {snapshot.source}; client {client}")
        typer.echo(to_text(decision))


def query_cmd(
    map_name: Annotated[str, typer.Argument(metavar="MAP", help=f"One of: {', '.join(MAPS)}.")],
    key: Annotated[str, typer.Argument(help="The lookup key, as postmap -q takes it.")],
    config: ConfigOption = None,
) -> None:
    """Answer like ``postmap -q KEY pgsql:MAP.cf`` (corrected where the tutorial is wrong).

    Prints the value and exits 0, or prints nothing and exits 1 when not found.
    """
    if map_name not in MAPS:
        fail(f"unknown map {map_name!r}; the maps are: {', '.join(MAPS)}", EXIT_USAGE)
    loaded = settings(config)
    snapshot = load_routing(loaded.config)
    if snapshot.data is None:
        fail(f"no routing data: {snapshot.source}")
    answer = query(
        snapshot.data,
        map_name,
        key,
        node_name=loaded.config.node_name,
        node_fallback_to_gateway=loaded.config.node_fallback_to_gateway,
    )
    if answer is None:
        raise typer.Exit(1)
    typer.echo(answer)
