"""What an operator may write into the five tables, as pure functions.

Owns the tutorial's rules for ``mxgate domain|mailbox|forward|relay|transport``
edits that need no database: the normal form of every key (lower case, IDNA
A-labels, canonical quoting; ``@domain`` for a catch-all), the column widths
of migration 0001, node names, comments, quota sizes, ``*`` glob patterns,
and the vetting of new forward rows on a snapshot (loops, limits, dead ends,
shadowed sources) with the expansion the gateway itself runs.

Every refusal is a ``Refusal`` whose message names the offending value and
the rule. Never does I/O; the rules that need the current rows (is this
domain ours, does the row exist) are checked by the directory layer in the
transaction that writes.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass

from mxgate.core.address import Address, AddressError, normalize_domain, parse_path
from mxgate.core.expand import (
    STAYS,
    Expansion,
    Failure,
    FailureKind,
    expand,
    forward_targets,
    taken_as_itself,
)
from mxgate.core.snapshot import RoutingData
from mxgate.core.transport import TransportError, parse_transport

# Column widths of migration 0001 (RFC 5321 4.5.3.1 for domains and addresses).
DOMAIN_WIDTH = 255
ADDRESS_WIDTH = 254
NODE_WIDTH = 50
COMMENT_WIDTH = 500
TRANSPORT_WIDTH = 255
PASSWORD_WIDTH = 255
QUOTA_MAX = 2**63 - 1  # bigint

_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_QUOTA = re.compile(r"(\d+)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class Refusal(ValueError):
    """An edit the rules forbid; the message says which value and which rule."""


def domain_name(text: str) -> str:
    """A domain as stored: lower-case A-labels (``bücher.example`` becomes
    ``xn--bcher-kva.example``)."""
    value = text.strip()
    if value.startswith("["):
        raise Refusal(f"{text!r}: an address literal is not a domain name")
    domain = normalize_domain(value)
    if isinstance(domain, AddressError):
        raise Refusal(f"{text!r} is not a domain name ({domain.detail})")
    for label in domain.split("."):
        if label.startswith("xn--"):
            # An A-label must decode (punycode) and encode back to itself:
            # no mail client would ever send mail to one that does not.
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError:
                raise Refusal(f"{text!r}: {label!r} is not a valid IDNA A-label") from None
    return domain


def _address(text: str, what: str) -> Address:
    parsed = parse_path(text.strip(), smtputf8=True)
    if isinstance(parsed, AddressError):
        raise Refusal(f"{what} {text!r} is not an address ({parsed.detail})")
    if parsed.is_null or not parsed.is_qualified:
        raise Refusal(f"{what} {text!r} is not a fully-qualified address (user@domain)")
    if parsed.has_source_route:
        raise Refusal(f"{what} {text!r} has a source route; write the address alone")
    return parsed


def mailbox_address(text: str, what: str = "address") -> str:
    """An address of one of our domains as stored: the lookup key, lower case.

    Refused: address literals and local parts with ``@``, ``%`` or ``!``,
    which the gateway refuses at RCPT whatever the rows say (SPEC section 3),
    so such a row could never receive mail.
    """
    address = _address(text, what)
    if address.is_literal:
        raise Refusal(f"{what} {text!r}: an address literal [ip] is never one of our domains")
    if address.routing_chars:
        raise Refusal(
            f"{what} {text!r}: a local part with '@', '%' or '!' is refused at RCPT"
            " (relay access denied), so this row could never receive mail"
        )
    return _width(address.key, ADDRESS_WIDTH, what)


def source(text: str, what: str = "source") -> str:
    """A forward or relay source: ``user@domain``, or ``@domain`` (catch-all)."""
    value = text.strip()
    if value.startswith("@") and value.count("@") == 1 and ":" not in value:
        return _width("@" + domain_name(value[1:]), ADDRESS_WIDTH, what)
    return mailbox_address(value, what)


def source_domain(key: str) -> str:
    """The domain of a stored source or address (``@d`` gives ``d``)."""
    return key.rpartition("@")[2]


def is_catch_all(key: str) -> bool:
    return key.startswith("@")


def route_keys(key: str) -> list[str]:
    """The transport(5) keys that route mail for a stored key: the address
    (when not a catch-all), its domain, each parent as ``.parent``, ``*``."""
    domain = source_domain(key)
    labels = domain.split(".")
    keys = [] if is_catch_all(key) else [key]
    keys.append(domain)
    keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    keys.append("*")
    return keys


def destination(text: str, ours: Container[str]) -> str:
    """A forward destination as stored: the domain as an A-label, and the
    local part lower case when the domain is one of ours (``ours``). Outside
    our domains the local part keeps its case: it belongs to someone else's
    server, and the gateway hands it on as the row wrote it (SPEC section 4)."""
    address = _address(text, "destination")
    key = address.key if address.domain in ours else str(address)
    return _width(key, ADDRESS_WIDTH, "destination")


def transport_key(text: str) -> str:
    """A ``transport.domain`` key: a domain, ``.parent.domain`` (its
    subdomains), an address, or ``*`` (everything else)."""
    value = text.strip()
    if value == "*":
        return value
    if value.startswith("."):
        return "." + domain_name(value[1:])
    if "@" in value:
        return mailbox_address(value, "transport key")
    return domain_name(value)


def transport_value(text: str) -> str:
    """A ``transport.transport`` value that parses (``smtp:[host]:port``, ...)."""
    value = text.strip()
    parsed = parse_transport(value)
    if isinstance(parsed, TransportError):
        raise Refusal(
            f"transport {text!r} does not parse ({parsed.reason}); expected e.g."
            " smtp:[host]:port, smtp:host, lmtp:unix:/path, error:text, retry:text, discard:"
        )
    return _width(value, TRANSPORT_WIDTH, "transport")


def node_name(text: str, what: str = "node") -> str:
    """A node name (the ``node`` column): letters, digits, '.', '_' and '-'."""
    value = text.strip()
    if value and not _NODE.fullmatch(value):
        raise Refusal(
            f"{what} {text!r}: a node name is letters, digits, '.', '_' and '-',"
            " and it must match the node's node_name setting exactly"
        )
    return _width(value, NODE_WIDTH, what)


def comment(text: str | None) -> str | None:
    """A comment; '' clears it (NULL)."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    # One line of printable text: listings print it raw, where a newline would
    # break the one-row-per-line output and ESC could drive the terminal.
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise Refusal(f"comment {value!r}: control characters (newlines, tabs, ESC) are refused")
    return _width(value, COMMENT_WIDTH, "comment")


def quota(text: str) -> int:
    """Bytes from ``10485760``, ``10M``, ``1G``, ``512KiB`` (binary units)."""
    match = _QUOTA.fullmatch(text.strip())
    if match is None:
        raise Refusal(f"quota {text!r}: expected bytes, or a number with K, M, G or T")
    value = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if value > QUOTA_MAX:
        raise Refusal(f"quota {text!r} is larger than the column can hold")
    return value


def like_pattern(glob: str) -> str:
    """A case-insensitive ``*``/``?`` glob as a LIKE pattern (escape '\\'),
    for ``lower(column) LIKE $n``."""
    out: list[str] = []
    for c in glob.lower():
        if c in "\\%_":
            out.append("\\" + c)
        elif c == "*":
            out.append("%")
        elif c == "?":
            out.append("_")
        else:
            out.append(c)
    return "".join(out)


def _width(value: str, width: int, what: str) -> str:
    if len(value) > width:
        raise Refusal(f"{what} {value[:40]!r}... is longer than {width} characters")
    return value


# --- forward vetting on a snapshot -------------------------------------------


@dataclass(frozen=True, slots=True)
class ExpansionSettings:
    """The settings the gateway expands forwards with (SPEC section 4)."""

    delimiter: str = "+"
    postmaster: str = ""
    recursion_limit: int = 1000
    expansion_limit: int = 1000


def probe_address(data: RoutingData, key: str) -> Address:
    """An address that ``key`` decides: itself, or for a catch-all ``@d`` a
    local part of ``d`` that no row of its own claims."""
    if not is_catch_all(key):
        parsed = parse_path(key, smtputf8=True)
        assert isinstance(parsed, Address)  # stored keys are addresses
        return parsed
    domain = key[1:]
    n = 0
    while True:
        local = f"mxgate-probe{n or ''}"
        candidate = f"{local}@{domain}"
        if not any(candidate in m for m in (data.mailboxes, data.relays, data.forwards)):
            return Address(local, domain)
        n += 1


def _expand_key(data: RoutingData, key: str, settings: ExpansionSettings) -> Expansion:
    return expand(
        data,
        probe_address(data, key),
        delimiter=settings.delimiter,
        postmaster=settings.postmaster,
        recursion_limit=settings.recursion_limit,
        expansion_limit=settings.expansion_limit,
    )


def forward_problems(
    data: RoutingData, key: str, settings: ExpansionSettings
) -> tuple[tuple[Failure, ...], list[str]]:
    """From one expansion of ``key``: its failures, and the final recipients
    that a forward maps to themselves (they stay, SPEC section 4) while no
    mailbox, relay or relay catch-all takes them: accepted, then relayed to
    their domain's next hop, which has no mailbox for them and bounces them."""
    result = _expand_key(data, key, settings)
    untaken = [
        final.recipient
        for final in result.finals
        if final.rule == STAYS and not taken_as_itself(data, final.address, settings.delimiter)
    ]
    return result.failures, untaken


def stays_untaken_text(recipient: str) -> str:
    return (
        f"{recipient} maps to itself, but no mailbox, relay or relay catch-all takes it:"
        " mail to it is accepted and relayed to its domain's next hop, which has no"
        " mailbox for it"
    )


def vet_forward(
    data: RoutingData,
    key: str,
    destinations: list[str],
    settings: ExpansionSettings,
    *,
    force: bool = False,
) -> list[str]:
    """Check new forward rows ``key -> destinations`` against the snapshot
    ``data`` (which is changed: the rows are added to it).

    Refused: a source outside our domains; a destination the source already
    has; a source that a mailbox or relay row shadows (unless ``force``); a
    loop or a limit that the new rows cause; a destination in our domains
    that nothing takes (a dead end, unless ``force``). Returns warnings for
    what ``force`` let through.
    """
    domain = source_domain(key)
    if domain not in data.domains:
        raise Refusal(
            f"forward source {key}: {domain} is not one of our domains (a forward's source"
            f" must be user@domain or @domain of a domain row; add it: mxgate domain add {domain})"
        )
    warnings: list[str] = []
    for table, rows in (("mailbox", data.mailboxes), ("relay", data.relays)):
        if key in rows:
            shadow = (
                f"{key} is a {table}: a {table} row wins over forward rows"
                " (SPEC section 4 step 1), so this forward would never be used"
            )
            if not force:
                raise Refusal(shadow + "; use --force to store it anyway")
            warnings.append(shadow)
    if is_catch_all(key) and key not in data.forwards:
        warnings.append(
            f"{key} is a catch-all: mail for every address of {domain} that has no row of"
            " its own (typos and guessed addresses included) is now accepted and forwarded"
        )
    existing = data.forwards.get(key, ())
    present = {t.lower() for t in forward_targets(existing)} if existing else set()
    for target in destinations:
        if target.lower() in present:
            raise Refusal(f"forward {key} -> {target} already exists")
    failures, untaken = forward_problems(data, key, settings)
    before, stayed = set(_failure_keys(failures)), set(untaken)
    data.forwards[key] = tuple(sorted((*existing, *destinations)))
    problems: list[str] = []
    failures, untaken = forward_problems(data, key, settings)
    for recipient in untaken:
        if recipient in stayed:
            continue  # not caused by these rows
        text = stays_untaken_text(recipient)
        if not force:
            problems.append(text + " (add a mailbox or relay row first, or use --force)")
        else:
            warnings.append(text)
    for failure in failures:
        if _failure_key(failure) in before:
            continue  # not caused by these rows
        if failure.kind is FailureKind.DEAD_END:
            dead = (
                f"dead end: {failure.reason}; a forward target in our domains must be a"
                " mailbox, a relay, a forward source or covered by a catch-all"
            )
            if not force:
                problems.append(dead + " (add it first, or use --force)")
            else:
                warnings.append(dead)
        else:
            problems.append(f"{failure.kind.value}: {failure.reason}")
    if problems:
        raise Refusal(f"forward {key} -> {', '.join(destinations)} refused: " + "; ".join(problems))
    return warnings


def _failure_key(failure: Failure) -> tuple[str, str]:
    return failure.kind.value, failure.recipient


def _failure_keys(failures: tuple[Failure, ...]) -> list[tuple[str, str]]:
    return [_failure_key(f) for f in failures]
