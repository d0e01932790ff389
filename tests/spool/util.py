"""Envelopes, bodies and checks shared by the spool tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mxgate.core.envelope import BodyType, DsnRet, Envelope, Notify, Recipient
from mxgate.spool import LIVE_QUEUES, Queue, Spool


def make_envelope(queue_id: str, recipients: int = 1, size: int = 0) -> Envelope:
    return Envelope(
        queue_id=queue_id,
        sender="sender@example.org",
        arrival=1767225600.25,
        client_address="192.0.2.7",
        client_helo="mail.example.org",
        client_hostname="mail.example.org",
        size=size,
        body_type=BodyType.EIGHTBITMIME,
        smtputf8=False,
        ret=DsnRet.HDRS,
        envid="ENV-1",
        recipients=tuple(
            Recipient(
                address=f"user{i}@example.com",
                original=f"alias{i}@example.com",
                orcpt=f"rfc822;alias{i}@example.com",
                notify=frozenset({Notify.FAILURE, Notify.DELAY}),
                route={"kind": "smtp", "host": "192.0.2.25", "port": 25, "mx": False},
            )
            for i in range(recipients)
        ),
    )


def make_body(queue_id: str, size: int = 4096) -> bytes:
    """A body whose content depends on the queue id, so a mix-up shows."""
    head = f"Received: from test\r\nMessage-Id: <{queue_id}@test>\r\n\r\n".encode()
    line = (queue_id * 4 + "\r\n").encode()
    filler = line * (max(0, size - len(head)) // len(line) + 1)
    return (head + filler)[:size] if size >= len(head) else head


def store(spool: Spool, body: bytes, chunk: int = 1000) -> str:
    """Receive and commit (blocking) one message; its queue id."""
    with spool.begin() as writer:
        for start in range(0, len(body), chunk):
            writer.write(body[start : start + chunk])
        writer.commit_sync(make_envelope(writer.queue_id, size=len(body)))
        return writer.queue_id


async def receive(spool: Spool, body: bytes) -> str:
    """Receive and commit (awaiting the group commit, or the journal's) one message."""
    with spool.begin() as writer:
        writer.write(body)
        await writer.commit(make_envelope(writer.queue_id, size=len(body)))
        return writer.queue_id


def tree(root: Path) -> dict[str, list[str]]:
    """Non-empty directories of a spool and their file names (for assertions)."""
    return {
        d.name: sorted(p.name for p in d.iterdir())
        for d in sorted(root.iterdir())
        if d.is_dir() and any(d.iterdir())
    }


def assert_intact(spool: Spool, queue_id: str, body: bytes) -> None:
    """The message is in a live queue with the exact body and a valid record."""
    queue = spool.locate(queue_id)
    assert queue in LIVE_QUEUES, f"{queue_id} missing"
    message = spool.load(queue_id, queue)
    assert message.body_size == len(body)
    with spool.open_body(queue_id) as stream:
        assert hashlib.sha256(stream.read()).digest() == hashlib.sha256(body).digest()


def assert_clean(spool: Spool) -> None:
    """Nothing half-done: tmp/ empty, every body has a record and vice versa."""
    layout = spool.layout
    assert list(layout.tmp.iterdir()) == []
    records = {p.name for q in LIVE_QUEUES for p in layout.queue_dir(q).iterdir()}
    bodies = {p.name for p in layout.data.iterdir()}
    assert records == bodies
    assert Queue.CORRUPT.value not in tree(layout.root)
