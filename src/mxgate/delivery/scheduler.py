"""The queue manager: takes spooled messages to their next hops, retries, bounces.

Owns the life of a queued message after the 250: pick it up from ``incoming/``
(or from ``deferred/`` when a recipient is due), claim it (``active/``), route
every unfinished recipient anew from the current snapshot (a transport added
since is used at once), hand each next hop its recipients through the courier,
record every recipient's outcome (delivered, deferred until ``core.retry``
says, or bounced), queue one DSN per pass for the recipients that failed (and
a "relayed" one for those that asked for NOTIFY=SUCCESS and went to a next
hop that does not take DSN parameters, RFC 3461 5.2.2; and, once per message
when ``delay_warning_time`` is set, a "delayed" one), and finally remove
the message or put it back in ``deferred/``. A copy forwarded to an outside
address leaves with its envelope sender rewritten by SRS (``core.srs_policy``
decides; a ``srs: from=<...> rewritten=<...>`` line names both senders);
records, DSNs and the spool keep the original sender. A crash at any
point leaves the message in the spool: delivery is at least once.

Limits: a bounded active window (messages in flight); the courier applies the
per-destination and global connection caps and 50 recipients per transaction.

Never composes SMTP or DSN text itself (``smtp``, ``core.dsn``), never decides
retry times (``core.retry``) or routes (``core.routing``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from mxgate.core.envelope import Envelope, Recipient, RecipientState
from mxgate.core.outcome import Deferred, apply
from mxgate.core.reply import Reply
from mxgate.core.retry import GiveUp, RetryPolicy, delay_warning_due, next_attempt
from mxgate.core.routing import RoutingPolicy, resolve_route
from mxgate.core.snapshot import RoutingData
from mxgate.core.srs_keys import SrsContext
from mxgate.core.srs_policy import sender_for_copy
from mxgate.core.transport import Route
from mxgate.delivery.bounce import BounceSettings
from mxgate.delivery.courier import Courier, OpenBody
from mxgate.delivery.notices import Notices
from mxgate.delivery.remover import Remover
from mxgate.delivery.result import DeliveryResult, Status
from mxgate.delivery.wakeup import Doorbell, sleep
from mxgate.maillog import MailLog, delay_text
from mxgate.spool import MessageNotFoundError, Queue, QueuedMessage, Spool, SpoolError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchedulerSettings:
    bounce: BounceSettings
    retry: RetryPolicy
    queue_run_delay: float = 300.0
    incoming_poll: float = 0.2
    active_limit: int = 500
    rescan_gap: float = 0.01
    """Finished deliveries ask for a look at incoming/ (under load, new mail
    is likely there); at most one such scan per this many seconds while
    deliveries are in flight (with none, waiting would only delay)."""
    delay_decimals: int = 2
    """Postfix's delay_logging_resolution_limit (maillog.delay_text)."""


class QueueManager:
    def __init__(
        self,
        spool: Spool,
        snapshot: Callable[[], RoutingData | None],
        policy: RoutingPolicy,
        courier: Courier,
        maillog: MailLog,
        settings: SchedulerSettings,
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
        srs: Callable[[float], SrsContext | None] | None = None,
    ) -> None:
        self.spool = spool
        self.snapshot = snapshot
        self.policy = policy
        self.courier = courier
        self.maillog = maillog
        self.settings = settings
        self.clock = clock
        self.jitter = jitter
        self.srs = srs  # the SRS settings and keys at a given time; None: SRS off
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.outcomes: Counter[str] = Counter()  # recipient attempts by status (metrics)
        # The same by next hop (Route.metric_label) and status, for the metrics.
        self.outcomes_by_nexthop: Counter[tuple[str, str]] = Counter()
        # Messages whose pass gave up on a recipient (queue lifetime over).
        self._expired: dict[str, bool] = {}
        self._wake = Doorbell()
        self._stop: asyncio.Event | None = None  # run()'s; None until it runs
        # Messages whose pass is over but whose outcome the spool refused to
        # record (_keep retries): in flight, yet not taking a delivery slot.
        self._waiting: set[str] = set()
        self._urgent = False  # woken by an operator or a full window: no rescan_gap
        self._deferred_scan_at = 0.0
        # The rest of a deferred/ run that the active window cut short.
        self._deferred_left: collections.deque[str] | None = None
        self._window_full = False  # the last scan left messages for lack of room
        self._deferred_turn = False  # deferred/ goes first in the next scan
        # incoming/ is listed at most every incoming_poll seconds, unless something
        # we know of put a file there: new journal messages need no listing.
        self._incoming_listed_at = -1e9
        self._list_incoming = True
        self._remover = Remover(spool)
        self.notices = Notices(
            spool, settings.bounce, settings.retry, maillog, clock, self._look_at_incoming
        )

    def reconfigure(self, policy: RoutingPolicy, settings: SchedulerSettings) -> None:
        """Settings read anew (SIGHUP): in force for every decision from now on;
        a delivery in flight finishes as it began. A shorter queue_run_delay
        brings the next deferred run forward."""
        self.policy = policy
        self.settings = settings
        self.notices.settings = settings.bounce
        self.notices.retry = settings.retry
        self._deferred_scan_at = min(
            self._deferred_scan_at, self.clock() + settings.queue_run_delay
        )

    def _look_at_incoming(self) -> None:
        self._list_incoming = True

    @property
    def remover_pid(self) -> int | None:
        """The helper process that removes delivered messages (None: threads)."""
        return self._remover.helper_pid

    def wake(self) -> None:
        """Look at the queues now (``queue flush``, SIGUSR1), deferred ones included."""
        self._deferred_scan_at = 0.0
        self._deferred_left = None  # a fresh run, which sees what was moved since
        self._list_incoming = True
        self._urgent = True
        self._wake.ring()

    def journal_news(self) -> None:
        """New messages in the spool's journal (a worker's tick): take them up
        without listing incoming/ or deferred/ for them (a tick comes per
        durable batch, and those listings are most of what a tick would cost)."""
        self._wake.ring()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        await self._remover.start()
        # One task for the whole run: the stop rings the doorbell too.
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(self._ring)
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                self._urgent = False
                try:
                    self._scan()
                except SpoolError as exc:  # a disk problem: say so, try again later
                    self.maillog.line("qmgr", f"warning: queue scan failed: {exc}")
                scanned = loop.time()
                self._wake.clear()
                await self._wake.wait(self.settings.incoming_poll)
                # Let finished deliveries and new mail gather, when there are
                # deliveries to finish: with none in flight (a light load) the
                # gap only delayed the next message's delivery, by up to 10 ms,
                # into the moment the message after it was being received
                # (BENCHMARKS.md, session 15).
                gap = scanned + self.settings.rescan_gap - loop.time()
                if gap > 0 and self.in_flight and not self._urgent and not stop.is_set():
                    await sleep(gap)
        finally:
            stopping.cancel()
        await self.drain()
        await self._remover.close()

    def _ring(self, _stopping: object) -> None:
        self._wake.ring()

    async def drain(self) -> None:
        """Let the attempts in flight finish (their outcomes are recorded)."""
        if self.in_flight:
            await asyncio.wait(list(self.in_flight.values()))

    # -- picking messages -------------------------------------------------------
    def _scan(self) -> None:
        self._window_full = False
        free = self.settings.active_limit - self._active()
        # Files in incoming/ come from workers (bodies too big for the journal),
        # our own bounces and operators (who wake us); the poll finds the first.
        mono = time.monotonic()
        poll = self.settings.incoming_poll
        listing = self._list_incoming or mono - self._incoming_listed_at >= poll
        if listing:
            self._list_incoming = False
            self._incoming_listed_at = mono
        incoming = self.spool.scan(Queue.INCOMING, journal_limit=free, files=listing)
        sources = [(iter(incoming), Queue.INCOMING), (self._due_deferred(), Queue.DEFERRED)]
        if self._deferred_turn:
            sources.reverse()
        # One message from each queue in turn, as Postfix's qmgr alternates
        # between incoming and deferred: a steady flow of new mail must not
        # starve a deferred backlog that is due, nor the backlog new mail.
        while sources:
            for pair in list(sources):
                queue_id = next(pair[0], None)
                if queue_id is None:
                    sources.remove(pair)
                elif not self._start(queue_id, pair[1]):
                    if pair[1] is Queue.DEFERRED and self._deferred_left is not None:
                        self._deferred_left.appendleft(queue_id)  # first in the next scan
                    return

    def _due_deferred(self) -> Iterator[str]:
        """The due messages of deferred/, listed at most every queue_run_delay
        (sooner when a retry time falls due earlier). A run that the active
        window cuts short resumes where it stopped as soon as slots are free
        (``_done`` asks for a scan), not a queue_run_delay later: a backlog
        after an outage drains at the speed of delivery."""
        now = self.clock()
        if self._deferred_left is None:
            if now < self._deferred_scan_at:
                return
            self._deferred_scan_at = now + self.settings.queue_run_delay
            self._deferred_left = collections.deque(self.spool.scan(Queue.DEFERRED))
        left = self._deferred_left
        while left:
            queue_id = left.popleft()
            if queue_id in self.in_flight:
                continue
            try:
                message = self.spool.load(queue_id, Queue.DEFERRED)
            except (MessageNotFoundError, SpoolError):
                continue  # moved or removed since the listing
            due = message.envelope.next_attempt
            if due is None or due <= now:
                yield queue_id
            else:
                # Wake up in time for the earliest deferred recipient.
                self._deferred_scan_at = min(self._deferred_scan_at, due)
        self._deferred_left = None

    def _active(self) -> int:
        """Messages in the active window: in flight, less those only waiting
        to record their outcome (``_keep``)."""
        return len(self.in_flight) - len(self._waiting)

    @property
    def delivering(self) -> int:
        """Messages being delivered now (the active window's occupants)."""
        return self._active()

    @property
    def recording(self) -> int:
        """Messages whose delivery pass is over but whose outcome waits for
        room on the disk (``_keep``): not delivering, not yet deferred."""
        return len(self._waiting)

    def _start(self, queue_id: str, source: Queue) -> bool:
        """Claim and start one message; False when the active window is full."""
        if queue_id in self.in_flight:
            return True
        if self._active() >= self.settings.active_limit:
            self._window_full = True
            return False
        try:
            message = self.spool.claim(queue_id, source)
        except SpoolError as exc:
            self.maillog.line("qmgr", f"warning: {queue_id}: cannot claim: {exc}")
            return True
        if message is None:
            return True  # someone else (an operator's hold, another manager) was first
        # What is in incoming/ is new, or was released, flushed or requeued by
        # an operator, or came back after a crash: every recipient is due.
        every = source is Queue.INCOMING
        self._deferred_turn = every  # the other queue goes first next time
        task = asyncio.create_task(self._attempt(message, self.clock(), every))
        self.in_flight[queue_id] = task
        task.add_done_callback(functools.partial(self._done, queue_id))
        return True

    def _done(self, queue_id: str, task: asyncio.Task[None]) -> None:
        if self.in_flight.get(queue_id) is task:
            del self.in_flight[queue_id]
        if self._window_full:  # a slot in the active window is free: fill it at once
            self._window_full = False
            self._urgent = True
        self._wake.ring()

    # -- one delivery pass over a message -------------------------------------
    async def _attempt(self, message: QueuedMessage, claimed: float, every: bool) -> None:
        envelope = message.envelope
        try:
            await self._deliver(envelope, claimed, every)
        except Exception:  # a bug must not lose the message: it stays in active/
            log.exception("%s: delivery pass failed", envelope.queue_id)
            self.maillog.line("qmgr", f"warning: {envelope.queue_id}: internal error; will retry")
            await asyncio.sleep(1)
            with contextlib.suppress(SpoolError):
                self.spool.move(envelope.queue_id, Queue.ACTIVE, Queue.DEFERRED)

    async def _deliver(self, envelope: Envelope, claimed: float, every: bool) -> None:
        """One pass: the due recipients (``every``: all unfinished ones)."""
        now = self.clock()
        if envelope.sender == "" and not envelope.recipients:
            return
        due = [r for r in envelope.recipients if _due(r, now, every)]
        groups, unroutable = self._route(envelope, due, now)
        updated: dict[str, Recipient] = {}
        for recipient, reason in unroutable:
            result = DeliveryResult(Deferred(Reply(451, "4.3.0", reason)))
            updated[recipient.address] = self._record(
                envelope, recipient, result, claimed, now, "none"
            )
        for sender in dict.fromkeys(s for _r, s in groups if s != envelope.sender):
            self.maillog.line(
                "qmgr", f"{envelope.queue_id}: srs: from=<{envelope.sender}> rewritten=<{sender}>"
            )
        attempts = [
            self.courier.deliver(
                route,
                envelope if sender == envelope.sender else replace(envelope, sender=sender),
                rcpts,
                self._opener(envelope.queue_id),
            )
            for (route, sender), rcpts in groups.items()
        ]
        # Most messages have one next hop: no task (gather makes one each) for it.
        outcomes = [await attempts[0]] if len(attempts) == 1 else await asyncio.gather(*attempts)
        relayed: set[str] = set()  # handed to a next hop that cannot report on
        for ((route, _sender), rcpts), results in zip(groups.items(), outcomes, strict=True):
            for recipient in rcpts:
                result = results[recipient.address]
                hop = route.metric_label(recipient.address.rpartition("@")[2])
                updated[recipient.address] = self._record(
                    envelope, recipient, result, claimed, self.clock(), hop
                )
                reached = result.relay is not None  # not discard:, which has no next hop
                if result.status is Status.DELIVERED and reached and not result.dsn:
                    relayed.add(recipient.address)
        # Bounced at RCPT time already (the failed part of an expansion), not
        # reported yet: attempts == 0 marks "not reported".
        for recipient in envelope.recipients:
            if recipient.state is RecipientState.BOUNCED and recipient.attempts == 0:
                updated[recipient.address] = _mark_reported(recipient)
        if self._expired.pop(envelope.queue_id, False):
            self.maillog.line(
                "qmgr",
                f"{envelope.queue_id}: from=<{envelope.sender}>, status=expired,"
                " returned to sender",
            )
        after = envelope.with_recipients(tuple(updated.values())) if updated else envelope
        newly_bounced = {
            address for address, r in updated.items() if r.state is RecipientState.BOUNCED
        }
        policy = self.settings.retry
        owed = bool(newly_bounced) and not await self.notices.failed(after, newly_bounced)
        if owed:
            # The report could not be queued (a full spool): as Postfix defers
            # a recipient whose bounce it cannot record, the message stays and
            # its bounced recipients are tried again; the next pass meets the
            # same refusal and queues the report then. Never removed unreported.
            after = _report_later(
                envelope, after, newly_bounced, self.clock() + policy.minimal_backoff_time
            )
            self.maillog.line(
                "qmgr",
                f"{envelope.queue_id}: non-delivery notification owed for"
                f" {len(newly_bounced)} recipient(s): kept in the queue",
            )
        if relayed:
            await self.notices.relayed(after, relayed)
        if not after.is_done and delay_warning_due(
            after.arrival, self.clock(), policy.delay_warning_time, after.delay_warned
        ):
            after = await self.notices.delayed(after)
        if owed:
            await self._keep(after)
        else:
            await self._finish(after)

    def _route(
        self, envelope: Envelope, recipients: list[Recipient], now: float
    ) -> tuple[dict[tuple[Route, str], list[Recipient]], list[tuple[Recipient, str]]]:
        """Group by (route, envelope sender): a copy forwarded to the outside
        leaves with its sender rewritten by SRS (core.srs_policy)."""
        data = self.snapshot()
        srs = self.srs(now) if self.srs is not None else None
        groups: dict[tuple[Route, str], list[Recipient]] = {}
        unroutable: list[tuple[Recipient, str]] = []
        unrewritten: set[str] = set()  # why forwarded copies keep their sender
        for recipient in recipients:
            if data is None:
                unroutable.append((recipient, "routing data unavailable"))
                continue
            resolution = resolve_route(data, self.policy, recipient.address)
            if resolution.route is None:
                unroutable.append((recipient, f"no route: {resolution.problem}"))
                continue
            sender = envelope.sender
            if srs is not None:
                rewrite = sender_for_copy(srs, data, sender, recipient)
                if rewrite is not None and rewrite.temporary:
                    unroutable.append((recipient, f"srs: {rewrite.reason}"))
                    continue
                if rewrite is not None:
                    sender = rewrite.sender
                    if not rewrite.rewritten and envelope.sender:
                        unrewritten.add(rewrite.reason)
            groups.setdefault((resolution.route, sender), []).append(recipient)
        for reason in sorted(unrewritten):
            self.maillog.line(
                "qmgr",
                f"{envelope.queue_id}: srs: from=<{envelope.sender}> not rewritten: {reason}",
            )
        return groups, unroutable

    def _opener(self, queue_id: str) -> OpenBody:
        return lambda: self.spool.open_body(queue_id)

    def _record(
        self,
        envelope: Envelope,
        recipient: Recipient,
        result: DeliveryResult,
        claimed: float,
        now: float,
        hop: str,
    ) -> Recipient:
        """Apply one attempt's result, log it and count it (``hop``: the next
        hop's metrics label, Route.metric_label; "none" when unroutable)."""
        retry = None
        if isinstance(result.outcome, Deferred):
            retry = next_attempt(
                envelope.arrival,
                now,
                self.settings.retry,
                jitter=self.jitter(),
                is_bounce=envelope.sender == "",
            )
        after = apply(recipient, result.outcome, now, retry)
        # An attempt that failed for now past the queue lifetime (GiveUp) is
        # logged as what it was, deferred; the message's "status=expired"
        # line (Postfix's qmgr) follows once the pass is over.
        status = "deferred" if retry is not None else _LOGGED_STATUS[after.state._value_]
        if isinstance(retry, GiveUp):
            self._expired[envelope.queue_id] = True
        self._log_attempt(envelope, after, result, claimed, now, _agent(hop), status)
        self.outcomes_by_nexthop[(hop, status)] += 1
        return after

    def _log_attempt(
        self,
        envelope: Envelope,
        recipient: Recipient,
        result: DeliveryResult,
        claimed: float,
        now: float,
        agent: str,
        status: str,
    ) -> None:
        self.outcomes[status] += 1
        before_qmgr = max(0.0, claimed - envelope.arrival)
        setup, transmission = result.timing.setup, result.timing.transmission
        in_qmgr = max(0.0, now - claimed - setup - transmission)
        orig = (
            f", orig_to=<{recipient.original}>" if recipient.original != recipient.address else ""
        )
        decimals = self.settings.delay_decimals
        self.maillog.line(
            agent,
            f"{envelope.queue_id}: to=<{recipient.address}>{orig}, relay={result.relay_text}, "
            f"delay={delay_text(now - envelope.arrival, decimals)}, "
            f"delays={delay_text(before_qmgr, decimals)}/{delay_text(in_qmgr, decimals)}/"
            f"{delay_text(setup, decimals)}/{delay_text(transmission, decimals)}, "
            f"dsn={result.outcome.reply.enhanced or '5.0.0'}, "
            # last_reply is result.text, worked out once already by apply()
            f"status={status} ({recipient.last_reply})",
        )

    async def _finish(self, envelope: Envelope) -> None:
        queue_id = envelope.queue_id
        if envelope.is_done:
            # Every recipient is final: remove at once, without first rewriting
            # the record (an fsync per message). If a crash loses the unlink,
            # the message comes back with its old states and is delivered again:
            # at-least-once, as Postfix, which does not fsync its deletes either.
            # The unlinks wait for the disk on a busy disk: off the loop. A
            # message still in the spool's journal has no files: one line in
            # its segment's done list, written here.
            if queue_id in self.spool.journal_index:
                self.spool.remove(queue_id, Queue.ACTIVE)
            else:
                await self._remover.remove(queue_id)
            self.maillog.removed(queue_id)
            return
        # Deferred: the new states and retry times must survive a crash.
        await self._keep(envelope)

    async def _keep(self, envelope: Envelope) -> None:
        """Write the pass's outcome and put the message in deferred/. While
        the spool refuses (a full disk), keep the message claimed and try
        again: putting the old record back would deliver once more what this
        pass delivered. Postfix marks recipients done in place; a JSON record
        with a checksum cannot be patched in place, so the outcome waits here
        instead, outside the active window (``_waiting``): messages that need
        no new space (all delivered: an unlink) go on meanwhile. Given up only
        when the gateway stops: the message is then in active/ with its old
        record, which the next start delivers again (at least once, never
        lost)."""
        queue_id = envelope.queue_id
        written = False

        def defer() -> None:
            nonlocal written
            if not written:
                self.spool.update(envelope, Queue.ACTIVE)
                written = True
            # Not found: an earlier try renamed it and failed after (the
            # directory fsync); it left active/ with the new record, for
            # deferred/, where an operator may have taken it since. Recorded.
            with contextlib.suppress(MessageNotFoundError):
                self.spool.move(queue_id, Queue.ACTIVE, Queue.DEFERRED)

        wait = 1.0
        try:
            while True:
                try:
                    await asyncio.to_thread(defer)
                    return
                except SpoolError as exc:
                    stopping = self._stop is not None and self._stop.is_set()
                    then = "the message stays queued" if stopping else f"retry in {wait:.0f}s"
                    self.maillog.line(
                        "qmgr",
                        f"warning: {queue_id}: cannot record the delivery status: {exc}; {then}",
                    )
                    if stopping:
                        return
                if queue_id not in self._waiting:
                    self._waiting.add(queue_id)
                    self._wake.ring()  # its slot in the active window is free
                await self._pause(wait)
                wait = min(wait * 2, _KEEP_RETRY_MAX)
        finally:
            self._waiting.discard(queue_id)

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short when the gateway stops."""
        if self._stop is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


_KEEP_RETRY_MAX = 60.0
"""The longest wait between tries to record a pass's outcome (doubling from 1 s)."""


def _agent(hop: str) -> str:
    """The name an attempt is logged under, as Postfix names its delivery
    agents (``postfix/lmtp``, ``postfix/error``...): the transport of the next
    hop (smtp, relay, lmtp, error, retry, discard), and retry for a recipient
    without a route (Postfix's retry agent defers what no transport takes)."""
    name = hop.partition(":")[0]
    return "retry" if name == "none" else name


# Keyed by the state's value: hashing an enum member runs Enum.__hash__,
# interpreted, once per delivery (mxgate.native).
_LOGGED_STATUS = {
    RecipientState.DELIVERED._value_: "sent",
    RecipientState.DEFERRED._value_: "deferred",
    RecipientState.BOUNCED._value_: "bounced",
}


def _due(recipient: Recipient, now: float, every: bool) -> bool:
    if recipient.state is RecipientState.PENDING:
        return True
    return recipient.state is RecipientState.DEFERRED and (
        every or recipient.next_attempt is None or recipient.next_attempt <= now
    )


def _report_later(
    before: Envelope, after: Envelope, bounced: set[str], retry_at: float
) -> Envelope:
    """``after`` with the report of ``bounced`` still owed: a recipient bounced
    at RCPT time stays unreported (attempts 0), one bounced by this pass is
    deferred until ``retry_at`` with its attempt counted and its reply kept."""
    old = {r.address: r for r in before.recipients}
    recipients = []
    for recipient in after.recipients:
        prior = old.get(recipient.address)
        if recipient.address in bounced and prior is not None:
            if prior.state is RecipientState.BOUNCED:
                recipient = prior
            else:
                recipient = replace(recipient, state=RecipientState.DEFERRED, next_attempt=retry_at)
        recipients.append(recipient)
    return after.with_recipients(tuple(recipients))


def _mark_reported(recipient: Recipient) -> Recipient:
    return replace(recipient, attempts=1)
