"""The decision at RCPT TO (SPEC section 3), from the snapshot alone.

Owns the order of the checks and the reply for each case: recipient limit,
syntax, SMTPUTF8, routing characters and source routes, unqualified
addresses, postmaster, address literals, relaying for ``mynetworks``, unknown
recipients, expansions that reach nothing, and "no route" (451 instead of
accepting mail only to bounce it later). The whole expansion and routing is
done here, so an accepted recipient carries its deliveries.

The words (``trace``) and the expansion tree (``expansion``) are built only
for ``explain=True`` (``mxgate explain``): the SMTP session needs the reply
and the routed parts alone, and formatting the explanation was a large part
of the cost of every RCPT. Nothing else depends on ``explain``: the reply,
the deliveries, deferred and bounced recipients, and every reason they carry
are the same either way (tests/core/test_explain_off.py).

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
from mxgate.core.srs_keys import SrsContext
from mxgate.core.srs_policy import mark_forwards, reverse_recipient
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
    *,
    explain: bool = False,
    srs: SrsContext | None = None,
) -> RecipientDecision:
    """Decide one RCPT TO.

    recipient:  the path text after ``TO:`` (ESMTP parameters split off), or
                an already parsed ``Address``
    client_ip:  the SMTP client; None (unknown) is outside ``mynetworks``
    sender:     the MAIL FROM address; recorded, it changes no decision today
    smtputf8:   MAIL FROM carried the SMTPUTF8 parameter (RFC 6531)
    recipients_so_far: recipients already accepted in this transaction
    explain:    also record ``trace`` and ``expansion`` (``mxgate explain``);
                without it both are empty and the decision is otherwise equal
    srs:        SRS settings, keys and time (issue 8, core.srs_policy); None: SRS off
    """
    # None when not explaining: every note below is formatted only if asked for.
    trace: list[str] | None = [] if explain else None
    shown = str(recipient) if isinstance(recipient, Address) else _unbracket(recipient)
    if trace is not None and sender:
        trace.append(f"sender <{sender}>")

    # RFC 5321 4.5.3.1.8 and 4.5.3.1.10 (452 for too many recipients);
    # Postfix checks the count before it parses the address.
    limit = policy.smtpd_recipient_limit
    if limit > 0 and recipients_so_far >= limit:
        if trace is not None:
            trace.append(f"{recipients_so_far} recipients already accepted (limit {limit})")
        return _refuse(replies.TOO_MANY_RECIPIENTS, shown, trace)

    parsed = recipient if isinstance(recipient, Address) else parse_path(recipient, smtputf8)
    if isinstance(parsed, AddressError):
        if trace is not None:
            trace.append(f"not an address: {parsed.detail}")
        if parsed.problem is AddressProblem.NEEDS_SMTPUTF8:
            return _refuse(replies.NEED_SMTPUTF8, shown, trace)
        return _refuse(replies.BAD_RECIPIENT_SYNTAX, shown, trace)
    address = parsed
    if address.is_null:
        if trace is not None:
            trace.append("empty address")
        return _refuse(replies.BAD_RECIPIENT_SYNTAX, shown, trace)
    if trace is not None:
        trace.append(f"recipient <{shown}> is {address.key!r} for lookups")

    # SPEC section 3: for every client, trusted ones too, and before any row
    # (a catch-all never takes these): the percent hack, bang paths, an '@'
    # inside the local part, and source routes would relay through us.
    if address.routing_chars or address.source_route:
        if trace is not None:
            what = "a source route" if address.has_source_route else "'@', '%' or '!'"
            trace.append(f"the path contains {what}: relaying through us is refused")
        return _refuse(replies.relay_denied(shown), shown, trace)

    domain = address.domain
    if srs is not None:
        # Issue 8: an SRS address of ours verifies, or is refused, before any row.
        reverse = reverse_recipient(srs, address, shown, trace)
        if isinstance(reverse, Reply):
            return _refuse(reverse, shown, trace)
        if reverse is not None:
            return _srs_reverse(data, policy, shown, reverse, trace)
    if not domain:
        if _is_postmaster(address):
            # RFC 5321 4.5.1: "postmaster" without a domain must be accepted.
            return _postmaster(data, policy, shown, "unqualified postmaster", trace)
        if trace is not None:
            trace.append("unqualified address")
        return _refuse(replies.need_fqdn(shown), shown, trace)

    if address.literal is not None:
        if policy.is_own_address(address.literal):
            if _is_postmaster(address):
                rule = f"postmaster at our own address {domain}"
                return _postmaster(data, policy, shown, rule, trace)
            if trace is not None:
                trace.append(f"{domain} is our own address; we deliver nothing locally")
            return _refuse(replies.unknown_local_recipient(shown), shown, trace)
        if not _trusted(policy, client_ip, trace):
            if trace is not None:
                trace.append(f"{domain} is not our address")
            return _refuse(replies.relay_denied(shown), shown, trace)
        # a trusted client: relayed to the literal below, once a snapshot exists

    if data is None:
        if trace is not None:
            trace.append("no routing snapshot has been loaded yet")
        return _refuse(replies.lookup_failure(shown), shown, trace)

    if address.literal is not None:
        if trace is not None:
            trace.append(f"{domain} is not our address: relayed for mynetworks")
    elif domain in data.domains:
        if trace is not None:
            trace.append(f"{domain} is one of our domains")
    elif _is_postmaster(address) and domain == policy.myhostname.lower():
        return _postmaster(data, policy, shown, f"postmaster@{domain} (myhostname)", trace)
    elif _trusted(policy, client_ip, trace):
        if trace is not None:
            trace.append(f"{domain} is not one of our domains: relayed for mynetworks")
    else:
        if trace is not None:
            trace.append(f"{domain} is not one of our domains")
        return _refuse(replies.relay_denied(shown), shown, trace)

    expansion = expand(
        data,
        address,
        delimiter=policy.recipient_delimiter,
        postmaster=policy.postmaster,
        recursion_limit=policy.virtual_alias_recursion_limit,
        expansion_limit=policy.virtual_alias_expansion_limit,
        explain=explain,
    )
    decision = _conclude(data, policy, shown, expansion, trace)
    if srs is not None and decision.deliveries and domain in data.domains:
        # Issue 8: copies forwarded to the outside leave with an SRS sender.
        return mark_forwards(srs, data, decision, sender, domain)
    return decision


def decide_message(
    data: RoutingData | None,
    policy: RoutingPolicy,
    recipients: Iterable[str | Address],
    client_ip: IPAddress | str | None = None,
    sender: str = "",
    smtputf8: bool = False,
    *,
    explain: bool = False,
) -> tuple[tuple[RecipientDecision, ...], MessagePlan]:
    """Decide every RCPT TO of one transaction, in order (the limit counts
    the recipients accepted so far), and merge the accepted ones into one
    de-duplicated plan."""
    decisions: list[RecipientDecision] = []
    accepted = 0
    for recipient in recipients:
        decision = decide_recipient(
            data, policy, recipient, client_ip, sender, smtputf8, accepted, explain=explain
        )
        accepted += decision.accepted
        decisions.append(decision)
    return tuple(decisions), plan_message(decisions)


def _unbracket(text: str) -> str:
    s = text.strip(" \t")
    if len(s) >= 2 and s.startswith("<") and s.endswith(">"):
        return s[1:-1]
    return s


def _is_postmaster(address: Address) -> bool:
    return not address.quoted and address.local.lower() == "postmaster"


def _trusted(
    policy: RoutingPolicy, client_ip: IPAddress | str | None, trace: list[str] | None
) -> bool:
    trusted = policy.is_trusted(client_ip)
    if trace is not None:
        where = "in" if trusted else "not in"
        trace.append(
            f"client {client_ip if client_ip is not None else '(unknown)'} is {where} mynetworks"
        )
    return trusted


def _refuse(
    reply: Reply, shown: str, trace: list[str] | None, steps: Expansion | None = None
) -> RecipientDecision:
    if trace is None:
        return RecipientDecision(reply, shown)
    trace.append(f"reply: {reply.line()}")
    expansion = steps.steps if steps is not None else ()
    return RecipientDecision(reply, shown, expansion=expansion, trace=tuple(trace))


def _postmaster(
    data: RoutingData | None,
    policy: RoutingPolicy,
    shown: str,
    rule: str,
    trace: list[str] | None,
) -> RecipientDecision:
    """Mail for the postmaster goes to the configured address (RFC 5321 4.5.1)."""
    if data is None:
        if trace is not None:
            trace.append("no routing snapshot has been loaded yet")
        return _refuse(replies.lookup_failure(shown), shown, trace)
    target = parse_path(policy.postmaster, smtputf8=True)
    if not isinstance(target, Address) or not target.is_qualified:
        if trace is not None:
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
        explain=trace is not None,
    )
    return _conclude(data, policy, shown, expansion, trace)


def _srs_reverse(
    data: RoutingData | None,
    policy: RoutingPolicy,
    shown: str,
    target: Address,
    trace: list[str] | None,
) -> RecipientDecision:
    """A verified SRS address of ours goes where it stands for, routed like
    any address and relayed out for any client: the hash authorises it."""
    if data is None:
        if trace is not None:
            trace.append("no routing snapshot has been loaded yet")
        return _refuse(replies.lookup_failure(shown), shown, trace)
    expansion = expand(
        data,
        target,
        delimiter=policy.recipient_delimiter,
        postmaster=policy.postmaster,
        recursion_limit=policy.virtual_alias_recursion_limit,
        expansion_limit=policy.virtual_alias_expansion_limit,
        explain=trace is not None,
    )
    return _conclude(data, policy, shown, expansion, trace)


def _conclude(
    data: RoutingData,
    policy: RoutingPolicy,
    shown: str,
    expansion: Expansion,
    trace: list[str] | None,
) -> RecipientDecision:
    """From an expansion to the reply and, when accepted, the routed parts."""
    if trace is not None:
        trace.extend(f"{step.address}: {step.note}" for step in expansion.steps)
    if not expansion.known:
        return _refuse(replies.unknown_recipient(shown), shown, trace, expansion)
    failures = expansion.failures
    worst = None
    if failures:
        # SPEC section 4: when both a loop (or limit) and a dead end stop an
        # expansion, the loop's 5.4.6 is the reason given.
        worst = next((f for f in failures if f.kind is not FailureKind.DEAD_END), failures[0])
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
        resolved = resolve_route(data, policy, final.address)
        route, source, problem = resolved.route, resolved.source, resolved.problem
        if route is None:
            if trace is not None:
                why = "; ".join(part for part in (source, problem) if part)
                trace.append(f"{final.recipient}: {why}")
            deferred.append(Deferred(final.recipient, shown, problem))
            continue
        if trace is not None:
            trace.append(f"{final.recipient}: {source}")
        kind = route.kind
        if kind is RouteKind.RETRY:
            deferred.append(Deferred(final.recipient, shown, f"retry: {route.nexthop}"))
        elif kind is RouteKind.ERROR:
            error_bounces.append(Bounce(final.recipient, shown, route.enhanced, route.text))
        else:
            deliveries.append(Delivery(final.recipient, shown, route, f"{final.rule}; {source}"))

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
    if trace is not None:
        trace.append(f"reply: {reply.line()}")
    return RecipientDecision(
        reply,
        shown,
        tuple(deliveries),
        tuple(deferred),
        tuple(bounces + error_bounces),
        expansion.steps,
        tuple(trace) if trace is not None else (),
    )
