"""The Spool API on a real directory: receiving, queue operations, recovery."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest

from mxgate.core.envelope import RecipientState
from mxgate.spool import (
    MessageNotFoundError,
    Queue,
    Spool,
    SpoolBusyError,
    SpoolCorruptError,
    SpoolError,
)
from mxgate.spool.writer import BUFFER_SIZE
from tests.spool.util import assert_intact, make_body, make_envelope, store, tree


@pytest.fixture
def spool(tmp_path: Path):
    with Spool(tmp_path / "spool") as opened:
        yield opened


def test_layout_is_created(spool: Spool) -> None:
    names = {p.name for p in spool.layout.root.iterdir()}
    assert names == {
        "tmp",
        "data",
        "incoming",
        "active",
        "deferred",
        "hold",
        "corrupt",
        "journal",
        "lock",
    }


def test_round_trip(spool: Spool) -> None:
    body = make_body("X", 10_000)
    queue_id = store(spool, body)
    assert spool.scan(Queue.INCOMING) == [queue_id]
    message = spool.load(queue_id)
    assert message.queue is Queue.INCOMING
    assert message.envelope == make_envelope(queue_id, size=len(body))
    assert_intact(spool, queue_id, body)
    assert tree(spool.layout.root) == {"data": [queue_id], "incoming": [queue_id]}


def test_body_is_streamed_not_buffered(spool: Spool) -> None:
    chunk = b"x" * 1000
    with spool.begin() as writer:
        for _ in range(1000):
            writer.write(chunk)
            body = spool.layout.body(writer.queue_id)
            on_disk = body.stat().st_size if body.exists() else 0
            assert writer.size - on_disk < BUFFER_SIZE
        writer.commit_sync(make_envelope(writer.queue_id))
    assert spool.load(writer.queue_id).body_size == 1_000_000


def test_abort_and_context_manager_leave_nothing(spool: Spool) -> None:
    writer = spool.begin()
    writer.write(b"data")
    writer.abort()
    writer.abort()
    with spool.begin() as other:
        other.write(b"x" * (BUFFER_SIZE + 1))
    assert tree(spool.layout.root) == {}


def test_writer_refuses_use_after_commit(spool: Spool) -> None:
    with spool.begin() as writer:
        writer.commit_sync(make_envelope(writer.queue_id))
        with pytest.raises(SpoolError):
            writer.write(b"more")
        with pytest.raises(SpoolError):
            writer.commit_sync(make_envelope(writer.queue_id))
    assert spool.locate(writer.queue_id) is Queue.INCOMING  # leaving the block kept it


def test_commit_checks_the_envelope(spool: Spool) -> None:
    with spool.begin() as writer:
        with pytest.raises(ValueError):
            writer.commit_sync(make_envelope("OTHER0000000"))
        with pytest.raises(ValueError):
            writer.commit_sync(replace(make_envelope(writer.queue_id), recipients=()))
    assert tree(spool.layout.root) == {}


def test_begin_with_a_chosen_id(spool: Spool) -> None:
    queue_id = spool.new_queue_id()
    with spool.begin(queue_id) as writer:
        assert writer.queue_id == queue_id
        with pytest.raises(SpoolError):
            spool.begin(queue_id)  # taken (O_EXCL on the body file)
        writer.commit_sync(make_envelope(queue_id))
    with pytest.raises(SpoolError):
        spool.begin("../../etc")


def test_a_chosen_id_whose_body_exists_fails_at_the_commit(spool: Spool) -> None:
    queue_id = spool.new_queue_id()
    other = spool.layout.body(queue_id)
    other.write_bytes(b"somebody else's body")
    with spool.begin(queue_id) as writer:  # not looked up on disk: O_EXCL decides
        writer.write(b"newcomer\r\n")
        with pytest.raises(SpoolError):
            writer.commit_sync(make_envelope(queue_id))
    assert other.read_bytes() == b"somebody else's body"
    assert tree(spool.layout.root) == {"data": [queue_id]}


def test_claim_update_move_remove(spool: Spool) -> None:
    body = make_body("Y", 3000)
    queue_id = store(spool, body)
    claimed = spool.claim(queue_id)
    assert claimed is not None and claimed.queue is Queue.ACTIVE
    assert spool.claim(queue_id) is None  # somebody else was first

    env = claimed.envelope
    rcpt = replace(
        env.recipients[0],
        state=RecipientState.DEFERRED,
        attempts=1,
        next_attempt=1767226000.0,
        last_reply="451 4.7.1 greylisted",
    )
    spool.update(env.with_recipient(rcpt), Queue.ACTIVE)
    spool.move(queue_id, Queue.ACTIVE, Queue.DEFERRED)
    loaded = spool.load(queue_id)
    assert loaded.queue is Queue.DEFERRED
    assert loaded.envelope.recipients[0] == rcpt
    assert loaded.envelope.next_attempt == 1767226000.0
    assert_intact(spool, queue_id, body)  # the body was not rewritten
    assert list(spool.layout.tmp.iterdir()) == []

    spool.move(queue_id, Queue.DEFERRED, Queue.HOLD)
    assert spool.locate(queue_id) is Queue.HOLD
    with pytest.raises(MessageNotFoundError):
        spool.move(queue_id, Queue.DEFERRED, Queue.INCOMING)
    assert spool.claim(queue_id, Queue.DEFERRED) is None
    spool.move(queue_id, Queue.HOLD, Queue.DEFERRED)
    assert spool.claim(queue_id, Queue.DEFERRED) is not None

    spool.remove(queue_id, Queue.ACTIVE)
    assert tree(spool.layout.root) == {}
    with pytest.raises(MessageNotFoundError):
        spool.load(queue_id)
    with pytest.raises(MessageNotFoundError):
        spool.remove(queue_id, Queue.ACTIVE)
    with pytest.raises(MessageNotFoundError):
        spool.open_body(queue_id)


def test_list_all_includes_unreadable_records(spool: Spool) -> None:
    first = store(spool, b"one\r\n")
    second = store(spool, b"two\r\n")
    spool.move(second, Queue.INCOMING, Queue.HOLD)
    spool.layout.record(Queue.HOLD, second).write_bytes(b"torn")
    entries = {e.queue_id: e for e in spool.list_all()}
    assert entries[first].message is not None and entries[first].queue is Queue.INCOMING
    assert entries[second].message is None and entries[second].queue is Queue.HOLD
    assert "truncated" in (entries[second].problem or "")
    with pytest.raises(SpoolCorruptError):
        spool.load(second)
    spool.move(second, Queue.HOLD, Queue.DEFERRED)
    with pytest.raises(SpoolCorruptError):
        spool.claim(second, Queue.DEFERRED)
    assert spool.locate(second) is None  # quarantined on the spot
    assert (spool.layout.queue_dir(Queue.CORRUPT) / f"{second}.body").exists()


def test_a_queue_id_clash_fails_the_newcomer_and_spares_the_other(spool: Spool) -> None:
    writer = spool.begin()
    writer.write(b"newcomer\r\n")
    other = spool.layout.body(writer.queue_id)
    other.write_bytes(b"somebody else's body")  # as if the clock had stepped back
    with pytest.raises(SpoolError):
        writer.commit_sync(make_envelope(writer.queue_id))
    assert other.read_bytes() == b"somebody else's body"
    assert list(spool.layout.tmp.iterdir()) == []
    assert spool.scan(Queue.INCOMING) == []


def test_recover_cleans_tmp_requeues_active_and_quarantines(
    spool: Spool, caplog: pytest.LogCaptureFixture
) -> None:
    layout = spool.layout
    good = store(spool, make_body("G", 2000))
    active = store(spool, make_body("A", 2000))
    spool.claim(active)
    torn = store(spool, make_body("T", 2000))
    record = layout.record(Queue.INCOMING, torn)
    record.write_bytes(record.read_bytes()[:-10])
    short_body = store(spool, make_body("S", 2000))
    os.truncate(layout.body(short_body), 1000)
    no_body = store(spool, make_body("N", 2000))
    os.unlink(layout.body(no_body))
    (layout.tmp / "LEFTOVER.1.2").write_bytes(b"half a message")
    (layout.data / "ORPHAN0000000").write_bytes(b"never committed")
    (layout.queue_dir(Queue.DEFERRED) / "junk.txt").write_bytes(b"?")

    with caplog.at_level(logging.WARNING, logger="mxgate.spool"):
        report = spool.recover()

    assert report.tmp_removed == 1
    assert report.requeued == [active]
    assert sorted(report.corrupt) == sorted([torn, short_body, no_body, "junk.txt"])
    assert report.orphans_removed == 1
    assert report.messages == 2
    assert f"{torn}: corrupt queue file moved to corrupt/ (" in caplog.text
    assert set(spool.scan(Queue.INCOMING)) == {good, active}
    corrupt = {p.name for p in layout.queue_dir(Queue.CORRUPT).iterdir()}
    assert {torn, f"{torn}.body", short_body, f"{short_body}.body", no_body} <= corrupt
    assert list(layout.tmp.iterdir()) == []
    assert {p.name for p in layout.data.iterdir()} == {good, active}
    assert spool.recover().corrupt == []  # idempotent


def test_recover_can_verify_body_checksums(spool: Spool) -> None:
    queue_id = store(spool, make_body("V", 2000))
    body = spool.layout.body(queue_id)
    data = bytearray(body.read_bytes())
    data[100] ^= 1
    body.write_bytes(bytes(data))
    assert spool.recover().corrupt == []  # same size: only a checksum can tell
    assert spool.recover(verify_bodies=True).corrupt == [queue_id]


def test_recover_refuses_while_the_spool_is_in_use(spool: Spool) -> None:
    with Spool(spool.layout.root), pytest.raises(SpoolBusyError):
        spool.recover()
    writer = spool.begin()
    with pytest.raises(SpoolBusyError):
        spool.recover()
    writer.abort()
    queue_id = store(spool, b"still usable\r\n")  # the shared lock was taken back
    assert spool.recover().messages == 1
    with Spool(spool.layout.root) as other, pytest.raises(SpoolBusyError):
        other.recover()
    assert spool.locate(queue_id) is Queue.INCOMING


def test_quarantine_from_a_queue(spool: Spool) -> None:
    queue_id = store(spool, b"x\r\n")
    spool.quarantine(queue_id, Queue.INCOMING, "operator says so")
    assert spool.locate(queue_id) is None
    entries = [e for e in spool.list_all() if e.queue is Queue.CORRUPT]
    assert [e.queue_id for e in entries] == [queue_id]
    spool.remove(queue_id, Queue.CORRUPT)
    assert tree(spool.layout.root) == {}
