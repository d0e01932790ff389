"""The queue manager's part of SRS: a copy forwarded to the outside leaves with
its sender rewritten, every other copy with the sender it came with."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from pathlib import Path

from mxgate.core.envelope import Recipient, RecipientState
from mxgate.core.srs import SrsAddress, parse, reverse
from mxgate.core.srs_keys import SrsContext, SrsKey, SrsKeyRing, SrsSettings
from mxgate.core.srs_policy import ROUTE_FLAG
from mxgate.delivery.scheduler import QueueManager
from mxgate.spool import Queue, Spool
from tests.delivery.peers import ScriptedPeer
from tests.delivery.test_scheduler import POLICY, Clock, enqueue, manager, settle, snapshot

SENDER = "s@example.org"
KEY = SrsKey(1, "the gateway's secret", signs_from=0.0)
NOW = 1e9 + 5


def with_srs(qm: QueueManager, ring: SrsKeyRing) -> QueueManager:
    qm.srs = lambda now: SrsContext(SrsSettings("srs.test"), ring, now)
    return qm


def recipients() -> list[Recipient]:
    return [
        Recipient("a@example.com", "a@example.com"),  # our own next hop
        Recipient("Out@outside.example", "fwd@example.com", route={ROUTE_FLAG: True}),
        Recipient("plain@outside.example", "plain@outside.example"),  # relayed, no forward
    ]


def test_only_the_forwarded_copy_is_rewritten(tmp_path: Path) -> None:
    async def run() -> None:
        async with ScriptedPeer() as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(spool, SENDER, recipients())
                qm = manager(spool, lambda: snapshot(peer.port), Clock(NOW), log)
                qm.policy = replace(POLICY, relayhost=f"[127.0.0.1]:{peer.port}")
                await settle(with_srs(qm, SrsKeyRing((KEY,), "database", NOW)), spool)
                assert spool.locate(qid) is None
            by_rcpt = {rcpt: m.mail_from for m in peer.messages for rcpt in m.rcpts}
            assert set(by_rcpt) == {"a@example.com", "Out@outside.example", "plain@outside.example"}
            assert f"<{SENDER}>" in by_rcpt["a@example.com"]
            assert f"<{SENDER}>" in by_rcpt["plain@outside.example"]
            rewritten = by_rcpt["Out@outside.example"].split("<", 1)[1].split(">", 1)[0]
            assert rewritten.startswith("SRS0=") and rewritten.endswith("@srs.test")
            parsed = parse(rewritten.rsplit("@", 1)[0])
            assert isinstance(parsed, SrsAddress)
            assert reverse(parsed, (KEY.secret,), NOW) == ("s", "example.org")
            text = log.getvalue()
            assert f"{qid}: srs: from=<{SENDER}> rewritten=<{rewritten}>" in text
            assert "to=<Out@outside.example>, orig_to=<fwd@example.com>" in text

    asyncio.run(run())


def test_without_keys_the_forwarded_copy_waits(tmp_path: Path) -> None:
    async def run() -> None:
        async with ScriptedPeer() as peer:
            log = io.StringIO()
            with Spool(tmp_path / "spool") as spool:
                qid = enqueue(spool, SENDER, recipients())
                qm = manager(spool, lambda: snapshot(peer.port), Clock(NOW), log)
                qm.policy = replace(POLICY, relayhost=f"[127.0.0.1]:{peer.port}")
                await settle(with_srs(qm, SrsKeyRing()), spool)
                message = spool.load(qid, Queue.DEFERRED)
            states = {r.address: r.state for r in message.envelope.recipients}
            assert states == {
                "a@example.com": RecipientState.DELIVERED,
                "Out@outside.example": RecipientState.DEFERRED,
                "plain@outside.example": RecipientState.DELIVERED,
            }
            [waiting] = [r for r in message.envelope.recipients if r.address.startswith("Out")]
            assert "srs: SRS keys not loaded yet" in waiting.last_reply
            assert waiting.route.get(ROUTE_FLAG) is True  # kept for the retry
            assert all(f"<{SENDER}>" in m.mail_from for m in peer.messages)

    asyncio.run(run())


def test_the_null_sender_is_never_rewritten(tmp_path: Path) -> None:
    async def run() -> None:
        async with ScriptedPeer() as peer:
            with Spool(tmp_path / "spool") as spool:
                enqueue(spool, "", recipients()[1:2])
                qm = manager(spool, lambda: snapshot(peer.port), Clock(NOW), io.StringIO())
                qm.policy = replace(POLICY, relayhost=f"[127.0.0.1]:{peer.port}")
                await settle(with_srs(qm, SrsKeyRing((KEY,), "database", NOW)), spool)
            [message] = peer.messages
            assert message.mail_from.startswith("FROM:<>")

    asyncio.run(run())
