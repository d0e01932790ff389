"""The queue manager over a real spool, a real courier and scripted next hops on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import errno
import io
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mxgate.core.envelope import Envelope, Notify, Recipient, RecipientState
from mxgate.core.retry import RetryPolicy
from mxgate.core.routing import RoutingPolicy
from mxgate.core.snapshot import RoutingData
from mxgate.delivery import Courier, CourierConfig, StaticResolver, notices
from mxgate.delivery.bounce import BounceSettings
from mxgate.delivery.scheduler import QueueManager, SchedulerSettings
from mxgate.maillog import MailLog
from mxgate.spool import Queue, Spool, SpoolError, admin, fsio
from tests.delivery.peers import PeerScript, ScriptedPeer

BODY = b"Subject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHello there.\r\n"
POLICY = RoutingPolicy(
    myhostname="mx.test.example",
    mynetworks=(),
    local_addresses=(),
    postmaster="postmaster@ops.example",
)


def snapshot(port: int, *, routed: bool = True) -> RoutingData:
    data = RoutingData()
    data.domains = {"example.com": None, "ops.example": None}
    data.mailboxes = {"a@example.com": "n", "b@example.com": "n", "postmaster@ops.example": "n"}
    if routed:
        data.transports = {
            "example.com": {"": f"smtp:[127.0.0.1]:{port}"},
            "ops.example": {"": f"smtp:[127.0.0.1]:{port}"},
        }
    return data


def enqueue(spool: Spool, sender: str, recipients: list[Recipient], arrival: float = 1e9) -> str:
    writer = spool.begin()
    writer.write(BODY)
    writer.commit_sync(
        Envelope(
            queue_id=writer.queue_id,
            sender=sender,
            arrival=arrival,
            client_address="192.0.2.7",
            client_helo="client.example",
            client_hostname="unknown",
            size=len(BODY),
            recipients=tuple(recipients),
        )
    )
    return writer.queue_id


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def manager(
    spool: Spool,
    data: Callable[[], RoutingData | None],
    clock: Clock,
    log: io.StringIO,
    retry: RetryPolicy | None = None,
) -> QueueManager:
    courier = Courier(CourierConfig(helo_name="mx.test.example"), StaticResolver())
    return QueueManager(
        spool,
        data,
        POLICY,
        courier,
        MailLog("mx.test.example", log),
        SchedulerSettings(
            bounce=BounceSettings(hostname="mx.test.example", postmaster="postmaster@ops.example"),
            retry=retry or RetryPolicy(),
            incoming_poll=0.05,
        ),
        clock=clock,
        jitter=lambda: 0.0,
    )


@contextlib.asynccontextmanager
async def running(qm: QueueManager) -> AsyncIterator[None]:
    """The manager runs inside the block, and is stopped (and drained) after it."""
    stop = asyncio.Event()
    runner = asyncio.create_task(qm.run(stop))
    try:
        yield
    finally:
        stop.set()
        await runner


async def until(done: Callable[[], bool], rounds: int = 100) -> None:
    """Wait until ``done()`` holds, at most ``rounds`` times 50 ms."""
    for _ in range(rounds):
        await asyncio.sleep(0.05)
        if done():
            return


async def settle(qm: QueueManager, spool: Spool, rounds: int = 100) -> None:
    """Run the manager until the incoming queue is empty and nothing is in flight."""
    async with running(qm):
        await until(lambda: not spool.scan(Queue.INCOMING) and not qm.in_flight, rounds)


def test_delivers_and_removes(tmp_path: Path) -> None:
    async def run() -> None:
        async with ScriptedPeer() as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(
                    spool,
                    "s@example.org",
                    [
                        Recipient("a@example.com", "a@example.com"),
                        Recipient("b@example.com", "alias@example.com"),
                    ],
                )
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                await settle(qm, spool)
                assert spool.locate(qid) is None
            [message] = peer.messages
            assert "<s@example.org>" in message.mail_from
            assert sorted(message.rcpts) == ["a@example.com", "b@example.com"]
            assert message.data == BODY
            text = log.getvalue()
            assert f"{qid}: to=<a@example.com>, relay=127.0.0.1[127.0.0.1]:{peer.port}" in text
            assert "to=<b@example.com>, orig_to=<alias@example.com>" in text
            assert "dsn=2.0.0, status=sent (" in text
            # Postfix's digits: the 5 s in the queue, the rest under 5 ms (0).
            figure = r"\d+(?:\.\d\d?)?"
            assert re.search(rf"delay=5, delays=5/0/{figure}/{figure}, dsn=2\.0\.0", text), text
            assert f"{qid}: removed" in text

    asyncio.run(run())


def test_temporary_failure_defers_with_backoff_then_flush_delivers(tmp_path: Path) -> None:
    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "451 4.3.0 try later")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            clock = Clock(1e9 + 10)
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(spool, "s@example.org", [Recipient("a@example.com", "a@example.com")])
                qm = manager(spool, lambda: snapshot(peer.port), clock, log)
                await settle(qm, spool)
                deferred = spool.load(qid)
                assert deferred.queue is Queue.DEFERRED
                [rcpt] = deferred.envelope.recipients
                assert rcpt.state is RecipientState.DEFERRED
                assert rcpt.attempts == 1
                # Postfix: the wait is the time in queue clamped to [300 s, 4000 s].
                assert rcpt.next_attempt == clock.now + 300
                assert "451 4.3.0 try later" in rcpt.last_reply
                assert "status=deferred" in log.getvalue()
                # Not due yet: a scan leaves it alone.
                await settle(qm, spool)
                assert spool.load(qid).envelope.recipients[0].attempts == 1
                # The peer recovers; time passes; the retry delivers.
                script.rcpt = lambda arg: "250 2.1.5 Ok"
                clock.now += 301
                qm.wake()
                await settle(qm, spool)
                assert spool.locate(qid) is None
            assert len(peer.messages) == 1

    asyncio.run(run())


def test_permanent_failure_bounces_to_the_sender_once(tmp_path: Path) -> None:
    async def run() -> None:
        script = PeerScript(
            rcpt=lambda arg: "550 5.1.1 no such user" if "b@" in arg else "250 2.1.5 Ok"
        )
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(
                    spool,
                    "s@example.com",
                    [
                        Recipient("a@example.com", "a@example.com"),
                        Recipient(
                            "b@example.com",
                            "b@example.com",
                            orcpt="rfc822;b@example.com",
                            notify=frozenset({Notify.FAILURE}),
                        ),
                    ],
                )
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                await settle(qm, spool)
                await settle(qm, spool)  # the bounce itself is delivered too
                assert spool.locate(qid) is None
                assert not list(spool.list_all())
            original, bounce = peer.messages
            assert original.rcpts == ["a@example.com"]
            assert bounce.mail_from.startswith("FROM:<>")
            assert bounce.rcpts == ["s@example.com"]
            report = email.message_from_bytes(bounce.data, policy=email.policy.default)
            assert report.get_content_type() == "multipart/report"
            status = [p for p in report.walk() if p.get_content_type() == "message/delivery-status"]
            assert status, "no delivery-status part"
            text = bytes(status[0]).decode()
            assert "Final-Recipient: rfc822; b@example.com" in text
            assert "Action: failed" in text and "Status: 5.1.1" in text
            assert "sender non-delivery notification" in log.getvalue()

    asyncio.run(run())


def test_a_bounce_that_cannot_be_queued_keeps_the_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full spool refuses the non-delivery report: the original stays
    queued, its bounced recipient deferred (as Postfix defers a recipient whose
    bounce it cannot record), and a later pass reports it. Before, the
    original was removed and the sender never heard."""
    full = True
    real = notices.enqueue_bounce  # type: ignore[attr-defined]

    async def enqueue_bounce(*args: Any, **kwargs: Any) -> str:
        if full:
            raise SpoolError("No space left on device")
        return await real(*args, **kwargs)

    monkeypatch.setattr(notices, "enqueue_bounce", enqueue_bounce)

    async def run() -> None:
        nonlocal full
        script = PeerScript(rcpt=lambda arg: "550 5.1.1 gone" if "a@" in arg else "250 2.1.5 Ok")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(spool, "s@example.com", [Recipient("a@example.com", "a@example.com")])
                clock = Clock(1e9 + 5)
                qm = manager(spool, lambda: snapshot(peer.port), clock, log)
                await settle(qm, spool)
                assert spool.locate(qid) is Queue.DEFERRED
                [kept] = spool.load(qid, Queue.DEFERRED).envelope.recipients
                assert kept.state is RecipientState.DEFERRED and kept.attempts == 1
                assert "550 5.1.1 gone" in kept.last_reply
                assert "non-delivery notification owed for 1 recipient(s)" in log.getvalue()
                # The spool has room again; the retry meets the same 550 and reports it.
                full = False
                clock.now += 301
                await settle(qm, spool)
                await settle(qm, spool)  # the report itself goes out
                assert spool.locate(qid) is None
            bounces = [m for m in peer.messages if m.mail_from.startswith("FROM:<>")]
            assert [b.rcpts for b in bounces] == [["s@example.com"]]

    asyncio.run(run())


def test_notify_success_to_a_next_hop_without_dsn_gets_a_relayed_notice(tmp_path: Path) -> None:
    async def run() -> None:
        script = PeerScript(extensions=("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"))
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            success = frozenset({Notify.SUCCESS})
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(
                    spool,
                    "s@example.com",
                    [
                        Recipient("a@example.com", "a@example.com", notify=success),
                        Recipient("b@example.com", "b@example.com"),  # no NOTIFY: no notice
                    ],
                )
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                await settle(qm, spool)
                await settle(qm, spool)  # the notice itself is delivered too
                assert not list(spool.list_all())
            original, notice = peer.messages
            assert sorted(original.rcpts) == ["a@example.com", "b@example.com"]
            assert not any("NOTIFY=" in line for s in peer.sessions for line in s.commands)
            assert notice.mail_from.startswith("FROM:<>") and notice.rcpts == ["s@example.com"]
            report = email.message_from_bytes(notice.data, policy=email.policy.default)
            [status] = [
                p for p in report.walk() if p.get_content_type() == "message/delivery-status"
            ]
            text = bytes(status).decode()
            assert "Final-Recipient: rfc822; a@example.com" in text and "b@example.com" not in text
            assert "Action: relayed" in text
            assert f"{qid}: sender delivery status notification: " in log.getvalue()

    asyncio.run(run())


def test_notify_success_to_a_next_hop_with_dsn_is_passed_on_without_a_notice(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        async with ScriptedPeer() as peer:  # offers DSN
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                enqueue(
                    spool,
                    "s@example.com",
                    [
                        Recipient(
                            "a@example.com", "a@example.com", notify=frozenset({Notify.SUCCESS})
                        )
                    ],
                )
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                await settle(qm, spool)
                await settle(qm, spool)
                assert not list(spool.list_all())
            assert len(peer.messages) == 1  # the message, and no notice
            [rcpt] = [line for s in peer.sessions for line in s.commands if line.startswith("RCPT")]
            assert "NOTIFY=SUCCESS" in rcpt
            assert "notification" not in log.getvalue()

    asyncio.run(run())


def test_null_sender_failure_goes_to_postmaster_and_never_to_the_null_sender(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "550 5.1.1 gone" if "a@" in arg else "250 2.1.5 Ok")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                enqueue(spool, "", [Recipient("a@example.com", "a@example.com")])
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                await settle(qm, spool)
                await settle(qm, spool)
                assert not list(spool.list_all())
            bounce = peer.messages[-1]
            assert bounce.mail_from.startswith("FROM:<>")
            assert bounce.rcpts == ["postmaster@ops.example"]

    asyncio.run(run())


def test_a_failed_postmaster_notification_is_dropped(tmp_path: Path) -> None:
    async def run() -> None:
        async with ScriptedPeer(PeerScript(rcpt=lambda arg: "550 5.1.1 gone")) as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                enqueue(spool, "", [Recipient("a@example.com", "a@example.com")])
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                for _ in range(3):
                    await settle(qm, spool)
                assert not list(spool.list_all())
            assert "discarded (no one to tell)" in log.getvalue()
            assert not peer.messages  # nothing was ever accepted

    asyncio.run(run())


def test_no_route_defers_and_a_route_added_later_is_used(tmp_path: Path) -> None:
    async def run() -> None:
        async with ScriptedPeer() as peer:
            log = io.StringIO()
            clock = Clock(1e9 + 5)
            current = {"data": snapshot(peer.port, routed=False)}
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(spool, "s@example.org", [Recipient("a@example.com", "a@example.com")])
                qm = manager(spool, lambda: current["data"], clock, log)
                await settle(qm, spool)
                [rcpt] = spool.load(qid).envelope.recipients
                assert rcpt.state is RecipientState.DEFERRED
                assert "no route" in rcpt.last_reply
                assert qm.outcomes_by_nexthop == {("none", "deferred"): 1}
                current["data"] = snapshot(peer.port)
                clock.now += 1000
                qm.wake()
                await settle(qm, spool)
                assert spool.locate(qid) is None
                assert qm.outcomes_by_nexthop == {
                    ("none", "deferred"): 1,
                    (f"smtp:[127.0.0.1]:{peer.port}", "sent"): 1,
                }
                assert qm.outcomes == {"deferred": 1, "sent": 1}
            assert len(peer.messages) == 1
            # Logged under the agent Postfix would name: retry for what no
            # transport takes, then the transport's own name.
            lines = log.getvalue()
            assert re.search(r"mxgate/retry\[\d+\]: \w+: to=<a@example.com>.*deferred", lines)
            assert re.search(r"mxgate/smtp\[\d+\]: \w+: to=<a@example.com>.*status=sent", lines)

    asyncio.run(run())


def test_expiry_bounces_after_maximal_queue_lifetime(tmp_path: Path) -> None:
    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "450 4.2.0 busy" if "a@" in arg else "250 2.1.5 Ok")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            arrival = 1e9
            clock = Clock(arrival + 5 * 86400 + 1)
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(
                    spool, "s@example.com", [Recipient("a@example.com", "a@example.com")], arrival
                )
                qm = manager(spool, lambda: snapshot(peer.port), clock, log)
                await settle(qm, spool)
                await settle(qm, spool)
                assert spool.locate(qid) is None
            bounce = peer.messages[-1]
            assert bounce.mail_from.startswith("FROM:<>")
            assert b"Action: failed" in bounce.data
            assert b"450 4.2.0 busy" in bounce.data
            # Logged as Postfix does: the attempt was deferred, the message expired.
            text = log.getvalue()
            assert f"{qid}: to=<a@example.com>" in text
            assert "status=deferred (host" in text and "status=bounced" not in text
            assert f"{qid}: from=<s@example.com>, status=expired, returned to sender" in text
            assert qm.outcomes["deferred"] == 1 and qm.outcomes["bounced"] == 0

    asyncio.run(run())


def test_delay_warning_once_when_delay_warning_time_is_set(tmp_path: Path) -> None:
    """Postfix's delay_warning_time: after 4 h in the queue the sender hears,
    once, which recipients are still being retried (headers only); a
    recipient with NOTIFY=FAILURE is not listed; retries go on."""

    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "451 4.3.0 try later")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            arrival = 1e9
            clock = Clock(arrival + 10)
            retry = RetryPolicy(delay_warning_time=4 * 3600)
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(
                    spool,
                    "s@example.org",
                    [
                        Recipient("a@example.com", "a@example.com"),
                        Recipient(
                            "b@example.com", "b@example.com", notify=frozenset({Notify.FAILURE})
                        ),
                    ],
                    arrival,
                )
                # The sender's domain goes to the peer too, which defers the
                # warning as well (with no route it would bounce: NXDOMAIN).
                data = snapshot(peer.port)
                data.domains["example.org"] = None
                data.transports["example.org"] = {"": f"smtp:[127.0.0.1]:{peer.port}"}
                qm = manager(spool, lambda: data, clock, log, retry)
                await settle(qm, spool)  # too young for a warning
                assert "delay notification" not in log.getvalue()
                assert not spool.load(qid).envelope.delay_warned
                for _ in range(2):  # two retries after the 4 hours: one warning
                    clock.now += 4 * 3600
                    qm.wake()
                    await settle(qm, spool)
                    await settle(qm, spool)  # the warning itself goes out (deferred too)
                kept = spool.load(qid)
                assert kept.queue is Queue.DEFERRED and kept.envelope.delay_warned
                assert log.getvalue().count(f"{qid}: sender delay notification: ") == 1
                messages = [spool.load(entry.queue_id) for entry in spool.list_all()]
                warnings = [m for m in messages if m.envelope.sender == ""]
                assert len(warnings) == 1
                [warning] = warnings
                assert [r.address for r in warning.envelope.recipients] == ["s@example.org"]
                with spool.open_body(warning.envelope.queue_id) as body:
                    report = email.message_from_bytes(body.read(), policy=email.policy.default)
            assert report["Subject"] == "Delayed Mail (still being retried)"
            [status] = [
                p for p in report.walk() if p.get_content_type() == "message/delivery-status"
            ]
            text = bytes(status).decode()
            assert "Final-Recipient: rfc822; a@example.com" in text
            assert "b@example.com" not in text  # NOTIFY=FAILURE: no delay warning
            assert "Action: delayed" in text and "Will-Retry-Until: " in text
            returned = [p.get_content_type() for p in report.walk()][-1]
            assert returned == "text/rfc822-headers"  # the headers, not the message

    asyncio.run(run())


def test_no_delay_warning_by_default_or_for_the_null_sender(tmp_path: Path) -> None:
    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "451 4.3.0 try later")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            clock = Clock(1e9 + 86400)
            with Spool(tmp_path / "spool") as spool:
                plain = enqueue(
                    spool, "s@example.org", [Recipient("a@example.com", "a@example.com")]
                )
                qm = manager(spool, lambda: snapshot(peer.port), clock, log)
                await settle(qm, spool)
                assert not spool.load(plain).envelope.delay_warned  # 0: never (Postfix)
                bounce = enqueue(spool, "", [Recipient("b@example.com", "b@example.com")])
                warned = RetryPolicy(delay_warning_time=3600)
                qm = manager(spool, lambda: snapshot(peer.port), clock, log, warned)
                await settle(qm, spool)
                assert spool.load(bounce).envelope.delay_warned  # settled, silently
            assert "delay notification" not in log.getvalue()

    asyncio.run(run())


def deferred_until(when: float) -> Recipient:
    """a@example.com, tried once already and due again at ``when``."""
    return Recipient(
        "a@example.com",
        "a@example.com",
        state=RecipientState.DEFERRED,
        attempts=1,
        next_attempt=when,
    )


def test_a_message_in_incoming_is_tried_for_every_recipient_whatever_its_retry_time(
    tmp_path: Path,
) -> None:
    """Released, flushed or requeued messages are renamed into incoming/
    without a rewrite (spool/admin.py): there, a deferred recipient is due
    at once, though its record still names a retry time hours away."""

    async def run() -> None:
        async with ScriptedPeer() as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(spool, "s@example.org", [deferred_until(4e9)])
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                await settle(qm, spool)
                assert spool.locate(qid) is None
            assert [m.rcpts for m in peer.messages] == [["a@example.com"]]

    asyncio.run(run())


def test_a_deferred_backlog_larger_than_the_active_window_drains_in_one_queue_run(
    tmp_path: Path,
) -> None:
    """Six due messages, room for two at a time: the run resumes as slots
    free up. Before, the run stopped at the full window and the other four
    waited for the next queue_run_delay (300 s; about 500 messages per 5
    minutes with the defaults after an outage)."""

    async def run() -> None:
        async with ScriptedPeer() as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                due = deferred_until(1e9)
                queued = []
                for _ in range(6):
                    qid = enqueue(spool, "s@example.org", [due])
                    spool.move(qid, Queue.INCOMING, Queue.DEFERRED)
                    queued.append(qid)
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                qm.settings = replace(qm.settings, active_limit=2)
                async with running(qm):
                    await until(lambda: not spool.scan(Queue.DEFERRED) and not qm.in_flight)
                assert [spool.locate(q) for q in queued] == [None] * 6
            assert len(peer.messages) == 6

    asyncio.run(run())


class FullDisk(fsio.FileSystem):
    """Refuses to create the next ``refusals`` files (ENOSPC)."""

    refusals = 0

    def create(self, path: Path) -> int:
        if self.refusals:
            self.refusals -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().create(path)


def test_a_pass_whose_outcome_cannot_be_written_waits_instead_of_delivering_again(
    tmp_path: Path,
) -> None:
    """a@ is delivered, b@ deferred, and the spool refuses the new record
    twice (a full disk): the message stays claimed and the write is retried.
    Before, the old record (a@ still pending) went back to deferred/ and the
    next pass delivered a@ a second time."""

    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "451 4.3.0 later" if "b@" in arg else "250 2.1.5 Ok")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            clock = Clock(1e9 + 5)
            full = FullDisk()
            with Spool(tmp_path / "spool", fs=full) as spool:
                qid = enqueue(
                    spool,
                    "s@example.org",
                    [
                        Recipient("a@example.com", "a@example.com"),
                        Recipient("b@example.com", "b@example.com"),
                    ],
                )
                full.refusals = 2  # the next two new files: the rewritten record
                qm = manager(spool, lambda: snapshot(peer.port), clock, log)
                await settle(qm, spool)
                assert full.refusals == 0
                kept = spool.load(qid, Queue.DEFERRED).envelope.recipients
                assert [r.state for r in kept] == [
                    RecipientState.DELIVERED,
                    RecipientState.DEFERRED,
                ]
                assert "cannot record the delivery status: " in log.getvalue()
                assert "No space left on device; retry in 1s" in log.getvalue()
                # b@ is taken later; a@ is not sent again.
                script.rcpt = lambda arg: "250 2.1.5 Ok"
                clock.now += 301
                await settle(qm, spool)
                assert spool.locate(qid) is None
            delivered = [r for m in peer.messages for r in m.rcpts]
            assert sorted(delivered) == ["a@example.com", "b@example.com"]

    asyncio.run(run())


def test_a_message_waiting_to_record_its_outcome_leaves_its_delivery_slot_free(
    tmp_path: Path,
) -> None:
    """Room for one message; A (a@ delivered, b@ deferred) cannot record
    its outcome on the full disk and waits: B, which needs no new space to
    finish (delivered: an unlink), is delivered meanwhile. Before, A kept
    the only slot until the disk had room, and nothing moved."""

    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "451 4.3.0 later" if "b@" in arg else "250 2.1.5 Ok")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            full = FullDisk()
            with Spool(tmp_path / "spool", fs=full) as spool:
                both = [
                    Recipient("a@example.com", "a@example.com"),
                    Recipient("b@example.com", "b@example.com"),
                ]
                first = enqueue(spool, "s@example.org", both)
                second = enqueue(spool, "s@example.org", both[:1])
                full.refusals = 10**6  # until further notice
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                qm.settings = replace(qm.settings, active_limit=1)
                async with running(qm):
                    await until(lambda: spool.locate(second) is None)
                    assert spool.locate(second) is None  # delivered while A waits
                    assert spool.locate(first) is Queue.ACTIVE
                    # What the gauges show: A waits to record, nothing is delivering
                    # (once B's task has ended: it may outlive its removal briefly).
                    await until(lambda: qm.delivering == 0)
                    assert (qm.delivering, qm.recording) == (0, 1)
                    full.refusals = 0  # room again: A's next try records it
                    await until(lambda: spool.locate(first) is Queue.DEFERRED, 200)
                assert spool.locate(first) is Queue.DEFERRED

    asyncio.run(run())


class FailingDirectorySync(fsio.FileSystem):
    """The next fsync of ``path`` fails (EIO) once ``armed``."""

    def __init__(self, path: Path) -> None:
        self.path, self.armed = path, False

    def fsync_dir(self, path: Path) -> None:
        if self.armed and path == self.path:
            self.armed = False
            raise OSError(errno.EIO, "Input/output error")
        super().fsync_dir(path)


def test_a_record_moved_before_a_failed_fsync_counts_as_recorded(tmp_path: Path) -> None:
    """The move to deferred/ renamed the record and then failed (directory
    fsync), and an operator flushed the message meanwhile: the next try
    finds the record gone from active/ and stops, and the flushed message is
    delivered. Before, the queue manager retried for ever (the record was
    no longer where it looked) and kept the message from being delivered."""

    async def run() -> None:
        script = PeerScript(rcpt=lambda arg: "451 4.3.0 later" if "b@" in arg else "250 2.1.5 Ok")
        async with ScriptedPeer(script) as peer:
            log = io.StringIO()
            root = tmp_path / "spool"
            failing = FailingDirectorySync(root / "deferred")
            with Spool(root, fs=failing) as spool:
                qid = enqueue(
                    spool,
                    "s@example.org",
                    [
                        Recipient("a@example.com", "a@example.com"),
                        Recipient("b@example.com", "b@example.com"),
                    ],
                )
                failing.armed = True
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                async with running(qm):
                    await until(lambda: "cannot record the delivery status" in log.getvalue())
                    assert spool.locate(qid) is Queue.DEFERRED  # renamed, not fsynced
                    script.rcpt = lambda arg: "250 2.1.5 Ok"
                    assert admin.flush(spool, admin.Selector(queue_ids=(qid,))).done == [qid]
                    await until(lambda: spool.locate(qid) is None, 200)
                assert spool.locate(qid) is None
            delivered = [r for m in peer.messages for r in m.rcpts]
            assert sorted(delivered) == ["a@example.com", "b@example.com"]

    asyncio.run(run())


def test_new_mail_and_a_due_deferred_backlog_take_turns(tmp_path: Path) -> None:
    """Room for one message at a time, three new and three due deferred
    messages: they alternate, as Postfix's qmgr alternates between its
    incoming and deferred queues. Before, incoming always went first, and a
    steady flow of new mail starved the backlog."""

    async def run() -> None:
        async with ScriptedPeer() as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                for _ in range(3):
                    qid = enqueue(spool, "old@example.org", [deferred_until(1e9)])
                    spool.move(qid, Queue.INCOMING, Queue.DEFERRED)
                for _ in range(3):
                    enqueue(spool, "new@example.org", [Recipient("a@example.com", "a@example.com")])
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                # One at a time, and incoming/ listed at every scan.
                qm.settings = replace(qm.settings, active_limit=1, incoming_poll=0.001)
                async with running(qm):
                    await until(lambda: len(peer.messages) == 6 and not qm.in_flight, 200)
            senders = [m.mail_from.split(">")[0].split("<")[1][:3] for m in peer.messages]
            assert senders in (["new", "old"] * 3, ["old", "new"] * 3), senders

    asyncio.run(run())


async def _receive_in_journal(spool: Spool) -> str:
    with spool.begin() as writer:
        writer.write(BODY)
        await writer.commit(
            Envelope(
                queue_id=writer.queue_id,
                sender="s@example.org",
                arrival=1e9,
                client_address="192.0.2.7",
                client_helo="client.example",
                client_hostname="unknown",
                size=len(BODY),
                recipients=(Recipient("a@example.com", "a@example.com"),),
            )
        )
        return writer.queue_id


def test_a_journal_backlog_larger_than_the_active_window_drains_without_a_poll(
    tmp_path: Path,
) -> None:
    """Five messages in the journal, room for two at a time, no poll for 30 s:
    the scan that filled the window took only as many as there were free
    slots, so each finished delivery must bring in the next ones."""

    async def run() -> None:
        async with ScriptedPeer() as peer:
            root = tmp_path / "spool"
            ticks: list[tuple[str, int, bool]] = []
            with Spool(root, journal=True, notify=lambda *tick: ticks.append(tick)) as gateway:
                queued = [await _receive_in_journal(gateway) for _ in range(5)]
            with Spool(root) as spool:
                for tick in ticks:
                    spool.feed_journal(*tick)
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), io.StringIO())
                qm.settings = replace(qm.settings, active_limit=2, incoming_poll=30.0)
                async with running(qm):
                    await until(lambda: len(peer.messages) == 5 and not qm.in_flight, rounds=60)
                assert len(peer.messages) == 5
                assert [spool.locate(q) for q in queued] == [None] * 5

    asyncio.run(run())


def test_a_bounce_is_sent_at_once_not_at_the_next_poll(tmp_path: Path) -> None:
    """The report we queue in incoming/ ourselves wakes the queue manager
    (no poll for 30 s here)."""

    async def run() -> None:
        script = PeerScript(
            rcpt=lambda arg: "550 5.1.1 no such user" if "b@" in arg else "250 2.1.5 Ok"
        )
        async with ScriptedPeer(script) as peer:
            with Spool(tmp_path / "spool") as spool:
                enqueue(spool, "s@example.com", [Recipient("b@example.com", "b@example.com")])
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), io.StringIO())
                qm.settings = replace(qm.settings, incoming_poll=30.0)
                async with running(qm):
                    await until(lambda: len(peer.messages) == 1 and not qm.in_flight, rounds=60)
            assert [m.mail_from.startswith("FROM:<>") for m in peer.messages] == [True]

    asyncio.run(run())


def test_with_nothing_in_flight_a_new_message_does_not_wait_for_the_rescan_gap(
    tmp_path: Path,
) -> None:
    """The gap lets deliveries gather under load; with none in flight it only
    held the next message back (here the gap is 5 s, and no poll for 30 s)."""

    async def run() -> None:
        async with ScriptedPeer() as peer:
            root = tmp_path / "spool"
            ticks: list[tuple[str, int, bool]] = []
            with (
                Spool(root, journal=True, notify=lambda *tick: ticks.append(tick)) as gateway,
                Spool(root) as spool,
            ):
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), io.StringIO())
                qm.settings = replace(qm.settings, rescan_gap=5.0, incoming_poll=30.0)
                async with running(qm):
                    await asyncio.sleep(0.1)  # its first scan found nothing
                    await _receive_in_journal(gateway)
                    for tick in ticks:
                        spool.feed_journal(*tick)
                    qm.journal_news()
                    await until(lambda: len(peer.messages) == 1 and not qm.in_flight, rounds=40)
                    assert len(peer.messages) == 1

    asyncio.run(run())
