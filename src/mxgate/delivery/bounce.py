"""Putting a delivery status notification into the queue.

Owns the I/O half of bouncing: read the start of the original message from the
spool, have ``core.dsn`` compose the report, and commit it to the spool as a
new message from the null sender (so the queue manager delivers it like any
other, with retries). What is reported, and to whom, is decided in ``core.dsn``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mxgate.core.dsn import BOUNCE_SIZE_LIMIT, Kind, compose_bounce
from mxgate.core.envelope import Envelope, Recipient
from mxgate.spool import Spool

LOCAL_ORIGIN = ""
"""``client_address`` of messages we make ourselves (bounces): no SMTP client."""


@dataclass(frozen=True, slots=True)
class BounceSettings:
    hostname: str
    postmaster: str


def is_our_bounce(envelope: Envelope) -> bool:
    """A notification we made (null sender, no SMTP client), not one we relay."""
    return envelope.sender == "" and envelope.client_address == LOCAL_ORIGIN


def _original(spool: Spool, queue_id: str) -> bytes | None:
    try:
        with spool.open_body(queue_id) as handle:
            return handle.read(BOUNCE_SIZE_LIMIT + 1)
    except OSError:
        return None


async def enqueue_bounce(
    spool: Spool,
    envelope: Envelope,
    failed: Sequence[Recipient],
    target: str,
    settings: BounceSettings,
    now: float,
    *,
    kind: Kind = "failure",
    will_retry_until: float | None = None,
) -> str:
    """Compose the DSN of ``kind`` for ``failed`` (the recipients it reports)
    to ``target`` and commit it; its queue id. ``will_retry_until``: for a
    delay warning, when the message expires."""
    postmaster_copy = target != envelope.sender
    writer = spool.begin()
    bounce = compose_bounce(
        envelope,
        failed,
        reporting_mta=settings.hostname,
        now=now,
        message_id=f"{writer.queue_id}@{settings.hostname}",
        original=_original(spool, envelope.queue_id),
        postmaster_copy=postmaster_copy,
        postmaster=settings.postmaster or None,
        kind=kind,
        will_retry_until=will_retry_until,
    )
    try:
        writer.write(bounce.data)
        await writer.commit(
            Envelope(
                queue_id=writer.queue_id,
                sender="",
                arrival=now,
                client_address=LOCAL_ORIGIN,
                client_helo="",
                client_hostname="localhost",
                size=len(bounce.data),
                body_type=bounce.body_type,
                smtputf8=bounce.smtputf8,
                recipients=(Recipient(address=bounce.recipient, original=bounce.recipient),),
            )
        )
    except BaseException:
        writer.abort()
        raise
    return writer.queue_id
