"""``mxgate query MAP KEY``: the tutorial's ``postmap -q`` tests, answered
from the snapshot, with the tutorial's defects corrected (SPEC section 9).

Owns the emulation of the five pgsql maps of the tutorial's Postfix set-up.
Like ``postmap -q`` each answers one lookup of one key, with no extension
stripping and no recursion: that is smtpd's and cleanup's work, which
``mxgate explain`` shows in full. Keys are folded to lower case (and domains
to A-labels), so rows stored in upper case are found (SPEC section 9).

Never does I/O, never raises on a key (an odd key is simply not found). An
unknown map name is the caller's error: ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable

from mxgate.core.address import AddressError, normalize_domain
from mxgate.core.expand import forward_targets
from mxgate.core.snapshot import GATEWAY_NODE, RoutingData
from mxgate.core.transport import role_value

MAPS = ("transport", "relay_domains", "relay_recipients", "virtual_forward", "virtual_email2email")


def fold_key(key: str) -> str:
    """A key as the snapshot stores it: lower case, domain as A-labels, for
    an address, a domain, a ``.parent`` domain, ``@domain`` or ``*``."""
    key = key.strip()
    local, at, domain = key.rpartition("@")
    if not at:
        local, domain = "", key
    prefix = "." if domain.startswith(".") and not at else ""
    if prefix:
        domain = domain[1:]
    if domain and domain != "*":
        folded = normalize_domain(domain)
        domain = domain.lower() if isinstance(folded, AddressError) else folded
    return f"{local.lower()}{at}{prefix}{domain}"


def query_transport(
    data: RoutingData, key: str, node_name: str = GATEWAY_NODE, fallback: bool = False
) -> str | None:
    """transport_maps. Tutorial: ``SELECT transport FROM transport WHERE
    domain='%s'``, which ignores ``node`` (once gateway and node rows coexist
    it would answer both, comma-joined). Corrected: the row for this role
    (SPEC section 1): node '' for a gateway; a node's own row, else the
    gateway row when ``node_fallback_to_gateway``. An empty transport column
    is not found, as with Postfix's SQL maps."""
    return role_value(data.transports.get(fold_key(key)), node_name, fallback)


def query_relay_domains(data: RoutingData, key: str) -> str | None:
    """relay_domains. Tutorial: a query without a WHERE clause, so every key
    is found and every domain is a relay domain (an open relay). Corrected:
    found only when the key is a row of ``domain``; the answer is the domain,
    as a Postfix domain list lookup returns it."""
    domain = fold_key(key)
    return domain if domain in data.domains else None


def query_relay_recipients(data: RoutingData, key: str) -> str | None:
    """relay_recipient_maps. Tutorial: a query that scans the whole
    ``mailbox`` table for every unknown recipient (about 14 rejections per
    second with 1M mailboxes), with case-sensitive matches. Corrected: 'OK'
    when the key is a known recipient (SPEC section 3): a mailbox, a relay, a
    forward source with a non-empty destination, or an address (or the
    ``@domain`` key itself) of a domain with a forward or relay catch-all."""
    folded = fold_key(key)
    if folded in data.mailboxes or folded in data.relays:
        return "OK"
    rows = data.forwards.get(folded)
    if rows is not None and forward_targets(rows):
        return "OK"
    _, at, domain = folded.rpartition("@")
    if not at or not domain:
        return None
    catch_all = f"@{domain}"
    rows = data.forwards.get(catch_all)
    if (rows is not None and forward_targets(rows)) or catch_all in data.relays:
        return "OK"
    return None


def query_virtual_forward(data: RoutingData, key: str) -> str | None:
    """virtual_alias_maps, forward part. Tutorial: ``... WHERE source='%s'
    OR source='@%d'``, so a specific forward and the catch-all both answer
    and both receive the mail. Corrected: the specific rows win; the
    catch-all answers only when the key has none. The answer is the
    destinations, split on commas and blanks, empty ones dropped, joined with
    ',' as Postfix joins several result rows."""
    folded = fold_key(key)
    rows = data.forwards.get(folded)
    if rows is not None and (targets := forward_targets(rows)):
        return ",".join(targets)
    local, at, domain = folded.rpartition("@")
    if not at or not local or not domain:
        return None
    rows = data.forwards.get(f"@{domain}")
    if rows is not None and (targets := forward_targets(rows)):
        return ",".join(targets)
    return None


def query_virtual_email2email(data: RoutingData, key: str) -> str | None:
    """virtual_alias_maps, identity part. Tutorial: a mailbox ``email`` or a
    ``relay`` source maps to itself (so that a catch-all forward does not
    take it), matched case-sensitively. Corrected: matched case-insensitively;
    a relay catch-all ``@domain`` answers itself (Postfix then keeps the
    local part: the address maps to itself)."""
    folded = fold_key(key)
    if folded in data.mailboxes or folded in data.relays:
        return folded
    return None


def query(
    data: RoutingData,
    map_name: str,
    key: str,
    node_name: str = GATEWAY_NODE,
    node_fallback_to_gateway: bool = False,
) -> str | None:
    """Answer ``postmap -q KEY MAP`` for one of ``MAPS`` (None: not found)."""
    if map_name == "transport":
        return query_transport(data, key, node_name, node_fallback_to_gateway)
    lookups: dict[str, Callable[[RoutingData, str], str | None]] = {
        "relay_domains": query_relay_domains,
        "relay_recipients": query_relay_recipients,
        "virtual_forward": query_virtual_forward,
        "virtual_email2email": query_virtual_email2email,
    }
    lookup = lookups.get(map_name)
    if lookup is None:
        raise ValueError(f"unknown map {map_name!r}: one of {', '.join(MAPS)}")
    return lookup(data, key)
