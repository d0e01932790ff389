"""The outcome of the RCPT decision, and of a whole message's recipients.

Owns the value types the SMTP session, the spool, the scheduler and
``mxgate explain`` share: ``RecipientDecision`` (the reply, and for an
accepted recipient its deliveries, deferred and bounced final recipients),
and ``MessagePlan``, the de-duplicated union for one message (one copy per
final address; the original recipient, for ORCPT, of the first).

Never decides anything itself and never does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mxgate.core.expand import Step
from mxgate.core.reply import Reply
from mxgate.core.transport import Route


@dataclass(frozen=True, slots=True, init=False)
class Delivery:
    """A final recipient with a route. ``reason`` names the rows that led
    there (expansion rule; transport row or setting). ``srs``: outside our
    domains and reached through a forward, so the copy leaves with its
    sender rewritten by SRS (``core.srs_policy``)."""

    recipient: str
    original_recipient: str
    route: Route
    reason: str
    srs: bool = False

    def __init__(
        self, recipient: str, original_recipient: str, route: Route, reason: str, srs: bool = False
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "recipient", recipient)
        object.__setattr__(self, "original_recipient", original_recipient)
        object.__setattr__(self, "route", route)
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "srs", srs)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A final recipient with no route yet (no or bad transport row, or a
    ``retry:`` transport): kept in the queue and re-resolved at each retry."""

    recipient: str
    original_recipient: str
    reason: str


@dataclass(frozen=True, slots=True)
class Bounce:
    """The failed part of an accepted expansion (loop, limit, dead end, or an
    ``error:`` transport), bounced with ``enhanced`` after acceptance."""

    recipient: str
    original_recipient: str
    enhanced: str
    reason: str


@dataclass(frozen=True, slots=True, init=False)
class RecipientDecision:
    """The answer to one RCPT TO.

    recipient:  the address as the client wrote it, angle brackets removed
    deliveries, deferred, bounces: filled only when the reply is 250
    expansion:  the expansion tree, depth-first (for ``explain``)
    trace:      the steps in words
    """

    reply: Reply
    recipient: str
    deliveries: tuple[Delivery, ...] = ()
    deferred: tuple[Deferred, ...] = ()
    bounces: tuple[Bounce, ...] = ()
    expansion: tuple[Step, ...] = ()
    trace: tuple[str, ...] = ()

    def __init__(
        self,
        reply: Reply,
        recipient: str,
        deliveries: tuple[Delivery, ...] = (),
        deferred: tuple[Deferred, ...] = (),
        bounces: tuple[Bounce, ...] = (),
        expansion: tuple[Step, ...] = (),
        trace: tuple[str, ...] = (),
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "reply", reply)
        object.__setattr__(self, "recipient", recipient)
        object.__setattr__(self, "deliveries", deliveries)
        object.__setattr__(self, "deferred", deferred)
        object.__setattr__(self, "bounces", bounces)
        object.__setattr__(self, "expansion", expansion)
        object.__setattr__(self, "trace", trace)

    @property
    def accepted(self) -> bool:
        return self.reply.code == 250


@dataclass(frozen=True, slots=True, init=False)
class MessagePlan:
    """Every final recipient of one message, each once."""

    deliveries: tuple[Delivery, ...]
    deferred: tuple[Deferred, ...]
    bounces: tuple[Bounce, ...]

    def __init__(
        self,
        deliveries: tuple[Delivery, ...],
        deferred: tuple[Deferred, ...],
        bounces: tuple[Bounce, ...],
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "deliveries", deliveries)
        object.__setattr__(self, "deferred", deferred)
        object.__setattr__(self, "bounces", bounces)


def plan_message(decisions: Iterable[RecipientDecision]) -> MessagePlan:
    """Merge the accepted recipients of one message (SPEC section 4): a final
    address reached from several recipients gets one copy, and keeps the
    original recipient and outcome of the first (in RCPT order; within one
    recipient, deliveries before deferred before bounces)."""
    seen: set[str] = set()
    deliveries: list[Delivery] = []
    deferred: list[Deferred] = []
    bounces: list[Bounce] = []
    for decision in decisions:
        if not decision.accepted:
            continue
        for delivery in decision.deliveries:
            if delivery.recipient not in seen:
                seen.add(delivery.recipient)
                deliveries.append(delivery)
        for item in decision.deferred:
            if item.recipient not in seen:
                seen.add(item.recipient)
                deferred.append(item)
        for bounce in decision.bounces:
            if bounce.recipient not in seen:
                seen.add(bounce.recipient)
                bounces.append(bounce)
    return MessagePlan(tuple(deliveries), tuple(deferred), tuple(bounces))
