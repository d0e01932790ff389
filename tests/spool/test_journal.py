"""The journal on real files: frames, group commit, the queue manager's index,
writing out, recovery after a crash, and what tools see."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.core.envelope import RecipientState
from mxgate.spool import Queue, Spool, SpoolError
from mxgate.spool.format import Record, decode, encode
from mxgate.spool.journal import (
    DONE_SUFFIX,
    JournalCommitter,
    JournalWriter,
    frame,
    frames,
    is_segment_name,
    read_done,
)
from mxgate.spool.journal_index import JournalIndex, journal_dir, recover_journal
from mxgate.spool.writer import BUFFER_SIZE
from tests.spool.util import make_body, make_envelope, receive


def _frame(queue_id: str, size: int = 300) -> bytes:
    body = make_body(queue_id, size)
    record = encode(Record(make_envelope(queue_id, size=size), len(body), "0" * 64))
    return frame(queue_id, record, body)


# -- frames -----------------------------------------------------------------------


def test_frames_round_trip() -> None:
    data = _frame("AAAAAAAA") + _frame("BBBBBBBB", 5000)
    found = list(frames(data))
    assert [f.queue_id for f in found] == ["AAAAAAAA", "BBBBBBBB"]
    assert found[1].offset == found[0].end and found[1].end == len(data)
    assert data[found[1].body_offset : found[1].end] == make_body("BBBBBBBB", 5000)


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(min_value=0, max_value=2 * 700))
def test_a_torn_write_never_yields_a_partial_frame(cut: int) -> None:
    one, two = _frame("AAAAAAAA", 400), _frame("BBBBBBBB", 400)
    data = (one + two)[:cut]
    names = [f.queue_id for f in frames(data)]
    expected = ["AAAAAAAA", "BBBBBBBB"][: (cut >= len(one)) + (cut >= len(one) + len(two))]
    assert names == expected


@settings(max_examples=60, deadline=None)
@given(position=st.integers(min_value=0, max_value=699), flip=st.integers(1, 255))
def test_a_damaged_byte_stops_the_reader(position: int, flip: int) -> None:
    one = _frame("AAAAAAAA", 400)
    position %= len(one)
    damaged = bytearray(one + _frame("BBBBBBBB", 400))
    damaged[position] ^= flip
    # The damaged frame and everything after it are not read as messages.
    assert list(frames(bytes(damaged))) == []


# -- group commit -------------------------------------------------------------------


async def _commit_many(committer: JournalCommitter, ids: list[str]) -> None:
    await asyncio.gather(*(committer.commit(q, _frame(q)) for q in ids))


def test_concurrent_commits_share_fdatasyncs(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, bool]] = []
    names = iter(f"SEG{n:05d}" for n in range(100))
    writer = JournalWriter(tmp_path, lambda: next(names))
    committer = JournalCommitter(writer, lambda *tick: ticks.append(tick))
    ids = [f"M{n:07d}" for n in range(200)]
    asyncio.run(_commit_many(committer, ids))
    assert committer.batches < len(ids) // 10
    segment = tmp_path / "SEG00000"
    assert [f.queue_id for f in frames(segment.read_bytes())] == ids
    # The last tick says everything is durable.
    assert ticks[-1] == ("SEG00000", segment.stat().st_size, False)
    committer.close()
    assert ticks[-1] == ("SEG00000", segment.stat().st_size, True)


def test_a_full_segment_is_sealed_and_the_next_one_started(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, bool]] = []
    names = iter(f"SEG{n:05d}" for n in range(100))
    writer = JournalWriter(tmp_path, lambda: next(names), limit=2000)
    committer = JournalCommitter(writer, lambda *tick: ticks.append(tick))

    async def one_by_one() -> None:
        for n in range(6):
            await committer.commit(f"M{n:07d}", _frame(f"M{n:07d}", 900))

    asyncio.run(one_by_one())
    sealed = [name for name, _, done in ticks if done]
    assert sealed and sealed[0] == "SEG00000"
    assert len({name for name, _, _ in ticks}) >= 2


def test_a_batch_is_answered_before_the_queue_manager_hears_of_it(tmp_path: Path) -> None:
    # The tick wakes the master; the sessions' 250s go out first.
    events: list[str] = []
    names = iter(f"SEG{n:05d}" for n in range(100))
    for fails in (False, True):
        writer = (FailingSync if fails else JournalWriter)(tmp_path, lambda: next(names))
        committer = JournalCommitter(writer, lambda *tick: events.append("tick"))

        async def batch(committer: JournalCommitter = committer) -> None:
            done = asyncio.get_running_loop().create_future()
            for n in range(3):
                committer.submit(f"M{n:07d}", _frame(f"M{n:07d}"), lambda e: events.append("done"))
            committer.submit("M9999999", _frame("M9999999"), done.set_result)
            await done

        events.clear()
        asyncio.run(batch())
        assert events == ["done", "done", "done", "tick"], fails
        committer.close()


class FailingSync(JournalWriter):
    def sync(self) -> None:
        raise OSError(5, "Input/output error")


def test_a_failed_fdatasync_fails_the_batch_and_cancels_its_frames(tmp_path: Path) -> None:
    names = iter(f"SEG{n:05d}" for n in range(100))
    committer = JournalCommitter(FailingSync(tmp_path, lambda: next(names)))
    with pytest.raises(SpoolError, match="fdatasync"):
        asyncio.run(committer.commit("M0000001", _frame("M0000001")))
    # The frame may be complete on disk, but it is listed as never to deliver.
    assert read_done(tmp_path / ("SEG00000" + DONE_SUFFIX)) == {"M0000001"}


# -- through the Spool: the worker's and the queue manager's sides -------------------


def test_small_messages_go_to_the_journal_big_ones_to_files(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, bool]] = []
    root = tmp_path / "spool"
    with Spool(root, journal=True, notify=lambda *t: ticks.append(t)) as spool:
        small = asyncio.run(receive(spool, make_body("x", 4000)))
        big = asyncio.run(receive(spool, make_body("y", BUFFER_SIZE + 10)))
    assert not (root / "data" / small).exists()
    assert (root / "incoming" / big).exists() and (root / "data" / big).exists()
    assert ticks and ticks[-1][2]  # sealed at close
    # The queue manager (another Spool) learns of it from the tick and delivers it.
    with Spool(root) as manager:
        for tick in ticks:
            manager.feed_journal(*tick)
        # Files first, then the journal's messages (at most as many as asked).
        assert manager.scan(Queue.INCOMING) == [big, small]
        assert manager.scan(Queue.INCOMING, journal_limit=0) == [big]
        message = manager.claim(small)
        assert message is not None and message.queue is Queue.ACTIVE
        with manager.open_body(small) as body:
            assert body.read() == make_body("x", 4000)
        manager.remove(small, Queue.ACTIVE)
        assert manager.scan(Queue.INCOMING) == [big]
    # Sealed and every frame done: the segment is gone.
    assert os.listdir(journal_dir(Spool(root).layout)) == []


def test_a_deferred_journal_message_is_written_out_as_queue_files(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, bool]] = []
    root = tmp_path / "spool"
    with Spool(root, journal=True, notify=lambda *t: ticks.append(t)) as spool:
        queue_id = asyncio.run(receive(spool, make_body("z", 3000)))
    with Spool(root) as manager:
        for tick in ticks:
            manager.feed_journal(*tick)
        message = manager.claim(queue_id)
        assert message is not None
        rcpt = replace(message.envelope.recipients[0], state=RecipientState.DEFERRED, attempts=1)
        manager.update(replace(message.envelope, recipients=(rcpt,)), Queue.ACTIVE)
        manager.move(queue_id, Queue.ACTIVE, Queue.DEFERRED)
        loaded = manager.load(queue_id, Queue.DEFERRED)
        assert loaded.envelope.recipients[0].state is RecipientState.DEFERRED
        with manager.open_body(queue_id) as body:
            assert body.read() == make_body("z", 3000)
    assert os.listdir(root / "journal") == []
    assert os.listdir(root / "tmp") == []
    # The frame carried no body checksum (its CRC-32 covered the body); the
    # queue file's record has one, and a verifying recovery accepts the body.
    record = decode((root / "deferred" / queue_id).read_bytes())
    assert record.body_sha256 == hashlib.sha256(make_body("z", 3000)).hexdigest()
    with Spool(root) as restarted:
        assert restarted.recover(verify_bodies=True).corrupt == []
        assert restarted.scan(Queue.DEFERRED) == [queue_id]


def test_a_journal_frame_carries_no_body_checksum(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root, journal=True) as spool:
        queue_id = asyncio.run(receive(spool, make_body("c", 2500)))
    [segment] = [p for p in (root / "journal").iterdir() if is_segment_name(p.name)]
    data = segment.read_bytes()
    [item] = list(frames(data))
    record = decode(data[item.record_offset : item.body_offset])
    assert record.envelope.queue_id == queue_id
    assert record.body_size == 2500 and record.body_sha256 == ""


def test_tools_see_journal_messages_as_active(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root, journal=True) as spool:
        queue_id = asyncio.run(receive(spool, make_body("t", 2000)))
        with Spool(root) as tool:
            [entry] = list(tool.list_all())
            assert entry.queue_id == queue_id and entry.queue is Queue.ACTIVE
            assert entry.message is not None and entry.message.body_size == 2000
            with tool.open_body(queue_id) as body:
                assert body.read() == make_body("t", 2000)


# -- recovery ----------------------------------------------------------------------


def test_recovery_leaves_unfinished_frames_to_the_queue_manager(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root) as spool:
        layout = spool.layout
    directory = journal_dir(layout)
    whole = [_frame(q) for q in ("K0000001", "K0000002", "K0000003")]
    # A worker killed in the middle of a write: the third frame is torn.
    (directory / "SEGA").write_bytes(whole[0] + whole[1] + whole[2][:100])
    (directory / ("SEGA" + DONE_SUFFIX)).write_text("K0000001\n")
    with Spool(root) as spool:
        report = spool.recover()
        assert report.requeued == ["K0000002"]
        # The queue manager takes the segment over and delivers from it.
        assert spool.adopt_journal() == 1
        assert spool.scan(Queue.INCOMING) == ["K0000002"]
        message = spool.claim("K0000002")
        assert message is not None and message.envelope.queue_id == "K0000002"
        spool.remove("K0000002", Queue.ACTIVE)
    # Done and sealed (the torn tail was never acknowledged): the segment is gone.
    assert os.listdir(directory) == []


def test_recovery_keeps_a_segment_damaged_in_the_middle(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root) as spool:
        layout = spool.layout
    directory = journal_dir(layout)
    good, bad, after = _frame("K0000001"), bytearray(_frame("K0000002")), _frame("K0000003")
    bad[40] ^= 0xFF
    (directory / "SEGB").write_bytes(good + bytes(bad) + after)
    from mxgate.spool.fsio import FileSystem

    report = recover_journal(FileSystem(), layout)
    assert report.queue_ids == ["K0000001"]
    assert report.damaged == ["SEGB"]
    assert (root / "corrupt" / "journal-SEGB").exists()


def test_index_deletes_a_segment_only_when_sealed_and_done(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root) as spool:
        layout = spool.layout
    from mxgate.spool.fsio import FileSystem

    directory = journal_dir(layout)
    data = _frame("K0000001") + _frame("K0000002")
    (directory / "SEGC").write_bytes(data)
    index = JournalIndex(layout, FileSystem())
    assert index.feed("SEGC", len(data), False) == 2
    index.claim("K0000001")
    index.done("K0000001")
    index.claim("K0000002")
    index.done("K0000002")
    assert (directory / "SEGC").exists()  # not sealed: more frames may come
    index.feed("SEGC", len(data), True)
    assert not (directory / "SEGC").exists()
    index.close()


def test_a_quiet_loop_syncs_inline_with_the_same_outcome(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, bool]] = []
    names = iter(f"SEG{n:05d}" for n in range(100))
    writer = JournalWriter(tmp_path, lambda: next(names))
    committer = JournalCommitter(writer, lambda *tick: ticks.append(tick), quiet=lambda: True)
    ids = [f"Q{n:07d}" for n in range(20)]
    asyncio.run(_commit_many(committer, ids))
    assert committer._sync_thread is None  # never needed
    segment = tmp_path / "SEG00000"
    assert [f.queue_id for f in frames(segment.read_bytes())] == ids
    assert ticks[-1] == ("SEG00000", segment.stat().st_size, False)
    failing = JournalCommitter(FailingSync(tmp_path, lambda: next(names)), quiet=lambda: True)
    with pytest.raises(SpoolError, match="fdatasync"):
        asyncio.run(failing.commit("Q9999999", _frame("Q9999999")))


def test_on_a_stopped_gateway_tools_can_hold_journal_messages(tmp_path: Path) -> None:
    from mxgate.spool import admin

    root = tmp_path / "spool"
    with Spool(root, journal=True) as worker:
        first = asyncio.run(receive(worker, make_body("h1", 1500)))
        # While the worker (the gateway) has the spool open, nothing is written
        # out: the message is being delivered, and the tools call it busy.
        with Spool(root) as tool:
            assert tool.settle_journal() == 0
            report = admin.hold(tool, admin.Selector(queue_ids=(first,)))
            assert report.busy == [first]
    # Stopped: the tool writes it out and holds it like any queued message.
    with Spool(root) as tool:
        assert tool.settle_journal() == 1
        report = admin.hold(tool, admin.Selector(queue_ids=(first,)))
        assert report.done == [first]
        assert tool.locate(first) is Queue.HOLD
        with tool.open_body(first) as body:
            assert body.read() == make_body("h1", 1500)
    assert os.listdir(root / "journal") == []


def test_a_message_that_cannot_be_written_out_waits_in_the_journal(tmp_path: Path) -> None:
    """Deferring needs room for queue files; without it (here: every create
    fails with ENOSPC) the message stays safe in its segment and is offered
    again after ``park_seconds``, neither lost from view nor retried in a loop."""
    import errno

    from tests.spool.fakes import FailingFS

    ticks: list[tuple[str, int, bool]] = []
    root = tmp_path / "spool"
    with Spool(root, journal=True, notify=lambda *t: ticks.append(t)) as worker:
        queue_id = asyncio.run(receive(worker, make_body("p", 2500)))
    full = FailingFS(code=errno.ENOSPC, matches=lambda op, _path: op == "create")
    with Spool(root, fs=full) as manager:
        manager.park_seconds = 0.2
        for tick in ticks:
            manager.feed_journal(*tick)
        message = manager.claim(queue_id)
        assert message is not None
        rcpt = replace(message.envelope.recipients[0], state=RecipientState.DEFERRED, attempts=1)
        deferred = replace(message.envelope, recipients=(rcpt,))
        with pytest.raises(SpoolError):
            manager.update(deferred, Queue.ACTIVE)
        with pytest.raises(SpoolError):
            manager.move(queue_id, Queue.ACTIVE, Queue.DEFERRED)
        assert manager.scan(Queue.INCOMING) == []  # parked: no busy loop
        assert queue_id in manager.journal_index
        time.sleep(0.25)
        assert manager.scan(Queue.INCOMING) == [queue_id]  # offered again
        assert manager.claim(queue_id) is not None
    # Nothing was lost: the frame is still unfinished in its segment.
    with Spool(root) as tool:
        assert [e.queue_id for e in tool.list_all()] == [queue_id]


def test_a_write_out_that_fails_after_the_record_rename_leaves_no_record(
    tmp_path: Path,
) -> None:
    """The record's rename into active/ went through, its directory fsync
    failed: the write-out removes the record too, and the message stays
    whole in its frame. Before, the record stayed without its body, and the
    next start moved it to corrupt/ and marked the frame done: lost."""
    import errno

    from tests.spool.fakes import FailingFS

    ticks: list[tuple[str, int, bool]] = []
    root = tmp_path / "spool"
    with Spool(root, journal=True, notify=lambda *t: ticks.append(t)) as worker:
        queue_id = asyncio.run(receive(worker, make_body("r", 2500)))
    active = root / "active"
    failing = FailingFS(
        code=errno.EIO, matches=lambda op, path: op == "fsync_dir" and path == active
    )
    with Spool(root, fs=failing) as manager:
        for tick in ticks:
            manager.feed_journal(*tick)
        message = manager.claim(queue_id)
        assert message is not None
        rcpt = replace(message.envelope.recipients[0], state=RecipientState.DEFERRED, attempts=1)
        with pytest.raises(SpoolError):
            manager.update(replace(message.envelope, recipients=(rcpt,)), Queue.ACTIVE)
        assert failing.failed
        assert os.listdir(active) == [] and os.listdir(root / "data") == []
    # The gateway stops here; the next start delivers the message from its frame.
    with Spool(root) as spool:
        spool.recover()
        assert spool.adopt_journal() == 1
        assert spool.scan(Queue.INCOMING) == [queue_id]
        assert os.listdir(root / "corrupt") == []


def test_a_frame_whose_record_does_not_decode_is_kept_in_corrupt(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root) as spool:
        layout = spool.layout
    directory = journal_dir(layout)
    # A good checksum over a record that is not one (what only a bug could write).
    data = frame("K0000009", b"not a record", make_body("K0000009", 200))
    (directory / "SEGD").write_bytes(data)
    with Spool(root) as manager:
        assert manager.feed_journal("SEGD", len(data), True) == 1
        with pytest.raises(SpoolError, match="unreadable"):
            manager.claim("K0000009")
        assert manager.scan(Queue.INCOMING) == []
    assert (root / "corrupt" / "journal-K0000009.frame").read_bytes() == data


def test_recovery_prefers_a_written_out_copy_to_its_frame(tmp_path: Path) -> None:
    """A crash after writing a message out for its retry but before its done line:
    the queue file is the message; the frame must not be delivered again."""
    ticks: list[tuple[str, int, bool]] = []
    root = tmp_path / "spool"
    with Spool(root, journal=True, notify=lambda *t: ticks.append(t)) as worker:
        queue_id = asyncio.run(receive(worker, make_body("w", 1800)))
    with Spool(root) as manager:
        for tick in ticks:
            manager.feed_journal(*tick)
        message = manager.claim(queue_id)
        assert message is not None
        segment = next(p for p in (root / "journal").iterdir() if not p.name.endswith(".done"))
        kept = segment.read_bytes()
        manager.move(queue_id, Queue.ACTIVE, Queue.DEFERRED)
    # The crash: the segment and no done line, as if the line never reached the disk.
    segment.write_bytes(kept)
    (root / "journal" / (segment.name + DONE_SUFFIX)).unlink(missing_ok=True)
    with Spool(root) as spool:
        report = spool.recover()
        assert report.requeued == []
        assert spool.adopt_journal() == 0
        assert spool.scan(Queue.INCOMING) == []
        assert spool.locate(queue_id) is Queue.DEFERRED


# -- zero-filled segments -------------------------------------------------------------


def _wait_for_spare(writer: JournalWriter) -> None:
    deadline = time.monotonic() + 30
    while writer._spare is None:
        assert time.monotonic() < deadline, "no spare segment prepared"
        time.sleep(0.01)


def test_segments_after_the_first_are_written_in_place_into_zeros(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, bool]] = []
    names = iter(f"SEG{n:05d}" for n in range(100))
    writer = JournalWriter(tmp_path, lambda: next(names), limit=64 * 1024)
    committer = JournalCommitter(writer, lambda *tick: ticks.append(tick), quiet=lambda: True)
    first = [f"Z{n:07d}" for n in range(3)]
    asyncio.run(_commit_many(committer, first))
    _wait_for_spare(writer)  # started when the first segment was opened
    (spare,) = [p for p in tmp_path.iterdir() if p.name.startswith(".spare-")]
    assert spare.read_bytes() == bytes(64 * 1024)
    writer.abandon()  # the next commit opens the next segment: the spare, renamed
    second = [f"Y{n:07d}" for n in range(3)]
    asyncio.run(_commit_many(committer, second))
    segment = tmp_path / "SEG00001"
    data = segment.read_bytes()
    assert len(data) == 64 * 1024  # written in place: the file did not grow
    assert [f.queue_id for f in frames(data)] == second
    end = ticks[-1][1]
    assert ticks[-1][0] == "SEG00001" and data[end:] == bytes(len(data) - end)
    committer.close()
    # Closing removes the spare made meanwhile; no file is left but the segments.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SEG00000", "SEG00001"]


def test_a_zero_filled_segment_recovers_and_adopts_like_a_grown_one(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with Spool(root) as spool:
        layout = spool.layout
    directory = journal_dir(layout)
    whole = [_frame(q) for q in ("K0000001", "K0000002", "K0000003")]
    # Killed in the middle of the third frame's write, in a zero-filled file.
    data = whole[0] + whole[1] + whole[2][:150]
    (directory / "SEGZ").write_bytes(data + bytes(32 * 1024 - len(data)))
    (directory / ".spare-999999999-X").write_bytes(bytes(1024))  # a dead worker's
    with Spool(root) as spool:
        report = spool.recover()
        assert report.requeued == ["K0000001", "K0000002"]
        assert not (root / "corrupt" / "journal-SEGZ").exists()  # zeros are no damage
        assert not (directory / ".spare-999999999-X").exists()
        assert spool.adopt_journal() == 2
        assert spool.scan(Queue.INCOMING) == ["K0000001", "K0000002"]


def test_without_room_for_a_spare_segments_grow_as_before(tmp_path: Path) -> None:
    class NoRoom(JournalWriter):
        def _prepare(self) -> None:
            with self._spare_lock:
                self._preparing = None  # as after ENOSPC: no spare, nothing left

    names = iter(f"SEG{n:05d}" for n in range(100))
    writer = NoRoom(tmp_path, lambda: next(names), limit=2000)
    committer = JournalCommitter(writer, quiet=lambda: True)

    async def one_by_one() -> None:
        for n in range(4):
            await committer.commit(f"G{n:07d}", _frame(f"G{n:07d}", 900))

    asyncio.run(one_by_one())
    committer.close()
    segments = sorted(tmp_path.iterdir())
    assert len(segments) >= 2
    found = [f.queue_id for path in segments for f in frames(path.read_bytes())]
    assert found == [f"G{n:07d}" for n in range(4)]
    assert all(path.stat().st_size <= 2000 + 1500 for path in segments)


# -- the sync helper process ----------------------------------------------------------


def test_busy_commits_are_synced_by_the_helper_process(tmp_path: Path) -> None:
    ticks: list[tuple[str, int, bool]] = []
    names = iter(f"SEG{n:05d}" for n in range(100))
    writer = JournalWriter(tmp_path, lambda: next(names))
    committer = JournalCommitter(writer, lambda *tick: ticks.append(tick), helper=True)
    ids = [f"H{n:07d}" for n in range(200)]

    async def run() -> None:
        await _commit_many(committer, ids)
        helper = committer._helper
        assert helper is not None and helper.proc.poll() is None
        assert committer._sync_thread is None  # the helper did every fdatasync
        committer.close()
        assert helper.proc.returncode == 0  # it ends with its socket

    asyncio.run(run())
    data = (tmp_path / "SEG00000").read_bytes()
    assert [f.queue_id for f in frames(data)] == ids
    assert ticks[-1][0] == "SEG00000" and ticks[-1][2] is True


def test_a_killed_helper_is_replaced_and_no_commit_is_lost(tmp_path: Path) -> None:
    names = iter(f"SEG{n:05d}" for n in range(100))
    committer = JournalCommitter(JournalWriter(tmp_path, lambda: next(names)), helper=True)
    first = [f"K{n:07d}" for n in range(20)]
    second = [f"L{n:07d}" for n in range(20)]

    async def run() -> None:
        await _commit_many(committer, first)
        helper = committer._helper
        assert helper is not None
        helper.proc.kill()
        helper.proc.wait()
        await _commit_many(committer, second)  # the helper is found gone meanwhile
        assert committer._helper is None and not committer.use_helper
        committer.close()

    asyncio.run(run())
    data = (tmp_path / "SEG00000").read_bytes()
    assert [f.queue_id for f in frames(data)] == first + second
    assert read_done(tmp_path / ("SEG00000" + DONE_SUFFIX)) == set()


def test_an_fdatasync_the_helper_reports_failed_fails_the_batch(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()  # fdatasync on a pipe: EINVAL, a real error

    class PipeWriter(JournalWriter):
        @property
        def fileno(self) -> int:
            return read_end

    names = iter(f"SEG{n:05d}" for n in range(100))
    committer = JournalCommitter(PipeWriter(tmp_path, lambda: next(names)), helper=True)

    async def run() -> None:
        with pytest.raises(SpoolError, match="fdatasync"):
            await _commit_many(committer, ["P0000001", "P0000002"])
        committer.close()

    try:
        asyncio.run(run())
    finally:
        os.close(read_end)
        os.close(write_end)
    # The frames may be complete on disk, but they are listed as never to deliver.
    assert read_done(tmp_path / ("SEG00000" + DONE_SUFFIX)) == {"P0000001", "P0000002"}


def test_after_a_rotation_the_helper_syncs_the_new_segment(tmp_path: Path) -> None:
    """A new segment's descriptor usually gets the old one's number; the helper
    must be given it all the same. Here the second segment's descriptor is a
    pipe put on the first one's number: fdatasync on it fails, where a helper
    still holding the first file would report success for a batch it never
    made durable."""

    class Rotating(JournalWriter):
        reused = -1

        @property
        def fileno(self) -> int:
            return self.reused if self.reused >= 0 else self._fd

    names = iter(f"SEG{n:05d}" for n in range(100))
    writer = Rotating(tmp_path, lambda: next(names))
    committer = JournalCommitter(writer, helper=True)
    read_end, write_end = os.pipe()

    async def run() -> None:
        await _commit_many(committer, ["R0000001", "R0000002"])
        first = writer.fileno
        writer.abandon()  # the next commit opens SEG00001
        os.dup2(read_end, first)  # the old number, now something else
        writer.reused = first
        try:
            with pytest.raises(SpoolError, match="fdatasync"):
                await _commit_many(committer, ["R0000003", "R0000004"])
        finally:
            os.close(first)
            writer.reused = -1
        committer.close()

    try:
        asyncio.run(run())
    finally:
        os.close(read_end)
        os.close(write_end)
    assert read_done(tmp_path / ("SEG00001" + DONE_SUFFIX)) == {"R0000003", "R0000004"}
