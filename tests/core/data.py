"""Routing data and policies for the core tests, built directly (no database).

``tutorial()`` is the example data of the tutorial (SPEC section 2);
``snapshot()`` builds any other data set from plain dicts, folding nothing:
keys are given lower-case, as the directory loader stores them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from ipaddress import ip_address, ip_network
from typing import Any

from mxgate.core.decision import RecipientDecision
from mxgate.core.policy import decide_recipient
from mxgate.core.routing import RoutingPolicy
from mxgate.core.snapshot import RoutingData

GATEWAY_V4 = ip_address("192.0.2.10")
GATEWAY_V6 = ip_address("2001:db8::25")
INTERNET = ip_address("203.0.113.7")
TRUSTED = ip_address("10.1.2.3")
TRUSTED_V6 = ip_address("2001:db8:ffff::7")

POLICY = RoutingPolicy(
    myhostname="mx1.gateway.test",
    mynetworks=(ip_network("10.0.0.0/8"), ip_network("2001:db8:ffff::/48")),
    local_addresses=(GATEWAY_V4, GATEWAY_V6),
    postmaster="hostmaster@admin.test",
)


def policy(**changes: Any) -> RoutingPolicy:
    return replace(POLICY, **changes)


def snapshot(
    domains: Sequence[str] = (),
    mailboxes: Sequence[str] = (),
    relays: Sequence[str] = (),
    forwards: Mapping[str, str | Sequence[str]] | None = None,
    transports: Mapping[str, str | Mapping[str, str]] | None = None,
) -> RoutingData:
    """forwards: source -> one destination column, or several rows.
    transports: key -> value of the gateway row, or {node: value}."""
    data = RoutingData()
    data.domains = {d: "maila" for d in domains}
    data.mailboxes = {m: "maila" for m in mailboxes}
    data.relays = {r: "maila" for r in relays}
    for source, dest in (forwards or {}).items():
        data.forwards[source] = (dest,) if isinstance(dest, str) else tuple(dest)
    for key, value in (transports or {}).items():
        data.transports[key] = {"": value} if isinstance(value, str) else dict(value)
    return data


TUTORIAL_DOMAINS = ("server1.example.com", "other.example.com")
TUTORIAL_MAILBOXES = ("james@server1.example.com",)
TUTORIAL_RELAYS = ("david@server1.example.com", "@other.example.com")
TUTORIAL_FORWARDS: dict[str, str | Sequence[str]] = {"@server1.example.com": "james@example.com"}
TUTORIAL_TRANSPORTS: dict[str, str | Mapping[str, str]] = {"server1.example.com": "smtp:[10.0.0.2]"}


def tutorial(
    domains: Sequence[str] = (),
    mailboxes: Sequence[str] = (),
    relays: Sequence[str] = (),
    forwards: Mapping[str, str | Sequence[str]] | None = None,
    transports: Mapping[str, str | Mapping[str, str]] | None = None,
) -> RoutingData:
    """The tutorial's example data, plus (or overriding) the given rows."""
    return snapshot(
        (*TUTORIAL_DOMAINS, *domains),
        (*TUTORIAL_MAILBOXES, *mailboxes),
        (*TUTORIAL_RELAYS, *relays),
        {**TUTORIAL_FORWARDS, **(forwards or {})},
        {**TUTORIAL_TRANSPORTS, **(transports or {})},
    )


def decide(
    data: RoutingData | None,
    rcpt: str,
    client: Any = INTERNET,
    smtputf8: bool = False,
    recipients_so_far: int = 0,
    pol: RoutingPolicy = POLICY,
) -> RecipientDecision:
    """The explained decision (trace and expansion tree filled in). Every
    call also decides without ``explain``, the SMTP session's fast path, and
    checks that it decides the same: so every table of the core tests covers
    both."""
    args = (data, pol, rcpt, client, "sender@example.net", smtputf8, recipients_so_far)
    explained = decide_recipient(*args, explain=True)
    fast = decide_recipient(*args)
    assert outcome(fast) == outcome(explained), rcpt
    assert (fast.trace, fast.expansion) == ((), ())
    return explained


def outcome(decision: RecipientDecision) -> tuple[object, ...]:
    """All of a decision but its explanation (trace and expansion tree)."""
    return (
        decision.reply,
        decision.recipient,
        decision.deliveries,
        decision.deferred,
        decision.bounces,
    )


def routes(decision: RecipientDecision) -> list[tuple[str, str, str, bool]]:
    """(recipient, transport, nexthop, mx_lookup) of each delivery."""
    return [
        (d.recipient, d.route.transport, d.route.nexthop, d.route.mx_lookup)
        for d in decision.deliveries
    ]


def finals(decision: RecipientDecision) -> list[str]:
    return [d.recipient for d in decision.deliveries]
