"""``mxgate check``: the consistency of the routing rows, as pure functions.

Owns the findings and their severities. An **error** loses or refuses mail
that the rows mean to deliver (forward loops and limits, dead ends, domains
whose mail has no route, transports that do not parse); a **warning** is a
row that does nothing or does something else than it seems (sources outside
our domains, case variants, duplicate destinations, empty destinations,
shadowed forwards, nodes without their transport rows); an **info** explains
an effect that may be intended (catch-alls beside mailboxes, rows stored in
upper case).

Works on the rows as stored (``RawRows``, original case), so that case
variants can be seen, and on a snapshot folded from them for everything the
gateway decides, using the gateway's own functions (expansion, transport
lookup, transport syntax). Never does I/O; ``check`` only reads its inputs.

    check_rows.py     the types, the fold, and findings about rows as stored
    check_routing.py  findings about routes and forward expansion
"""

from __future__ import annotations

from mxgate.core.check_routing import (
    forward_findings,
    node_findings,
    route_findings,
    settings_findings,
    transport_findings,
)
from mxgate.core.check_rows import (
    SEVERITY_ORDER,
    CheckSettings,
    Finding,
    RawRows,
    Severity,
    case_findings,
    catch_all_findings,
    duplicate_findings,
    fold,
    key_findings,
    outside_findings,
    summary,
)

__all__ = [
    "SEVERITY_ORDER",
    "CheckSettings",
    "Finding",
    "RawRows",
    "Severity",
    "check",
    "fold",
    "summary",
]


def check(rows: RawRows, settings: CheckSettings) -> list[Finding]:
    """Every finding, errors first, then by kind and key."""
    data = fold(rows)
    findings = [
        *case_findings(rows),
        *key_findings(rows),
        *outside_findings(data),
        *catch_all_findings(data),
        *transport_findings(rows, settings),
        *settings_findings(settings),
        *route_findings(data, settings),
        *node_findings(data),
        *forward_findings(rows, data, settings.expansion),
        *duplicate_findings(rows),
    ]
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    return sorted(findings, key=lambda f: (rank[f.severity], f.kind, f.table, f.key))
