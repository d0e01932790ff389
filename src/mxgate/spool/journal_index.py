"""The queue manager's view of the journal, and turning journal frames into queue files.

Owns, in the process that delivers (the master), the messages that arrived
through the journal (``journal.py``) and are not finished yet: which frame
holds each one, which were handed out for delivery, and which segments can go.
A message leaves the index in one of two ways:

- finished (every recipient final): its id is appended to ``<SEGMENT>.done``
  (no fsync: if a crash loses the line, the message is delivered again, the
  at-least-once rule that Postfix also follows for its deletes); a segment
  that is sealed and whose frames are all done is deleted;
- still to retry, or held: it is *materialized*, written out as the ordinary
  body file and record (``data/`` and a queue directory, fsynced), and then
  marked done in its segment. From then on it is an ordinary queue file.

A message that cannot be written out (no space) is *parked*: it stays in its
segment and is offered again later.

Also owns the journal's side of a restart: ``recover_journal`` (before any
worker runs) checks the segments, removes those with nothing unfinished, keeps
a segment damaged in the middle in corrupt/ (writing its good frames out), and
marks done the frames whose message was already written out; then the queue
manager ``adopt``s what is left and delivers it from the segments, so that a
restart needs no free space. A torn tail (never acknowledged) is ignored. And
reading the journal for the queue tools (frames in flight show as active;
``write_out`` on a stopped gateway).

Never decides delivery; the scheduler sees these messages through ``Spool``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mxgate.spool import fsio
from mxgate.spool.errors import SpoolCorruptError, SpoolError, from_os_error
from mxgate.spool.format import Record, decode, encode
from mxgate.spool.journal import (
    DONE_SUFFIX,
    Frame,
    frames,
    is_segment_name,
    read_done,
    remove_stale_spares,
)
from mxgate.spool.layout import LIVE_QUEUES, Layout, Queue, is_queue_id

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Segment:
    name: str
    fd: int
    read: int = 0  # frames before this offset are in the index (or done)
    durable: int = 0  # the writer said: on stable storage up to here
    sealed: bool = False
    keep: bool = False  # damaged: never delete it while running
    live: set[str] = field(default_factory=set)
    done_fd: int = -1


@dataclass(slots=True, init=False)
class JournalMessage:
    frame: Frame
    segment: str
    record: Record | None = None  # decoded when claimed

    def __init__(self, frame: Frame, segment: str, record: Record | None = None) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        self.frame = frame
        self.segment = segment
        self.record = record


class JournalIndex:
    """Journal messages known to this process and not finished."""

    def __init__(self, layout: Layout, fs: fsio.FileSystem) -> None:
        self.layout = layout
        self.directory = journal_dir(layout)
        self._fs = fs
        self._segments: dict[str, _Segment] = {}
        self.waiting: dict[str, JournalMessage] = {}  # not yet claimed
        self.claimed: dict[str, JournalMessage] = {}
        # Could not be written out for a retry (a full disk): back to waiting
        # at the monotonic time given, so the queue manager does not spin on it.
        self.parked: dict[str, tuple[JournalMessage, float]] = {}
        # The queue manager finishes messages on worker threads (to_thread) while
        # ticks arrive on the event loop: the bookkeeping takes turns.
        self._lock = threading.RLock()

    def __contains__(self, queue_id: str) -> bool:
        return queue_id in self.claimed or queue_id in self.waiting or queue_id in self.parked

    def park(self, queue_id: str, until: float) -> None:
        """A claimed message that could not be written out waits in the journal
        (where it is safe) until ``until`` (monotonic), then is offered again."""
        with self._lock:
            message = self.claimed.pop(queue_id, None)
            if message is not None:
                self.parked[queue_id] = (message, until)

    def unpark(self, now: float) -> None:
        """Offer the parked messages whose time has come again."""
        if not self.parked:
            return
        with self._lock:
            for queue_id, (message, until) in list(self.parked.items()):
                if until <= now:
                    del self.parked[queue_id]
                    self.waiting[queue_id] = message

    # -- ticks from the writers ------------------------------------------------
    def feed(self, name: str, durable: int, sealed: bool) -> int:
        """A writer made ``name`` durable up to ``durable``; index the new frames.
        The number of new messages."""
        if not is_segment_name(name) or "/" in name:
            return 0
        with self._lock:
            return self._feed(name, durable, sealed, frozenset())

    def adopt(self) -> int:
        """Take over the segments left by earlier workers (call before any worker
        of ours starts): every frame not on its done list is to deliver. The
        number of such messages."""
        directory = self.directory
        names = sorted(os.listdir(directory)) if directory.is_dir() else []
        added = 0
        with self._lock:
            for name in names:
                if not is_segment_name(name) or name in self._segments:
                    continue
                try:
                    size = (directory / name).stat().st_size
                except FileNotFoundError:
                    continue
                done = frozenset(read_done(directory / (name + DONE_SUFFIX)))
                added += self._feed(name, size, True, done)
        return added

    def _feed(self, name: str, durable: int, sealed: bool, skip: frozenset[str]) -> int:
        segment = self._segments.get(name)
        if segment is None:
            try:
                fd = os.open(self.directory / name, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return 0  # gone already (a recovery, a test cleaning up)
            segment = self._segments[name] = _Segment(name, fd)
        segment.durable = max(segment.durable, durable)
        segment.sealed = segment.sealed or sealed
        added = 0
        if segment.read < segment.durable:
            # One read for everything made durable since the last tick (a batch).
            start = segment.read
            data = os.pread(segment.fd, segment.durable - start, start)
            last = start
            for item in frames(data, start):
                last = item.end
                if item.queue_id in skip:
                    continue
                self.waiting[item.queue_id] = JournalMessage(item, name)
                segment.live.add(item.queue_id)
                added += 1
            segment.read = last
            if segment.sealed and last < segment.durable:
                if _meaningful(data[last - start :]):
                    # Frames after damage cannot be found: keep the segment for
                    # the recovery at the next start (it keeps the evidence).
                    log.warning("%s: journal segment damaged at byte %d", name, last)
                    segment.keep = True
                else:
                    # A torn tail (a worker killed mid-write): never acknowledged.
                    segment.durable = last
        self._maybe_delete(segment)
        return added

    # -- the scheduler's side ----------------------------------------------------
    def claim(self, queue_id: str) -> Record | None:
        with self._lock:
            message = self.waiting.pop(queue_id, None)
        if message is None:
            return None
        try:
            data = self._read(message, message.frame.record_offset, message.frame.record_length)
            record = decode(data)
        except (SpoolError, OSError) as err:
            # A frame whose checksum held but whose record does not decode (a
            # bug, not a torn write): keep its bytes in corrupt/ for a human,
            # as with a queue file, before it leaves the journal.
            self._keep_evidence(message)
            with self._lock:
                self._finish(queue_id, message)
            raise SpoolCorruptError(f"{queue_id}: journal frame unreadable: {err}") from None
        message.record = record
        self.claimed[queue_id] = message
        return record

    def record(self, queue_id: str) -> Record | None:
        """The record of a claimed journal message (None: not one)."""
        message = self.claimed.get(queue_id)
        return message.record if message is not None else None

    def peek(self, queue_id: str) -> Record | None:
        """The record of a journal message not claimed yet (None: not one)."""
        message = self.waiting.get(queue_id)
        if message is None:
            return None
        frame = message.frame
        return decode(self._read(message, frame.record_offset, frame.record_length))

    def body(self, queue_id: str) -> bytes:
        message = self.claimed.get(queue_id) or self.waiting.get(queue_id)
        if message is None:
            raise KeyError(queue_id)
        return self._read(message, message.frame.body_offset, message.frame.body_length)

    def done(self, queue_id: str) -> None:
        """Every recipient is final: forget the message (one unsynced line)."""
        with self._lock:
            message = self.claimed.pop(queue_id, None) or self.waiting.pop(queue_id, None)
            if message is None and queue_id in self.parked:
                message = self.parked.pop(queue_id)[0]
            if message is not None:
                self._finish(queue_id, message)

    def materialize(self, record: Record, queue: Queue) -> None:
        """Write the message out as ordinary queue files in ``queue`` (durably),
        then forget its frame. Raises SpoolError."""
        queue_id = record.envelope.queue_id
        message = self.claimed.get(queue_id) or self.waiting.get(queue_id)
        if message is None:
            raise SpoolError(f"{queue_id}: not in the journal")
        body = self._read(message, message.frame.body_offset, message.frame.body_length)
        write_queue_files(self._fs, self.layout, record, body, queue)
        with self._lock:
            self.claimed.pop(queue_id, None)
            self.waiting.pop(queue_id, None)
            self._finish(queue_id, message)

    def close(self) -> None:
        for segment in self._segments.values():
            with contextlib.suppress(OSError):
                os.close(segment.fd)
            if segment.done_fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(segment.done_fd)
        self._segments.clear()

    # -- helpers ----------------------------------------------------------------
    def _keep_evidence(self, message: JournalMessage) -> None:
        frame = message.frame
        target = self.layout.queue_dir(Queue.CORRUPT) / f"journal-{frame.queue_id}.frame"
        try:
            data = self._read(message, frame.offset, frame.end - frame.offset)
            fsio.write_new(self._fs, target, data)
        except (OSError, SpoolError) as err:
            log.warning("%s: cannot keep the unreadable frame: %s", frame.queue_id, err)
        else:
            log.warning("%s: unreadable journal frame kept as %s", frame.queue_id, target)

    def _read(self, message: JournalMessage, offset: int, length: int) -> bytes:
        segment = self._segments[message.segment]
        data = os.pread(segment.fd, length, offset)
        if len(data) != length:
            raise SpoolError(f"{message.frame.queue_id}: journal segment cut short")
        return data

    def _finish(self, queue_id: str, message: JournalMessage) -> None:
        segment = self._segments.get(message.segment)
        if segment is None:
            return
        segment.live.discard(queue_id)
        if segment.done_fd < 0:
            try:
                segment.done_fd = os.open(
                    self.directory / (segment.name + DONE_SUFFIX),
                    os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                    0o600,
                )
            except OSError as err:
                log.warning("%s: cannot open its done list: %s", segment.name, err)
        if segment.done_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(segment.done_fd, f"{queue_id}\n".encode("ascii"))
        self._maybe_delete(segment)

    def _maybe_delete(self, segment: _Segment) -> None:
        if not segment.sealed or segment.live or segment.read < segment.durable or segment.keep:
            return
        # Every frame the writer ever made durable is finished: the segment goes.
        for path in (self.directory / segment.name, self.directory / (segment.name + DONE_SUFFIX)):
            fsio.unlink_quietly(self._fs, path)
        with contextlib.suppress(OSError):
            os.close(segment.fd)
        if segment.done_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(segment.done_fd)
        del self._segments[segment.name]


def journal_dir(layout: Layout) -> Path:
    return layout.root / "journal"


def write_queue_files(
    fs: fsio.FileSystem, layout: Layout, record: Record, body: bytes, queue: Queue
) -> None:
    """The message as an ordinary body file and record in ``queue``, durably.
    Raises SpoolError (nothing of it left behind).

    A record from a journal frame has no body checksum (the frame's CRC-32
    covered the body, writer.py): a queue file's record has one, as recovery
    checks the body file against it."""
    queue_id = record.envelope.queue_id
    if not record.body_sha256:
        record = Record(record.envelope, record.body_size, hashlib.sha256(body).hexdigest())
    body_path = layout.body(queue_id)
    try:
        # Through tmp/ like the record: a reader never sees a body half written.
        fsio.atomic_write(fs, layout.tmp, body_path, body)
    except OSError as err:
        raise from_os_error(err, f"{queue_id}: write body") from err
    record_path = layout.record(queue, queue_id)
    try:
        fsio.atomic_write(fs, layout.tmp, record_path, encode(record))
    except OSError as err:
        # The rename may have happened before the directory fsync failed: a
        # record left without its body would be quarantined as corrupt at
        # the next start, while the journal frame (still unfinished) holds
        # the message whole. No record of this id existed in ``queue``
        # before (journal messages have no files; write-out skips ids that
        # have one), so removing it removes nothing else.
        fsio.unlink_quietly(fs, record_path)
        fsio.unlink_quietly(fs, body_path)
        raise from_os_error(err, f"{queue_id}: write record") from err


@dataclass(slots=True)
class JournalRecovery:
    queue_ids: list[str] = field(default_factory=list)  # unfinished frames (delivered at start)
    segments: int = 0  # segment files removed or moved to corrupt/
    damaged: list[str] = field(default_factory=list)  # segments kept in corrupt/


def recover_journal(
    fs: fsio.FileSystem, layout: Layout, *, write_out: bool = False
) -> JournalRecovery:
    """Check the journal after a crash, before any worker runs. Raises OSError.

    Segments stay where they are: the queue manager adopts them at start
    (``JournalIndex.adopt``) and delivers their unfinished frames from there,
    so a restart needs no free space (a full disk is a common reason for the
    crash). A torn tail is left alone (readers stop before it; it was never
    acknowledged). Segments with nothing unfinished are removed. A segment
    damaged in the middle (frames after the damage cannot be found) has its
    good unfinished frames written out to incoming/ and is moved to corrupt/
    for a human.

    ``write_out``: write every unfinished frame out to incoming/ and remove
    all segments (the queue tools, on a stopped gateway, so that operators can
    hold or delete any message). Needs the space for them.
    """
    report = JournalRecovery()
    directory = journal_dir(layout)
    remove_stale_spares(directory, all_of_them=True)
    names = sorted(fs.listdir(directory)) if directory.is_dir() else []
    for name in names:
        if not is_segment_name(name):
            continue
        path = directory / name
        done = read_done(directory / (name + DONE_SUFFIX))
        data = path.read_bytes()
        end = 0
        unfinished = []
        written_out = []
        for item in frames(data):
            end = item.end
            if item.queue_id in done or not is_queue_id(item.queue_id):
                continue
            if any(layout.record(q, item.queue_id).exists() for q in LIVE_QUEUES):
                # Written out for a retry, then a crash before its done line:
                # the queue file (with the newer recipient states) is the message.
                written_out.append(item.queue_id)
            else:
                unfinished.append(item)
        if written_out:
            _mark_done(directory / (name + DONE_SUFFIX), written_out)
        report.queue_ids.extend(item.queue_id for item in unfinished)
        damaged = end < len(data) and _meaningful(data[end:])
        if damaged or write_out:
            _write_out(fs, layout, data, unfinished)
        if damaged:
            log.warning("%s: journal segment damaged after byte %d; kept in corrupt/", name, end)
            fs.rename(path, layout.queue_dir(Queue.CORRUPT) / f"journal-{name}")
            report.damaged.append(name)
        if damaged or write_out or not unfinished:
            fsio.unlink_quietly(fs, path)
            fsio.unlink_quietly(fs, directory / (name + DONE_SUFFIX))
            report.segments += 1
    for name in names:  # done lists whose segment is gone
        if name.endswith(DONE_SUFFIX) and not (directory / name[: -len(DONE_SUFFIX)]).exists():
            fsio.unlink_quietly(fs, directory / name)
    if names:
        fs.fsync_dir(directory)
    if report.queue_ids:
        log.info("recovery: %d unfinished message(s) in the journal", len(report.queue_ids))
    return report


def _write_out(fs: fsio.FileSystem, layout: Layout, data: bytes, items: list[Frame]) -> None:
    for item in items:
        if layout.record(Queue.INCOMING, item.queue_id).exists():
            continue  # written out before, and the segment not removed then
        try:
            record = decode(data[item.record_offset : item.body_offset])
            write_queue_files(fs, layout, record, data[item.body_offset : item.end], Queue.INCOMING)
        except SpoolError as err:
            raise OSError(f"writing out {item.queue_id} from the journal: {err}") from None


def _mark_done(path: Path, queue_ids: list[str]) -> None:
    with open(path, "ab") as done:
        done.write("".join(f"{q}\n" for q in queue_ids).encode("ascii"))
        done.flush()
        os.fsync(done.fileno())


def _meaningful(tail: bytes) -> bool:
    """Whether bytes after the last good frame look like more than a torn write:
    a later frame's magic means frames were lost in the middle."""
    return b"MXJ1" in tail[1:]


def find_body(layout: Layout, queue_id: str) -> bytes | None:
    """The body of an unfinished journal message, read from the segments
    (for tools in other processes); None if no segment holds it."""
    for _name, data, item in _unfinished(layout):
        if item.queue_id == queue_id:
            return data[item.body_offset : item.end]
    return None


def _unfinished(layout: Layout) -> Iterator[tuple[str, bytes, Frame]]:
    directory = journal_dir(layout)
    if not directory.is_dir():
        return
    for name in sorted(os.listdir(directory)):
        if not is_segment_name(name):
            continue
        done = read_done(directory / (name + DONE_SUFFIX))
        try:
            data = (directory / name).read_bytes()
        except FileNotFoundError:
            continue
        for item in frames(data):
            if item.queue_id not in done:
                yield name, data, item


def list_journal(layout: Layout) -> list[tuple[Record, int] | tuple[str, str]]:
    """Unfinished journal messages for listings: (record, body size), or
    (queue id, problem) for a frame whose record does not decode."""
    out: list[tuple[Record, int] | tuple[str, str]] = []
    for _name, data, item in _unfinished(layout):
        try:
            out.append((decode(data[item.record_offset : item.body_offset]), item.body_length))
        except SpoolCorruptError as err:
            out.append((item.queue_id, str(err)))
    return out
