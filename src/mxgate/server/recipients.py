"""From the routing plan of a message to the recipients recorded in its envelope.

Owns the translation of the core's plan (deliveries, deferred, bounced parts of
the expansion) plus the client's DSN parameters (NOTIFY, ORCPT, given per RCPT)
into spool ``Recipient`` records. Pure: time is an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from mxgate.core.decision import MessagePlan
from mxgate.core.envelope import JsonValue, Notify, Recipient, RecipientState
from mxgate.core.srs_policy import ROUTE_FLAG
from mxgate.core.transport import Route
from mxgate.smtp import RcptTo


def route_record(route: Route, srs: bool = False) -> dict[str, JsonValue]:
    """The route as a hint the spool keeps (the queue manager re-resolves it),
    and ``"srs": true`` for a copy forwarded to the outside (its sender is
    rewritten when it leaves)."""
    record: dict[str, JsonValue] = {
        "kind": route.kind._value_,  # not .value: a property written in Python
        "transport": route.transport,
        "nexthop": route.nexthop,
        "host": route.host,
        "port": route.port,
        "mx_lookup": route.mx_lookup,
    }
    if srs:
        record[ROUTE_FLAG] = True
    return record


def envelope_recipients(
    plan: MessagePlan,
    rcpt_of: Mapping[str, RcptTo],
    notify: Callable[[RcptTo], frozenset[Notify]],
    now: float,
) -> tuple[Recipient, ...]:
    """One record per final recipient: pending, deferred (no route yet) or bounced."""

    def dsn(original: str) -> tuple[str | None, frozenset[Notify]]:
        rcpt = rcpt_of.get(original)
        if rcpt is None:
            return None, frozenset()
        return rcpt.orcpt, notify(rcpt)

    records: list[Recipient] = []
    for delivery in plan.deliveries:
        orcpt, words = dsn(delivery.original_recipient)
        records.append(
            Recipient(
                address=delivery.recipient,
                original=delivery.original_recipient,
                orcpt=orcpt,
                notify=words,
                route=route_record(delivery.route, delivery.srs),
            )
        )
    for deferred in plan.deferred:
        orcpt, words = dsn(deferred.original_recipient)
        records.append(
            Recipient(
                address=deferred.recipient,
                original=deferred.original_recipient,
                orcpt=orcpt,
                notify=words,
                state=RecipientState.DEFERRED,
                next_attempt=now,
                last_reply=deferred.reason,
            )
        )
    for bounce in plan.bounces:
        orcpt, words = dsn(bounce.original_recipient)
        records.append(
            Recipient(
                address=bounce.recipient,
                original=bounce.original_recipient,
                orcpt=orcpt,
                notify=words,
                state=RecipientState.BOUNCED,
                last_reply=f"{bounce.enhanced} {bounce.reason}",
            )
        )
    return tuple(records)
