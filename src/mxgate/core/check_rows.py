"""``mxgate check``, part one: the row types and the findings about rows as stored.

Owns ``RawRows`` (the five tables as stored, original case), ``Finding`` and
its ``Severity``, ``CheckSettings``, the fold of raw rows into the snapshot
the gateway would build, and the findings that need no routing: case
variants and upper case, keys lookups never use, rows outside our domains,
catch-alls beside mailboxes, duplicate forward destinations. Pure.
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mxgate.core.address import AddressError, normalize_domain, parse_path
from mxgate.core.expand import forward_targets, split_destinations
from mxgate.core.rules import ExpansionSettings
from mxgate.core.snapshot import RoutingData


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


SEVERITY_ORDER = (Severity.ERROR, Severity.WARNING, Severity.INFO)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: ``kind`` is a stable name for scripts, ``key`` the row
    (or domain) it is about, ``message`` the explanation for people."""

    severity: Severity
    kind: str
    table: str
    key: str
    message: str


@dataclass(frozen=True, slots=True)
class RawRows:
    """The five tables as stored (keys in their original case; NULL node of
    transport read as '')."""

    domains: Sequence[tuple[str, str | None]] = ()  # (domain, node)
    mailboxes: Sequence[tuple[str, str]] = ()  # (email, node)
    relays: Sequence[tuple[str, str]] = ()  # (source, node)
    forwards: Sequence[tuple[str, str]] = ()  # (source, destination)
    transports: Sequence[tuple[str, str, str]] = ()  # (domain, node, transport)


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """Role and expansion settings: ``node_name`` '' checks routes for the
    gateway role (SPEC section 1)."""

    expansion: ExpansionSettings = field(default_factory=ExpansionSettings)
    node_name: str = ""
    node_fallback_to_gateway: bool = False
    myself: frozenset[tuple[str, int]] = frozenset()
    """Where this gateway takes mail (``transport.own_endpoint``)."""
    default_transport: str = "smtp:"
    relayhost: str = ""


def fold(rows: RawRows) -> RoutingData:
    """The snapshot the gateway builds from these rows (keys lower case;
    among case variants the lower-case row wins, as in directory/fold.py)."""

    def single(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for raw, value in sorted(pairs, key=lambda p: (p[0] != p[0].lower(), p[0])):
            out.setdefault(raw.lower(), value)
        return out

    domains: dict[str, str | None] = {}
    for raw, node in sorted(rows.domains, key=lambda p: (p[0] != p[0].lower(), p[0])):
        domains.setdefault(raw.lower(), node)
    forwards: dict[str, list[str]] = defaultdict(list)
    for raw, destination in rows.forwards:
        forwards[raw.lower()].append(destination)
    transports: dict[str, dict[str, str]] = defaultdict(dict)
    for raw, node, value in sorted(rows.transports, key=lambda r: (r[0] != r[0].lower(), r[0])):
        transports[raw.lower()].setdefault(node, value)
    return RoutingData(
        domains=domains,
        mailboxes=single(rows.mailboxes),
        relays=single(rows.relays),
        forwards={k: tuple(sorted(v)) for k, v in forwards.items()},
        transports=dict(transports),
    )


def finding(severity: Severity, kind: str, table: str, key: str, message: str) -> Finding:
    return Finding(severity, kind, table, key, message)


# --- case ---------------------------------------------------------------------


def case_findings(rows: RawRows) -> list[Finding]:
    """Rows whose keys differ only in case, and keys stored with upper case.

    The tutorial's Postfix looks keys up in lower case, so under it such rows
    never matched; mxgate folds case, so among variants one row wins and the
    others are ambiguous leftovers.
    """
    tables: dict[str, list[tuple[str, str]]] = {
        "domain": [(d, "") for d, _ in rows.domains],
        "mailbox": [(e, "") for e, _ in rows.mailboxes],
        "relay": [(s, "") for s, _ in rows.relays],
        "forward": [(s, "") for s, _ in rows.forwards],
        "transport": [(d, n) for d, n, _ in rows.transports],
    }
    out: list[Finding] = []
    for table, keys in tables.items():
        groups: dict[tuple[str, str], set[str]] = defaultdict(set)
        for raw, node in keys:
            groups[(raw.lower(), node)].add(raw)
        for (folded, node), variants in groups.items():
            where = f" (node {node!r})" if table == "transport" else ""
            if len(variants) > 1:
                shown = ", ".join(repr(v) for v in sorted(variants))
                out.append(
                    finding(
                        Severity.WARNING,
                        "case-variant",
                        table,
                        folded,
                        f"{table} rows {shown}{where} differ only in case: the tutorial's"
                        " Postfix matched only a lower-case one, mxgate treats them as one"
                        " key (the lower-case row wins; forward rows are merged); keep one",
                    )
                )
            elif folded not in variants:
                (raw,) = variants
                out.append(
                    finding(
                        Severity.INFO,
                        "upper-case",
                        table,
                        raw,
                        f"{table} row {raw!r}{where} is stored with upper case: mxgate matches"
                        " it, the tutorial's Postfix queries never did; store it lower-case",
                    )
                )
    return out


def key_findings(rows: RawRows) -> list[Finding]:
    """Keys that are not in the form lookups use (a domain written with
    U-labels or a trailing dot, a source that is not an address)."""
    out: list[Finding] = []
    for raw, _node in rows.domains:
        normal = normalize_domain(raw.lower())
        if isinstance(normal, AddressError) or normal != raw.lower():
            why = normal.detail if isinstance(normal, AddressError) else f"lookups use {normal!r}"
            out.append(
                finding(
                    Severity.WARNING,
                    "bad-key",
                    "domain",
                    raw,
                    f"domain row {raw!r} never matches ({why})",
                )
            )
    for table, keys in (
        ("mailbox", [e for e, _ in rows.mailboxes]),
        ("relay", [s for s, _ in rows.relays]),
        ("forward", sorted({s for s, _ in rows.forwards})),
    ):
        for raw in keys:
            if raw.startswith("@") and table != "mailbox":
                continue
            parsed = parse_path(raw, smtputf8=True)
            if isinstance(parsed, AddressError) or not parsed.is_qualified:
                why = parsed.detail if isinstance(parsed, AddressError) else "no domain"
                out.append(
                    finding(
                        Severity.WARNING,
                        "bad-key",
                        table,
                        raw,
                        f"{table} row {raw!r} is not an address ({why}): it never matches",
                    )
                )
    return out


# --- domains ------------------------------------------------------------------


def outside_findings(data: RoutingData) -> list[Finding]:
    """Mailboxes, relays and forward sources of domains that are not ours:
    mail for them is refused (relay access denied), so the rows are dead."""
    out: list[Finding] = []
    tables: tuple[tuple[str, Iterable[str]], ...] = (
        ("mailbox", data.mailboxes),
        ("relay", data.relays),
        ("forward", data.forwards),
    )
    for table, keys in tables:
        for key in keys:
            domain = key.rpartition("@")[2]
            if domain and domain not in data.domains:
                out.append(
                    finding(
                        Severity.WARNING,
                        "outside-domains",
                        table,
                        key,
                        f"{table} {key}: {domain} is not in domain, so mail for it is"
                        f" refused (Relay access denied) and this row is never used;"
                        f" add the domain or remove the row",
                    )
                )
    return out


def _by_domain(keys: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        if not key.startswith("@"):
            out[key.rpartition("@")[2]].append(key)
    return out


def catch_all_findings(data: RoutingData) -> list[Finding]:
    """Catch-alls beside addresses of their own: explain who gets what."""
    mailboxes = _by_domain(data.mailboxes)
    out: list[Finding] = []
    for table, keys in (("forward", data.forwards), ("relay", data.relays)):
        for key in keys:
            if not key.startswith("@"):
                continue
            domain = key[1:]
            own = len(mailboxes.get(domain, ()))
            if not own:
                continue
            if table == "forward":
                goes = f"is forwarded to {', '.join(forward_targets(data.forwards[key]))}"
            else:
                goes = f"is relayed to node {data.relays[key]!r} as it is"
            out.append(
                finding(
                    Severity.INFO,
                    "catch-all-with-mailboxes",
                    table,
                    key,
                    f"{domain} has {own} mailbox(es) and a {table} catch-all {key}: the"
                    f" mailboxes (and exact relays and forwards) win, and mail for every other"
                    f" address of {domain}, typos and guessed addresses included, {goes}"
                    f" instead of being refused as unknown",
                )
            )
    return out


def duplicate_findings(rows: RawRows) -> list[Finding]:
    """A destination listed more than once for one source (in several rows,
    case variants of the source, or a list column): delivered once, so the
    extra copies only mislead whoever edits the rows."""
    targets: dict[str, list[str]] = defaultdict(list)
    for raw, destination in rows.forwards:
        targets[raw.lower()].extend(split_destinations(destination))
    out: list[Finding] = []
    for key, tokens in targets.items():
        counts: dict[str, int] = defaultdict(int)
        for token in tokens:
            counts[token.lower()] += 1
        for token, count in sorted(counts.items()):
            if count > 1:
                out.append(
                    finding(
                        Severity.WARNING,
                        "duplicate",
                        "forward",
                        key,
                        f"forward {key} lists {token} {count} times: it is delivered once;"
                        " remove the extra rows",
                    )
                )
    return out


def summary(findings: Sequence[Finding]) -> dict[str, int]:
    counts = {s.value: 0 for s in SEVERITY_ORDER}
    for finding in findings:
        counts[finding.severity.value] += 1
    return counts
