"""The reports the queue manager sends after a delivery pass (RFC 3464 DSNs).

Owns who gets which notice and the log line that says so: the non-delivery
report for recipients that bounced (to the sender, or to ``postmaster`` for
a failed bounce, once, else dropped with a log line), the "relayed" notice for
recipients that asked for NOTIFY=SUCCESS and went to a next hop without DSN
(RFC 3461 5.2.2), and the one delay warning per message of
``delay_warning_time``. Each is a new message in incoming/, committed like
any other; ``on_queue`` tells the queue manager to look there.

Never composes the report itself (``core.dsn``) and never decides a
recipient's state (the queue manager does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from mxgate.core.dsn import Kind, bounce_target, recipients_to_report
from mxgate.core.envelope import Envelope, Recipient
from mxgate.core.retry import RetryPolicy, will_retry_until
from mxgate.delivery.bounce import BounceSettings, enqueue_bounce, is_our_bounce
from mxgate.maillog import MailLog
from mxgate.spool import Spool, SpoolError


class Notices:
    def __init__(
        self,
        spool: Spool,
        settings: BounceSettings,
        retry: RetryPolicy,
        maillog: MailLog,
        clock: Callable[[], float],
        on_queue: Callable[[], None],
    ) -> None:
        self.spool = spool
        self.settings = settings
        self.retry = retry
        self.maillog = maillog
        self.clock = clock
        self.on_queue = on_queue

    async def failed(self, envelope: Envelope, addresses: set[str]) -> bool:
        """One report for the recipients of ``addresses`` that just bounced;
        False when the report is owed (it could not be queued)."""
        target = bounce_target(envelope, is_our_bounce(envelope), self.settings.postmaster)
        if target is None:
            self.maillog.line(
                "bounce",
                f"{envelope.queue_id}: undeliverable "
                f"{'postmaster notification' if envelope.sender == '' else 'message'} "
                "discarded (no one to tell)",
            )
            return True
        postmaster_copy = target != envelope.sender
        failed = [
            r
            for r in recipients_to_report(envelope, "failure", postmaster_copy=postmaster_copy)
            if r.address in addresses
        ]
        if not failed:
            return True  # NOTIFY=NEVER, or NOTIFY without FAILURE: the sender asked for silence
        return await self._queue(
            envelope, failed, target, "failure", "sender non-delivery notification"
        )

    async def relayed(self, envelope: Envelope, addresses: set[str]) -> None:
        """RFC 3461 5.2.2: recipients that asked for NOTIFY=SUCCESS and were
        handed to a next hop without the DSN extension get a "relayed" notice
        (no one else will report their delivery). Never to the null sender."""
        if envelope.sender == "":
            return
        relayed = [r for r in recipients_to_report(envelope, "relayed") if r.address in addresses]
        if relayed:
            await self._queue(
                envelope, relayed, envelope.sender, "relayed", "sender delivery status notification"
            )

    async def delayed(self, envelope: Envelope) -> Envelope:
        """Postfix's delay_warning_time: once per message, the sender hears
        which recipients are still being retried, and until when (headers
        only). Never to the null sender; a NOTIFY without DELAY is silence.
        Returns the envelope marked as warned, to be recorded with the pass;
        unmarked when the notice could not be queued (tried again next pass)."""
        delayed = recipients_to_report(envelope, "delay") if envelope.sender else ()
        if delayed:
            expiry = will_retry_until(envelope.arrival, self.retry, is_bounce=False)
            queued = await self._queue(
                envelope, delayed, envelope.sender, "delay", "sender delay notification", expiry
            )
            if not queued:
                return envelope
        return replace(envelope, delay_warned=True)

    async def _queue(
        self,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        target: str,
        kind: Kind,
        what: str,
        will_retry_until: float | None = None,
    ) -> bool:
        self.on_queue()  # the notice goes to incoming/
        try:
            notice_id = await enqueue_bounce(
                self.spool,
                envelope,
                recipients,
                target,
                self.settings,
                self.clock(),
                kind=kind,
                will_retry_until=will_retry_until,
            )
        except SpoolError as exc:
            self.maillog.line("bounce", f"warning: {envelope.queue_id}: cannot queue {what}: {exc}")
            return False
        self.maillog.line("bounce", f"{envelope.queue_id}: {what}: {notice_id}")
        return True
