"""The decision at RCPT TO (SPEC section 3), from the snapshot alone.

Owns the order of the checks and the reply for each case: recipient limit,
syntax, SMTPUTF8, routing characters and source routes, unqualified
addresses, postmaster, address literals, relaying for ``mynetworks``, unknown
recipients, expansions that reach nothing, and "no route" (451 instead of
accepting mail only to bounce it later). The whole expansion and routing is
done here, so an accepted recipient carries its deliveries.

Never does I/O and never consults PostgreSQL: ``data is None`` (no snapshot
at all) answers 451 4.3.0, never a 5xx. Never raises on client input.
"""

from __future__ import annotations

from collections.abc import Iterable

from mxgate.core import reply as replies
from mxgate.core.address import Address, AddressError, AddressProblem, parse_path
from mxgate.core.decision import (
    Bounce,
    Deferred,
    Delivery,
    MessagePlan,
    RecipientDecision,
    plan_message,
)
from mxgate.core.expand import Expansion, FailureKind, expand, expand_to
from mxgate.core.reply import Reply
from mxgate.core.routing import IPAddress, RoutingPolicy, resolve_route
from mxgate.core.snapshot import RoutingData
from mxgate.core.transport import RouteKind

__all__ = ["RecipientDecision", "RoutingPolicy", "decide_message", "decide_recipient"]


def decide_recipient(
    data: RoutingData | None,
    policy: RoutingPolicy,
    recipient: str | Address,
    client_ip: IPAddress | str | None = None,
    sender: str = "",
    smtputf8: bool = False,
    recipients_so_far: int = 0,
) -> RecipientDecision:
    """Decide one RCPT TO.

    recipient:  the path text after ``TO:`` (ESMTP parameters split off), or
                an already parsed ``Address``
    client_ip:  the SMTP client; None (unknown) is outside ``mynetworks``
    sender:     the MAIL FROM address; recorded, it changes no decision today
    smtputf8:   MAIL FROM carried the SMTPUTF8 parameter (RFC 6531)
    recipients_so_far: recipients already accepted in this transaction
    """
    trace: list[str] = []
    shown = str(recipient) if isinstance(recipient, Address) else _unbracket(recipient)
    if sender:
        trace.append(f"sender <{sender}>")

    # RFC 5321 4.5.3.1.8 and 4.5.3.1.10 (452 for too many recipients);
    # Postfix checks the count before it parses the address.
    limit = policy.smtpd_recipient_limit
    if limit > 0 and recipients_so_far >= limit:
        trace.append(f"{recipients_so_far} recipients already accepted (limit {limit})")
        return _refuse(replies.TOO_MANY_RECIPIENTS, shown, trace)

    parsed = recipient if isinstance(recipient, Address) else parse_path(recipient, smtputf8)
    if isinstance(parsed, AddressError):
        trace.append(f"not an address: {parsed.detail}")
        if parsed.problem is AddressProblem.NEEDS_SMTPUTF8:
            return _refuse(replies.NEED_SMTPUTF8, shown, trace)
        return _refuse(replies.BAD_RECIPIENT_SYNTAX, shown, trace)
    address = parsed
    if address.is_null:
        trace.append("empty address")
        return _refuse(replies.BAD_RECIPIENT_SYNTAX, shown, trace)
    trace.append(f"recipient <{shown}> is {address.key!r} for lookups")

    # SPEC section 3: for every client, trusted ones too, and before any row
    # (a catch-all never takes these): the percent hack, bang paths, an '@'
    # inside the local part, and source routes would relay through us.
    if address.routing_chars or address.has_source_route:
        what = "a source route" if address.has_source_route else "'@', '%' or '!'"
        trace.append(f"the path contains {what}: relaying through us is refused")
        return _refuse(replies.relay_denied(shown), shown, trace)

    is_postmaster = address.local.lower() == "postmaster" and not address.quoted
    if not address.is_qualified:
        if is_postmaster:
            # RFC 5321 4.5.1: "postmaster" without a domain must be accepted.
            return _postmaster(data, policy, shown, "unqualified postmaster", trace)
        trace.append("unqualified address")
        return _refuse(replies.need_fqdn(shown), shown, trace)

    if address.literal is not None:
        if policy.is_own_address(address.literal):
            if is_postmaster:
                rule = f"postmaster at our own address {address.domain}"
                return _postmaster(data, policy, shown, rule, trace)
            trace.append(f"{address.domain} is our own address; we deliver nothing locally")
            return _refuse(replies.unknown_local_recipient(shown), shown, trace)
        if not _trusted(policy, client_ip, trace):
            trace.append(f"{address.domain} is not our address")
            return _refuse(replies.relay_denied(shown), shown, trace)
        # a trusted client: relayed to the literal below, once a snapshot exists

    if data is None:
        trace.append("no routing snapshot has been loaded yet")
        return _refuse(replies.lookup_failure(shown), shown, trace)

    if address.literal is not None:
        trace.append(f"{address.domain} is not our address: relayed for mynetworks")
    elif address.domain in data.domains:
        trace.append(f"{address.domain} is one of our domains")
    elif is_postmaster and address.domain == policy.myhostname.lower():
        return _postmaster(data, policy, shown, f"postmaster@{address.domain} (myhostname)", trace)
    elif _trusted(policy, client_ip, trace):
        trace.append(f"{address.domain} is not one of our domains: relayed for mynetworks")
    else:
        trace.append(f"{address.domain} is not one of our domains")
        return _refuse(replies.relay_denied(shown), shown, trace)

    expansion = expand(
        data,
        address,
        delimiter=policy.recipient_delimiter,
        postmaster=policy.postmaster,
        recursion_limit=policy.virtual_alias_recursion_limit,
        expansion_limit=policy.virtual_alias_expansion_limit,
    )
    return _conclude(data, policy, shown, expansion, trace)


def decide_message(
    data: RoutingData | None,
    policy: RoutingPolicy,
    recipients: Iterable[str | Address],
    client_ip: IPAddress | str | None = None,
    sender: str = "",
    smtputf8: bool = False,
) -> tuple[tuple[RecipientDecision, ...], MessagePlan]:
    """Decide every RCPT TO of one transaction, in order (the limit counts
    the recipients accepted so far), and merge the accepted ones into one
    de-duplicated plan."""
    decisions: list[RecipientDecision] = []
    accepted = 0
    for recipient in recipients:
        decision = decide_recipient(data, policy, recipient, client_ip, sender, smtputf8, accepted)
        accepted += decision.accepted
        decisions.append(decision)
    return tuple(decisions), plan_message(decisions)


def _unbracket(text: str) -> str:
    s = text.strip(" \t")
    if len(s) >= 2 and s.startswith("<") and s.endswith(">"):
        return s[1:-1]
    return s


def _trusted(policy: RoutingPolicy, client_ip: IPAddress | str | None, trace: list[str]) -> bool:
    trusted = policy.is_trusted(client_ip)
    where = "in" if trusted else "not in"
    trace.append(
        f"client {client_ip if client_ip is not None else '(unknown)'} is {where} mynetworks"
    )
    return trusted


def _refuse(
    reply: Reply, shown: str, trace: list[str], steps: Expansion | None = None
) -> RecipientDecision:
    trace.append(f"reply: {reply.line()}")
    expansion = steps.steps if steps is not None else ()
    return RecipientDecision(reply, shown, expansion=expansion, trace=tuple(trace))


def _postmaster(
    data: RoutingData | None, policy: RoutingPolicy, shown: str, rule: str, trace: list[str]
) -> RecipientDecision:
    """Mail for the postmaster goes to the configured address (RFC 5321 4.5.1)."""
    if data is None:
        trace.append("no routing snapshot has been loaded yet")
        return _refuse(replies.lookup_failure(shown), shown, trace)
    target = parse_path(policy.postmaster, smtputf8=True)
    if not isinstance(target, Address) or not target.is_qualified:
        trace.append(f"the configured postmaster {policy.postmaster!r} is not an address")
        return _refuse(replies.configuration_error(shown), shown, trace)
    expansion = expand_to(
        data,
        shown,
        rule,
        (policy.postmaster,),
        delimiter=policy.recipient_delimiter,
        postmaster=policy.postmaster,
        recursion_limit=policy.virtual_alias_recursion_limit,
        expansion_limit=policy.virtual_alias_expansion_limit,
    )
    return _conclude(data, policy, shown, expansion, trace)


def _conclude(
    data: RoutingData,
    policy: RoutingPolicy,
    shown: str,
    expansion: Expansion,
    trace: list[str],
) -> RecipientDecision:
    """From an expansion to the reply and, when accepted, the routed parts."""
    trace.extend(f"{step.address}: {step.note}" for step in expansion.steps)
    if not expansion.known:
        return _refuse(replies.unknown_recipient(shown), shown, trace, expansion)
    failures = expansion.failures
    # SPEC section 4: when both a loop (or limit) and a dead end stop an
    # expansion, the loop's 5.4.6 is the reason given.
    worst = next((f for f in failures if f.kind is not FailureKind.DEAD_END), None)
    if worst is None and failures:
        worst = failures[0]
    if not expansion.finals:
        if worst is None:  # cannot happen: a known address yields something
            reason, enhanced = "nothing deliverable", "5.1.1"
        else:
            reason, enhanced = worst.reason, worst.enhanced
        return _refuse(replies.expansion_failed(shown, enhanced, reason), shown, trace, expansion)

    deliveries: list[Delivery] = []
    deferred: list[Deferred] = []
    bounces = [Bounce(f.recipient, shown, f.enhanced, f.reason) for f in failures]
    error_bounces: list[Bounce] = []
    for final in expansion.finals:
        resolution = resolve_route(data, policy, final.address)
        route = resolution.route
        if route is None:
            why = "; ".join(part for part in (resolution.source, resolution.problem) if part)
            trace.append(f"{final.recipient}: {why}")
            deferred.append(Deferred(final.recipient, shown, resolution.problem))
            continue
        trace.append(f"{final.recipient}: {resolution.source}")
        if route.kind is RouteKind.RETRY:
            deferred.append(Deferred(final.recipient, shown, f"retry: {route.nexthop}"))
        elif route.kind is RouteKind.ERROR:
            error_bounces.append(Bounce(final.recipient, shown, route.enhanced, route.text))
        else:
            reason = f"{final.rule}; {resolution.source}"
            deliveries.append(Delivery(final.recipient, shown, route, reason))

    if deliveries:
        reply = replies.RCPT_OK
    elif deferred:
        reply = replies.no_route(shown, deferred[0].reason)
    elif worst is not None and worst.kind is not FailureKind.DEAD_END:
        reply = replies.expansion_failed(shown, worst.enhanced, worst.reason)
    else:
        first = error_bounces[0]
        reply = replies.expansion_failed(shown, first.enhanced, first.reason)
    if not reply.is_positive:
        return _refuse(reply, shown, trace, expansion)
    trace.append(f"reply: {reply.line()}")
    return RecipientDecision(
        reply,
        shown,
        tuple(deliveries),
        tuple(deferred),
        tuple(bounces + error_bounces),
        expansion.steps,
        tuple(trace),
    )
