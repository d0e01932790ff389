"""The value rules of ``mxgate import``: what an address, a domain, a source,
a destination, a transport key or a transport value must look like.

Owns the syntax half of the document's validation (core/transfer.py owns the
shape, types and lengths): ``parse_path`` and ``normalize_domain`` decide, and
a value must be written the way lookups see it, case aside (a U-label domain
or a needlessly quoted local part would never match). Each rule returns the
broken rule in words, or None.

Pure: never does I/O and never raises on a value. The CRUD commands store
values normalised (core/rules.py); an import keeps them as written, so that
an export imports back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mxgate.core.address import AddressError, parse_path
from mxgate.core.address import normalize_domain as _normalize_domain
from mxgate.core.expand import split_destinations
from mxgate.core.transport import TransportError, parse_transport


def _domain_rule(value: str) -> str | None:
    normal = _normalize_domain(value)
    if isinstance(normal, AddressError):
        return f"not a domain name ({normal.detail})"
    if normal != value.lower():
        return f"write the domain as {normal!r} (IDNA A-labels, as lookups see it)"
    return None


# An address that parse_path takes as it is, written as lookups see it (case
# aside): letters, digits and _+- in dot-separated atoms, a domain of LDH
# labels. Most rows are such; they skip parse_path, which accepts them anyway.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)


def _address_rule(value: str) -> str | None:
    if _PLAIN_ADDRESS.fullmatch(value) and value.find("@") <= 64:
        return None
    if value != value.strip() or value.startswith("<"):
        return "write the address without angle brackets or surrounding blanks"
    parsed = parse_path(value, smtputf8=True)
    if isinstance(parsed, AddressError):
        return f"not a valid address ({parsed.detail})"
    if not parsed.domain:
        return "must be a full address, user@domain"
    if parsed.source_route or parsed.literal is not None:
        return "must be user@domain with a domain name (no source route or address literal)"
    canonical = str(parsed)
    if canonical.lower() != value.lower():
        return f"write it as {canonical!r} (the form lookups see)"
    return None


def _source_rule(value: str) -> str | None:
    """A forward or relay source: an address, or ``@domain`` for a catch-all."""
    if value.startswith("@"):
        problem = _domain_rule(value[1:])
        return None if problem is None else f"catch-all @domain: {problem}"
    return _address_rule(value)


def _destination_rule(value: str) -> str | None:
    # An empty destination is allowed (the schema allows it; lookups ignore
    # it and ``mxgate check`` reports it), but every address listed must parse.
    for target in split_destinations(value):
        parsed = parse_path(target, smtputf8=True)
        if isinstance(parsed, AddressError):
            return f"destination {target!r} is not a valid address ({parsed.detail})"
        if not parsed.domain or parsed.source_route:
            return f"destination {target!r} must be a full address, user@domain"
    return None


def _transport_key_rule(value: str) -> str | None:
    """transport(5) keys: ``*``, a domain, ``.parent.domain`` or an address."""
    if value == "*":
        return None
    if "@" in value:
        return _address_rule(value)
    problem = _domain_rule(value[1:] if value.startswith(".") else value)
    return None if problem is None else f"not '*', a domain, .domain or an address: {problem}"


def _transport_rule(value: str) -> str | None:
    if not value.strip():
        return None  # counts as no row at all, as in Postfix's SQL maps
    parsed = parse_transport(value)
    if isinstance(parsed, TransportError):
        return f"not a transport(5) value ({parsed.reason})"
    return None


RULES: dict[tuple[str, str], Callable[[str], str | None]] = {
    ("domain", "domain"): _domain_rule,
    ("forward", "source"): _source_rule,
    ("forward", "destination"): _destination_rule,
    ("relay", "source"): _source_rule,
    ("mailbox", "email"): _address_rule,
    ("transport", "domain"): _transport_key_rule,
    ("transport", "transport"): _transport_rule,
}


def source_domain(source: str) -> str:
    """The domain a forward or relay source belongs to, folded as lookups fold it."""
    domain = source.rpartition("@")[2]
    normal = _normalize_domain(domain)
    return domain.lower() if isinstance(normal, AddressError) else normal
