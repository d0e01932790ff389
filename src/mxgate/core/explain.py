"""``mxgate explain``: a ``RecipientDecision`` rendered for people and scripts.

Owns the JSON shape of SPEC section 10 (keys ``reply``, ``deliveries``,
``deferred``, ``bounces``, ``trace``, and nothing else) and the text layout:
the reply first, then the expansion tree with the row that matched at each
node, then each final recipient's route, then the trace.

Never decides anything (it only renders what ``decide_recipient`` decided),
never prints and never does I/O: the CLI writes the result.
"""

from __future__ import annotations

from mxgate.core.decision import RecipientDecision
from mxgate.core.transport import Route, RouteKind


def to_json_dict(decision: RecipientDecision) -> dict[str, object]:
    """The decision as a JSON-ready dict (SPEC section 10)."""
    reply = decision.reply
    return {
        "reply": {"code": reply.code, "enhanced": reply.enhanced, "text": reply.text},
        "deliveries": [
            {
                "recipient": d.recipient,
                "original_recipient": d.original_recipient,
                "transport": d.route.transport,
                "nexthop": d.route.nexthop,
                "mx_lookup": d.route.mx_lookup,
            }
            for d in decision.deliveries
        ],
        "deferred": [{"recipient": d.recipient, "reason": d.reason} for d in decision.deferred],
        "bounces": [
            {"recipient": b.recipient, "enhanced": b.enhanced, "reason": b.reason}
            for b in decision.bounces
        ],
        "trace": list(decision.trace),
    }


def describe_route(route: Route) -> str:
    """``smtp to example.com (MX lookup)``, ``lmtp to unix:/path``, ..."""
    if route.kind is RouteKind.DISCARD:
        return f"discard{f' ({route.text})' if route.text else ''}"
    if route.kind in (RouteKind.ERROR, RouteKind.RETRY):
        return f"{route.transport}: {route.nexthop}"
    how = "MX lookup" if route.mx_lookup else "no MX lookup"
    if route.unix_path:
        how = "UNIX socket"
    return f"{route.transport} to {route.nexthop} ({how})"


def to_text(decision: RecipientDecision) -> str:
    """The decision for a person: reply, expansion tree, routes, trace."""
    out = [decision.reply.line(), f"  recipient <{decision.recipient}>"]
    if decision.expansion:
        out += ["", "expansion:"]
        out += [f"  {'  ' * s.depth}{s.address}  [{s.note}]" for s in decision.expansion]
    if decision.deliveries:
        out += ["", "deliveries:"]
        # Whether the sender is rewritten depends on the sender (not the null
        # one, not an unqualified one): the trace's srs line says which.
        srs_note = next((line for line in decision.trace if line.startswith("srs: ")), None)
        for d in decision.deliveries:
            out.append(f"  {d.recipient} -> {describe_route(d.route)}")
            out.append(f"      because {d.reason}")
            if d.srs:
                out.append(f"      {srs_note or 'srs: a forward to the outside (SRS applies)'}")
    if decision.deferred:
        out += ["", "deferred (no route yet; retried, re-resolved at each attempt):"]
        out += [f"  {d.recipient}: {d.reason}" for d in decision.deferred]
    if decision.bounces:
        out += ["", "bounced after acceptance:"]
        out += [f"  {b.recipient}: {b.enhanced} {b.reason}" for b in decision.bounces]
    if decision.trace:
        out += ["", "trace:"]
        out += [f"  {n}. {line}" for n, line in enumerate(decision.trace, 1)]
    return "\n".join(out) + "\n"
