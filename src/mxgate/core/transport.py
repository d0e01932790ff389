"""Transports: Postfix ``transport:nexthop`` strings and the transport(5) lookup.

Owns the syntax of the ``transport.transport`` column, of ``default_transport``
and of ``relayhost`` (parsed into a ``Route``), the order of transport(5) keys
for a recipient, and the role rule of SPEC section 1 (which ``node`` rows a
gateway or a node reads).

Never raises on a bad string: it is a ``TransportError`` value, which the
router turns into "no route" (defer, 451 at RCPT) and ``mxgate check``
reports. Never resolves names (MX or A lookups happen at delivery time, from
``host`` and ``mx_lookup``) and never does I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address

from mxgate.core.address import Address, split_extension

SMTP_PORT = 25  # the well-known SMTP port (RFC 5321 4.5.4.2)
LMTP_PORT = 24  # RFC 2033 5: LMTP over TCP must not use port 25; Postfix uses 24

# Service names Postfix resolves through /etc/services; the few that matter
# for mail, so that "smtp:[host]:submission" parses without I/O.
_SERVICES = {"smtp": 25, "lmtp": 24, "submission": 587, "smtps": 465, "submissions": 465}

_HOSTNAME = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")

# transport(5) / error(8): the text of "error:" with no nexthop.
DEFAULT_ERROR_TEXT = "Address is undeliverable"
DEFAULT_RETRY_TEXT = "Try again later"


class RouteKind(enum.Enum):
    SMTP = "smtp"  # also "relay", which master.cf runs as the same smtp(8)
    LMTP = "lmtp"
    ERROR = "error"  # bounce with the text (5.0.0 unless the text says)
    DISCARD = "discard"  # accept and drop, logged
    RETRY = "retry"  # defer with the text (4.0.0 unless the text says)


_NAMES = {
    "smtp": RouteKind.SMTP,
    "relay": RouteKind.SMTP,
    "lmtp": RouteKind.LMTP,
    "error": RouteKind.ERROR,
    "discard": RouteKind.DISCARD,
    "retry": RouteKind.RETRY,
}


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how one final recipient is delivered.

    transport: the transport name as written ('smtp', 'relay', 'lmtp', ...)
    host:      next-hop host name or IP address ('' until ``for_domain`` fills
               in the recipient domain for an empty nexthop)
    port:      TCP port (0 for unix sockets and non-delivering kinds)
    mx_lookup: look up MX records of ``host`` (smtp without brackets)
    unix_path: LMTP over a UNIX socket ('' otherwise)
    text:      the text of error:/retry:/discard:
    enhanced:  the RFC 3463 status of error:/retry: ('' otherwise)
    filled:    ``host`` is the recipient domain that ``for_domain`` put in
               for an empty nexthop, not a host named by a row or setting
    """

    kind: RouteKind
    transport: str
    host: str = ""
    port: int = 0
    mx_lookup: bool = False
    unix_path: str = ""
    text: str = ""
    enhanced: str = ""
    filled: bool = False

    # Written out: the generated one runs interpreted and hashes ``kind``
    # through Enum.__hash__, twice per delivery (the queue manager groups
    # recipients by route; mxgate.native). Equal routes hash alike whatever
    # fields are left out here; leaving one out only makes the hash weaker.
    def __hash__(self) -> int:
        return hash((self.kind._value_, self.transport, self.host, self.port, self.unix_path))

    @property
    def delivers(self) -> bool:
        """A route that takes the message (smtp, lmtp, discard)."""
        return self.kind in (RouteKind.SMTP, RouteKind.LMTP, RouteKind.DISCARD)

    @property
    def nexthop(self) -> str:
        """The next hop in transport(5) notation: ``[192.0.2.1]:25`` (no MX
        lookup), ``example.com`` (MX lookup), ``unix:/path``, or the text."""
        if self.kind in (RouteKind.ERROR, RouteKind.RETRY):
            return f"{self.enhanced} {self.text}"
        if self.kind is RouteKind.DISCARD:
            return self.text
        if self.unix_path:
            return f"unix:{self.unix_path}"
        host = self.host or "$domain"
        if self.mx_lookup:
            return host if self.port == SMTP_PORT else f"{host}:{self.port}"
        return f"[{host}]:{self.port}"

    def metric_label(self, domain: str) -> str:
        """The next hop as a metrics label: ``transport:nexthop``, except that
        a next hop that is the recipient's own domain (MX routing, one per
        domain: unbounded) reads ``transport:$domain``, and error:, retry:
        and discard: go without their texts."""
        if self.kind in (RouteKind.ERROR, RouteKind.RETRY, RouteKind.DISCARD):
            return f"{self.kind.value}:"
        if self.filled:
            return f"{self.transport}:$domain"
        return f"{self.transport}:{self.nexthop}"

    def for_domain(self, domain: str) -> Route:
        """Fill an empty nexthop with the recipient domain (transport(5)),
        an address literal being a host without MX lookup."""
        if self.host or self.unix_path or self.kind not in (RouteKind.SMTP, RouteKind.LMTP):
            return self
        mx = self.mx_lookup
        if domain.startswith("["):
            domain = domain[1:-1]
            if domain.startswith("ipv6:"):
                domain = domain[5:]
            mx = False
        # Built directly: dataclasses.replace costs more than the whole lookup.
        return Route(self.kind, self.transport, domain, self.port, mx, filled=True)


Endpoint = tuple[str, int]
"""An address (in ``ipaddress`` compressed form) and a TCP port."""


def own_endpoint(ip: str, port: int) -> Endpoint:
    """``ip`` and ``port`` in the form ``myself`` sets hold (IPv6 written
    alike however it was written; an IPv4-mapped one as its IPv4 address)."""
    address = ip_address(ip)
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return (str(address.ipv4_mapped), port)
    return (address.compressed, port)


@dataclass(frozen=True, slots=True)
class TransportError:
    """An unusable transport string and why."""

    value: str
    reason: str


@lru_cache(maxsize=65536)
def parse_transport(value: str) -> Route | TransportError:
    """Parse ``transport:nexthop`` as transport(5) defines it.

    The transport name ends at the first ':' (so ``smtp:[2001:db8::1]:25``
    works). An empty name (``:[host]``) keeps the default channel, smtp for
    our domains; an empty nexthop means the recipient domain, with MX lookup
    for smtp. Pure, so cached: rows repeat across recipients.
    """
    text = value.strip()
    if not text:
        return TransportError(value, "empty transport")
    name, _, nexthop = text.partition(":")
    name = name.lower() or "smtp"
    kind = _NAMES.get(name)
    if kind is None:
        return TransportError(value, f"unsupported transport {name!r}")
    if kind is RouteKind.ERROR:
        status, message = _split_status(nexthop, "5")
        return Route(kind, name, text=message or DEFAULT_ERROR_TEXT, enhanced=status or "5.0.0")
    if kind is RouteKind.RETRY:
        status, message = _split_status(nexthop, "4")
        return Route(kind, name, text=message or DEFAULT_RETRY_TEXT, enhanced=status or "4.0.0")
    if kind is RouteKind.DISCARD:
        return Route(kind, name, text=nexthop.strip())
    return _parse_nexthop(value, kind, name, nexthop)


def parse_relayhost(
    value: str, kind: RouteKind = RouteKind.SMTP, transport: str = "smtp"
) -> Route | TransportError:
    """``relayhost`` as Postfix takes it: a nexthop alone (``[host]:port``,
    ``host:port``, ``host``), for the transport of default_transport."""
    text = value.strip()
    if not text:
        return TransportError(value, "empty relayhost")
    if kind not in (RouteKind.SMTP, RouteKind.LMTP):
        return TransportError(value, f"relayhost does not apply to {transport}:")
    return _parse_nexthop(value, kind, transport, text)


def _split_status(text: str, klass: str) -> tuple[str, str]:
    """``5.1.1 text`` -> ('5.1.1', 'text'). The class is forced to what the
    transport does (error bounces, retry defers), as Postfix's dsn_split."""
    text = text.strip()
    m = _STATUS.match(text)
    if m is None:
        return "", text
    return f"{klass}.{m.group(2)}.{m.group(3)}", text[m.end() :].strip()


def _parse_nexthop(value: str, kind: RouteKind, name: str, nexthop: str) -> Route | TransportError:
    default_port = LMTP_PORT if kind is RouteKind.LMTP else SMTP_PORT
    # LMTP never looks up MX records (lmtp(8)); smtp does unless bracketed.
    mx = kind is RouteKind.SMTP
    if any(c.isspace() for c in nexthop):
        return TransportError(value, "blank inside nexthop")
    if nexthop.startswith("unix:"):
        if kind is not RouteKind.LMTP:
            return TransportError(value, "unix: sockets are for lmtp only")
        path = nexthop[5:]
        if not path:
            return TransportError(value, "empty unix socket path")
        return Route(kind, name, unix_path=path)
    if nexthop.startswith("inet:"):
        nexthop = nexthop[5:]
    if not nexthop:
        return Route(kind, name, port=default_port, mx_lookup=mx)
    if nexthop.startswith("["):
        close = nexthop.find("]")
        if close < 0:
            return TransportError(value, "missing ']'")
        host = _bracketed_host(nexthop[1:close])
        rest = nexthop[close + 1 :]
        if host is None:
            return TransportError(value, "bad host inside brackets")
        mx = False
    else:
        host_text, sep, port_text = nexthop.rpartition(":")
        host_text, rest = (host_text, sep + port_text) if sep else (port_text, "")
        host = host_text.lower()
        if ":" in host:
            return TransportError(value, "an IPv6 address needs brackets: [2001:db8::1]")
        if _is_ipv4(host):
            # An MX lookup of a dotted quad means nothing: deliver to the IP.
            mx = False
        elif not _valid_hostname(host):
            return TransportError(value, f"bad host name {host_text!r}")
    port = default_port
    if rest:
        if not rest.startswith(":"):
            return TransportError(value, "text after ']'")
        parsed_port = _port(rest[1:])
        if parsed_port is None:
            return TransportError(value, f"bad port {rest[1:]!r}")
        port = parsed_port
    return Route(kind, name, host=host, port=port, mx_lookup=mx)


def _bracketed_host(inner: str) -> str | None:
    inner = inner.lower()
    if inner.startswith("ipv6:"):
        inner = inner[5:]
        if not inner:
            return None
    try:
        if ":" in inner:
            if "%" in inner:
                return None
            return IPv6Address(inner).compressed
        if _is_ipv4(inner):
            return str(IPv4Address(inner))
    except ValueError:
        return None
    return inner if _valid_hostname(inner) else None


def _valid_hostname(host: str) -> bool:
    # A numeric top label would be a mistyped IP address (Postfix's
    # valid_hostname refuses it for the same reason).
    return _HOSTNAME.fullmatch(host) is not None and not host.rpartition(".")[2].isdigit()


def _is_ipv4(host: str) -> bool:
    try:
        IPv4Address(host)
    except ValueError:
        return False
    return True


def _port(text: str) -> int | None:
    if text.isdigit() and text.isascii():
        port = int(text)
        return port if 0 < port < 65536 else None
    return _SERVICES.get(text.lower())


# --- transport(5) lookup ----------------------------------------------------


def transport_keys(address: Address, delimiter: str) -> list[str]:
    """Keys in transport(5) order: full address, address without extension,
    domain, then each parent as ``.parent`` (transport_maps is not in
    parent_domain_matches_subdomains, so a bare parent does not match its
    subdomains), then ``*``."""
    domain = address.domain
    keys = [address.key]
    if not address.quoted:
        split = split_extension(address.local.lower(), delimiter)
        if split is not None:
            keys.append(f"{split[0]}@{domain}")
    keys.append(domain)
    if not domain.startswith("["):
        dot = domain.find(".", 1)
        if dot > 0:
            keys.extend(_parent_keys(domain[dot:]))
    keys.append("*")
    return keys


@lru_cache(maxsize=4096)
def _parent_keys(parent: str) -> tuple[str, ...]:
    """``.b.example`` -> (``.b.example``, ``.example``). Cached: many
    domains share their parents."""
    keys = [parent]
    dot = parent.find(".", 1)
    while dot > 0:
        keys.append(parent[dot:])
        dot = parent.find(".", dot + 1)
    return tuple(keys)


@dataclass(frozen=True, slots=True, init=False)
class TransportRow:
    """The transport row that applies: its key, node and raw value."""

    key: str
    node: str
    value: str

    def __init__(self, key: str, node: str, value: str) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "node", node)
        object.__setattr__(self, "value", value)


def find_transport_row(
    transports: Mapping[str, Mapping[str, str]],
    keys: list[str],
    node_name: str,
    fallback_to_gateway: bool,
) -> TransportRow | None:
    """The first row for ``keys`` this role reads (SPEC section 1).

    A gateway (node_name '') reads rows with node ''. A node reads its own
    rows over every key first; only when none applies, and only when
    configured, the gateway rows: a node's own ``*`` must beat a gateway row
    for the domain, which points at the node itself. A row whose transport
    column is empty counts as absent, as in Postfix's SQL maps.
    """
    nodes = (node_name, "") if node_name and fallback_to_gateway else (node_name,)
    for node in nodes:
        for key in keys:
            rows = transports.get(key)
            if rows is None:
                continue
            value = rows.get(node)
            if value is not None and value.strip():
                return TransportRow(key, node, value)
    return None


def role_value(rows: Mapping[str, str] | None, node_name: str, fallback: bool) -> str | None:
    """The value of one key's rows for this role, or None (empty = absent)."""
    if rows is None:
        return None
    value = rows.get(node_name)
    if (value is None or not value.strip()) and node_name and fallback:
        value = rows.get("")
    if value is None or not value.strip():
        return None
    return value
