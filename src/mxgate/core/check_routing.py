"""``mxgate check``, part two: the findings about what the gateway does with the rows.

Owns the findings that use the gateway's own functions: transport values
that do not parse, domains whose mailboxes or relays have no route for the
role, nodes without their transport rows, and the expansion of every
forward source (loops, limits, dead ends, bad destinations, shadowed
sources, empty destinations). Pure.
"""

from __future__ import annotations

from collections import defaultdict

from mxgate.core.address import Address, parse_path
from mxgate.core.check_rows import CheckSettings, Finding, RawRows, Severity, finding
from mxgate.core.expand import FailureKind, forward_targets, split_destinations
from mxgate.core.routing import default_route
from mxgate.core.rules import (
    ExpansionSettings,
    forward_problems,
    route_keys,
    stays_untaken_text,
)
from mxgate.core.snapshot import RoutingData
from mxgate.core.transport import (
    Route,
    RouteKind,
    TransportError,
    find_transport_row,
    own_endpoint,
    parse_transport,
)

# --- transports ---------------------------------------------------------------


def transport_findings(rows: RawRows, settings: CheckSettings) -> list[Finding]:
    """Transport values that do not parse (no route: mail deferred), are
    empty, or send this role's mail back to this gateway."""
    out: list[Finding] = []
    for key, node, value in rows.transports:
        where = f"transport {key} (node {node!r})"
        if not value.strip():
            out.append(
                finding(
                    Severity.WARNING,
                    "empty-transport",
                    "transport",
                    key,
                    f"{where} is empty: it counts as absent, as in Postfix's SQL maps",
                )
            )
            continue
        parsed = parse_transport(value)
        if isinstance(parsed, TransportError):
            out.append(
                finding(
                    Severity.ERROR,
                    "bad-transport",
                    "transport",
                    key,
                    f"{where} value {value!r} does not parse ({parsed.reason}): mail it"
                    " applies to has no route and is refused with 451 at RCPT",
                )
            )
        elif _in_role(node, settings) and _is_myself(parsed, settings):
            out.append(
                finding(
                    Severity.ERROR,
                    "transport-to-myself",
                    "transport",
                    key,
                    f"{where} -> {value} is this gateway ({parsed.host} port {parsed.port}"
                    " is where it takes mail): mail it applies to would loop, and is"
                    " deferred with 4.3.5 'loops back to myself' until the row is mended",
                )
            )
    return out


def settings_findings(settings: CheckSettings) -> list[Finding]:
    """default_transport, or the relayhost it uses, naming this gateway:
    every message to the outside would loop (deferred 4.3.5 at delivery)."""
    route, source, _problem = default_route(settings.default_transport, settings.relayhost)
    name = source.split(" ", 1)[0]
    value = settings.relayhost if name == "relayhost" else settings.default_transport
    out: list[Finding] = []
    if route is not None and route.host and _is_myself(route, settings):
        out.append(
            finding(
                Severity.ERROR,
                "transport-to-myself",
                "settings",
                name,
                f"{name} = {value.strip()} is this gateway ({route.host} port"
                f" {route.port} is where it takes mail): mail to the outside would"
                " loop, and is deferred with 4.3.5 'loops back to myself'",
            )
        )
    return out


def _in_role(node: str, settings: CheckSettings) -> bool:
    """A transport row this role uses."""
    return node == settings.node_name or (settings.node_fallback_to_gateway and node == "")


def _is_myself(route: Route, settings: CheckSettings) -> bool:
    """An SMTP next hop at an address and port this gateway takes mail on
    (host names need DNS: the delivery finds those, nexthop.py)."""
    if route.kind is not RouteKind.SMTP or not settings.myself:
        return False
    try:
        return own_endpoint(route.host, route.port) in settings.myself
    except ValueError:
        return False  # a host name


class _Routes:
    """Whether a key has a transport row for a role; the domain part of the
    answer is computed once per (domain, node), since a million mailboxes
    share a few thousand domains."""

    def __init__(self, data: RoutingData) -> None:
        self.transports = data.transports
        self.domains: dict[tuple[str, str, bool], bool] = {}

    def routed(self, key: str, node: str, fallback: bool) -> bool:
        domain = key.rpartition("@")[2]
        slot = (domain, node, fallback)
        found = self.domains.get(slot)
        if found is None:
            keys = route_keys("@" + domain)
            found = find_transport_row(self.transports, keys, node, fallback) is not None
            self.domains[slot] = found
        if found or key.startswith("@"):
            return found
        # An address row of this role would come before the domain's rows.
        return find_transport_row(self.transports, [key], node, fallback) is not None


def route_findings(data: RoutingData, settings: CheckSettings) -> list[Finding]:
    """Domains whose mailboxes or relays have no transport row for this role:
    their mail is refused with 451 4.3.0 (no route) at RCPT."""
    node, fallback = settings.node_name, settings.node_fallback_to_gateway
    role = f"node {node!r}" if node else "the gateways (node '')"
    routes = _Routes(data)
    unrouted: dict[str, list[str]] = defaultdict(list)
    for keys in (data.mailboxes, data.relays):
        for key in keys:
            domain = key.rpartition("@")[2]
            if domain in data.domains and not routes.routed(key, node, fallback):
                unrouted[domain].append(key)
    out: list[Finding] = []
    for domain, addresses in unrouted.items():
        example = ", ".join(sorted(addresses)[:3]) + (", ..." if len(addresses) > 3 else "")
        out.append(
            finding(
                Severity.ERROR,
                "no-transport",
                "domain",
                domain,
                f"{domain}: {len(addresses)} mailbox/relay address(es) ({example}) have no"
                f" transport row for {role}: their mail is refused with 451 4.3.0 (no route);"
                f" add one: mxgate transport add {domain} smtp:[host]",
            )
        )
    return out


def node_findings(data: RoutingData) -> list[Finding]:
    """Mailboxes whose node has no transport row of its own for them (what
    an mxgate in the node role on that node would route by)."""
    nodes_with_rows = {n for rows in data.transports.values() for n in rows if n}
    routes = _Routes(data)
    missing: dict[tuple[str, str], int] = defaultdict(int)
    for email, node in data.mailboxes.items():
        domain = email.rpartition("@")[2]
        if node and domain in data.domains and not routes.routed(email, node, False):
            missing[(node, domain)] += 1
    out: list[Finding] = []
    told: set[str] = set()
    for (node, domain), count in sorted(missing.items()):
        if node in nodes_with_rows:
            out.append(
                finding(
                    Severity.WARNING,
                    "node-without-transport",
                    "mailbox",
                    domain,
                    f"{count} mailbox(es) of {domain} are on node {node!r}, which has transport"
                    f" rows but none for them: an mxgate in the node role there has no route"
                    f" (mxgate transport add {domain} lmtp:... --node {node})",
                )
            )
        elif node not in told:
            told.add(node)
            out.append(
                finding(
                    Severity.INFO,
                    "node-without-transport",
                    "mailbox",
                    node,
                    f"node {node!r} has mailboxes but no transport rows at all: fine unless"
                    f" {node} runs mxgate in the node role",
                )
            )
    return out


# --- forwards -----------------------------------------------------------------


def forward_findings(
    rows: RawRows, data: RoutingData, settings: ExpansionSettings
) -> list[Finding]:
    """Empty destinations, shadowed forwards, and what the expansion of each
    forward source meets: loops, limits, dead ends and bad destinations."""
    out: list[Finding] = []
    for raw, destination in rows.forwards:
        if not split_destinations(destination):
            out.append(
                finding(
                    Severity.WARNING,
                    "empty-destination",
                    "forward",
                    raw,
                    f"forward {raw} has a row with an empty destination {destination!r}:"
                    " it is ignored",
                )
            )
    seen_loops: set[frozenset[str]] = set()
    seen: set[tuple[str, str]] = set()
    for key in sorted(data.forwards):
        if key.rpartition("@")[2] not in data.domains:
            continue  # outside_findings reports it
        shadow = "mailbox" if key in data.mailboxes else "relay" if key in data.relays else None
        if shadow is not None:
            out.append(
                finding(
                    Severity.WARNING,
                    "forward-shadowed",
                    "forward",
                    key,
                    f"forward {key} is never used: a {shadow} row for the same address wins"
                    " (SPEC section 4 step 1)",
                )
            )
            continue
        if not forward_targets(data.forwards[key]):
            continue
        failures, untaken = forward_problems(data, key, settings)
        for recipient in untaken:
            if ("stays", recipient) in seen:
                continue
            seen.add(("stays", recipient))
            out.append(
                finding(
                    Severity.WARNING,
                    "forward-to-itself",
                    "forward",
                    key,
                    f"forward {key}: {stays_untaken_text(recipient)} (add a mailbox or relay"
                    " row for it, or drop the forward row that names it)",
                )
            )
        for failure in failures:
            if failure.kind is FailureKind.LOOP:
                members = frozenset(failure.reason.partition(": ")[2].split(" -> "))
                if members in seen_loops:
                    continue
                seen_loops.add(members)
                out.append(
                    finding(
                        Severity.ERROR,
                        "forward-loop",
                        "forward",
                        key,
                        f"{failure.reason}: mail to {key} through it is refused or bounced"
                        " with 5.4.6",
                    )
                )
                continue
            ident = (failure.kind.value, failure.recipient)
            if ident in seen:
                continue
            seen.add(ident)
            if failure.kind is FailureKind.DEAD_END:
                parsed = parse_path(failure.recipient, smtputf8=True)
                bad = not isinstance(parsed, Address) or not parsed.is_qualified
                out.append(
                    finding(
                        Severity.ERROR,
                        "bad-destination" if bad else "dead-end",
                        "forward",
                        key,
                        f"forward {key}: {failure.reason}: mail through it bounces"
                        " (5.1.1), or is refused at RCPT when nothing else is deliverable",
                    )
                )
            else:
                out.append(
                    finding(
                        Severity.ERROR,
                        "forward-limit",
                        "forward",
                        key,
                        f"forward {key}: {failure.reason}: mail through it is refused or"
                        " bounced with 5.4.6",
                    )
                )
    return out
