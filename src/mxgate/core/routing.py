"""The routing policy and the route of one final recipient (SPEC section 5).

Owns ``RoutingPolicy`` (the settings the routing decision reads, built once
by the application from the configuration) and ``resolve_route``: a final
recipient in one of our domains takes the transport row that applies to it
for this role; any other takes ``default_transport``, whose nexthop, when
empty, is ``relayhost`` when set, else the recipient domain (the precedence
postconf(5) documents for default_transport and relayhost).

Never raises on bad data (an unparsable row is "no route", with the reason),
never resolves DNS, never does I/O. The delivery scheduler calls
``resolve_route`` again at each retry of a deferred recipient, so a transport
row added later takes effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from mxgate.core.address import Address, parse_path
from mxgate.core.snapshot import RoutingData
from mxgate.core.transport import (
    Route,
    RouteKind,
    TransportError,
    find_transport_row,
    parse_relayhost,
    parse_transport,
    transport_keys,
)

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """What the routing decision needs from the configuration.

    myhostname:      our own host name (``postmaster@myhostname``)
    mynetworks:      clients that may relay to any domain
    local_addresses: the IP addresses we listen on (``postmaster@[ip]``)
    postmaster:      where mail to postmaster goes when no row claims it
    recipient_delimiter: the extension delimiter(s); '' disables extensions
    default_transport:   transport for domains that are not ours
    relayhost:       nexthop for them when default_transport has none
    node_name:       '' = gateway role, else the node's name (SPEC section 1)
    node_fallback_to_gateway: a node also reads gateway transport rows
    virtual_alias_recursion_limit / virtual_alias_expansion_limit: as Postfix
    smtpd_recipient_limit: recipients per message (0 = unlimited)
    """

    myhostname: str
    mynetworks: tuple[IPNetwork, ...]
    local_addresses: tuple[IPAddress, ...]
    postmaster: str
    recipient_delimiter: str = "+"
    default_transport: str = "smtp:"
    relayhost: str = ""
    node_name: str = ""
    node_fallback_to_gateway: bool = False
    virtual_alias_recursion_limit: int = 1000
    virtual_alias_expansion_limit: int = 1000
    smtpd_recipient_limit: int = 1000

    def is_trusted(self, client: IPAddress | str | None) -> bool:
        """Is the client in ``mynetworks``? (``in_networks``)"""
        return in_networks(client, self.mynetworks)

    def is_own_address(self, ip: IPAddress) -> bool:
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip in self.local_addresses


def in_networks(client: IPAddress | str | None, networks: tuple[IPNetwork, ...]) -> bool:
    """Is the client in one of ``networks``? An unknown or unparsable client
    is not. An IPv4-mapped IPv6 client counts as its IPv4 address."""
    ip = _as_ip(client)
    if ip is None:
        return False
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def _as_ip(client: IPAddress | str | None) -> IPAddress | None:
    if client is None or isinstance(client, IPv4Address | IPv6Address):
        return client
    try:
        return ip_address(client.strip().strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, init=False)
class Resolution:
    """The route of one final recipient, or why there is none.

    source:  the row or setting that decided, in words
    problem: why there is no route ('' when ``route`` is set)
    """

    route: Route | None
    source: str
    problem: str = ""

    def __init__(self, route: Route | None, source: str, problem: str = "") -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "problem", problem)


def resolve_route(data: RoutingData, policy: RoutingPolicy, recipient: Address | str) -> Resolution:
    """SPEC section 5 for one final recipient (an ``Address`` or its text)."""
    if isinstance(recipient, str):
        parsed = parse_path(recipient, smtputf8=True)
        if not isinstance(parsed, Address) or not parsed.is_qualified:
            return Resolution(None, "", f"{recipient!r} is not a valid address")
        recipient = parsed
    domain = recipient.domain
    if domain not in data.domains:
        return _default(policy.default_transport, policy.relayhost, domain)
    keys = transport_keys(recipient, policy.recipient_delimiter)
    row = find_transport_row(
        data.transports, keys, policy.node_name, policy.node_fallback_to_gateway
    )
    if row is None:
        role = f"node {policy.node_name!r}" if policy.node_name else "the gateway"
        return Resolution(
            None,
            f"transport keys tried for {role}: {', '.join(keys)}",
            f"no transport row for {recipient.key}",
        )
    source = f"transport row {row.key} (node {row.node!r}) -> {row.value}"
    route = parse_transport(row.value)
    if isinstance(route, TransportError):
        return Resolution(None, source, f"transport row {row.key} is invalid: {route.reason}")
    return Resolution(route.for_domain(domain), source)


@lru_cache(maxsize=1024)
def default_route(default_transport: str, relayhost: str) -> tuple[Route | None, str, str]:
    """(route with empty host = recipient domain, source, problem) for
    domains not ours. ``source`` starts with the name of the setting that
    gave the route: ``default_transport`` or ``relayhost``."""
    route = parse_transport(default_transport)
    if isinstance(route, TransportError):
        return None, "", f"default_transport {default_transport!r} is invalid: {route.reason}"
    source = f"default_transport {default_transport} (not one of our domains)"
    no_nexthop = route.kind in (RouteKind.SMTP, RouteKind.LMTP) and not (
        route.host or route.unix_path
    )
    if no_nexthop and relayhost.strip():
        via = parse_relayhost(relayhost, route.kind, route.transport)
        if isinstance(via, TransportError):
            return None, source, f"relayhost {relayhost!r} is invalid: {via.reason}"
        return via, f"relayhost {relayhost} (not one of our domains)", ""
    return route, source, ""


def _default(default_transport: str, relayhost: str, domain: str) -> Resolution:
    route, source, problem = default_route(default_transport, relayhost)
    if route is None:
        return Resolution(None, source, problem)
    return Resolution(route.for_domain(domain), source)
