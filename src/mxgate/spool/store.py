"""The Spool: every byte under ``spool_dir``, and the operations on queued messages.

Owns the spool directory (layout in ``layout.py``): creating it, taking new
messages (``begin`` -> ``SpoolWriter``), recovery after a crash (``recover``),
and the queue manager's operations: find, claim, rewrite per-recipient state,
move between queues, delete, list. Messages that arrived through the journal
(``journal.py``; the SMTP workers open their Spool with ``journal=True``) take
part in these operations like files: the queue manager learns of them from the
workers' ticks (``feed_journal``) or at start (``adopt_journal``), ``scan``
lists them in incoming, ``claim`` hands them out, ``remove`` marks them done
and ``update``/``move`` write them out as files (``journal_index.py``).

Never speaks SMTP or SQL, never decides when to retry or what a reply means;
the queue manager passes complete envelopes and the spool stores them.

Sharing: any number of processes may take new messages at once (ids carry the
pid, bodies are created with O_EXCL so a clash fails instead of clobbering, and
each commit is its own rename). Queue
operations on existing messages are meant for one queue manager at a time;
``claim`` is an atomic rename, so two claimers never both win. Every open Spool
holds a shared flock on ``spool_dir/lock``; ``recover`` needs it exclusively,
because it deletes files that a live writer would still be filling. The
composition root therefore calls ``recover`` once, before starting workers.

Durability: commits and ``update``/``move`` are fsynced (file and directory).
``claim`` is not (after a crash recovery returns active/ to incoming/ anyway),
nor is ``remove`` (a removed message that comes back after a crash has final
recipient states already, because the queue manager updates before removing).
"""

from __future__ import annotations

import fcntl
import io
import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from mxgate.core.envelope import Envelope
from mxgate.spool import fsio, recovery
from mxgate.spool.commit import GroupCommitter
from mxgate.spool.errors import (
    MessageNotFoundError,
    SpoolBusyError,
    SpoolCorruptError,
    SpoolError,
    from_os_error,
)
from mxgate.spool.format import Record, encode
from mxgate.spool.journal import JournalCommitter, JournalWriter, Notify
from mxgate.spool.journal_index import (
    JournalIndex,
    find_body,
    journal_dir,
    list_journal,
    recover_journal,
)
from mxgate.spool.layout import LIVE_QUEUES, Layout, Queue, QueueIdSource, is_queue_id
from mxgate.spool.recovery import RecoveryReport
from mxgate.spool.writer import SpoolWriter


@dataclass(frozen=True, slots=True, init=False)
class QueuedMessage:
    """A message in the spool: its envelope, which queue holds it, its body size."""

    envelope: Envelope
    queue: Queue
    body_size: int

    def __init__(self, envelope: Envelope, queue: Queue, body_size: int) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "envelope", envelope)
        object.__setattr__(self, "queue", queue)
        object.__setattr__(self, "body_size", body_size)

    @property
    def queue_id(self) -> str:
        return self.envelope.queue_id


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One line of a queue listing; ``message`` is None when the record is unreadable."""

    queue_id: str
    queue: Queue
    message: QueuedMessage | None
    problem: str | None = None


DEFAULT_FSYNC_THREADS = 16
"""Threads fsyncing a batch at once (more share more journal commits, and cost
more wake-ups; 16 measured best of 4-32 with 50 concurrent sessions)."""


class Spool:
    """The durable message store in one directory (created if missing)."""

    park_seconds = 60.0
    """How long a journal message that could not be written out for a retry
    (no space) waits before the queue manager is offered it again."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fs: fsio.FileSystem | None = None,
        ids: QueueIdSource | None = None,
        max_batch: int = 512,
        fsync_threads: int = DEFAULT_FSYNC_THREADS,
        journal: bool = False,
        notify: Notify | None = None,
        quiet: Callable[[], bool] | None = None,
    ) -> None:
        """``journal``: commit small messages to this process's journal segment
        (the SMTP workers); ``notify`` is told of every durable batch."""
        self.layout = Layout(path)
        # Paths the queue manager builds several times per message: joined
        # once here (a pathlib join costs microseconds each).
        self._queue_dirs = {queue: self.layout.queue_dir(queue) for queue in Queue}
        self._data_dir = str(self.layout.data)
        self._fs = fs or fsio.FileSystem()
        self._ids = ids or QueueIdSource()
        self._writers: dict[str, SpoolWriter] = {}
        try:
            for directory in (*self.layout.all_dirs(), journal_dir(self.layout)):
                self._fs.mkdir(directory)
            self._lock_fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise from_os_error(err, f"{self.layout.root}: cannot open the spool") from err
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
        self.committer = GroupCommitter(
            self._fs, self.layout, max_batch=max_batch, fsync_threads=fsync_threads
        )
        self.journal: JournalCommitter | None = None
        if journal:
            writer = JournalWriter(journal_dir(self.layout), self._ids.new)
            self.journal = JournalCommitter(writer, notify, quiet, helper=True)
        # Messages that reached this process through journal ticks (the queue manager).
        self.journal_index = JournalIndex(self.layout, self._fs)

    def close(self) -> None:
        """Stop the commit threads and release the lock. Open writers are aborted."""
        try:
            for writer in list(self._writers.values()):
                writer.abort()
        finally:
            if self.journal is not None:
                self.journal.close()
            self.journal_index.close()
            self.committer.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- taking new messages ------------------------------------------------------

    def new_queue_id(self) -> str:
        """A fresh queue id (for a session that logs it before DATA)."""
        return self._ids.new()

    def begin(self, queue_id: str | None = None) -> SpoolWriter:
        """Start receiving a message. Raises SpoolFullError / SpoolError.

        With ``queue_id`` (from ``new_queue_id``) the message gets that id;
        SpoolError if it is malformed or used by an open writer of this Spool.
        Nothing touches the disk until the body outgrows the write buffer or the
        commit, so an id whose body file exists already (another message's) fails
        only there, when O_EXCL refuses to create it: looking first would cost
        every message a stat and still leave the race to O_EXCL.
        """
        if queue_id is None:
            queue_id = self._ids.new()
        elif not is_queue_id(queue_id):
            raise SpoolError(f"{queue_id!r} is not a valid queue id")
        elif queue_id in self._writers:
            raise SpoolError(f"{queue_id}: queue id already in use")
        writer = SpoolWriter(
            self._fs, self.layout, self.committer, queue_id, self._forget, journal=self.journal
        )
        self._writers[queue_id] = writer
        return writer

    def _forget(self, writer: SpoolWriter) -> None:
        if self._writers.get(writer.queue_id) is writer:
            del self._writers[writer.queue_id]

    # -- reading -------------------------------------------------------------------

    def scan(
        self, queue: Queue, journal_limit: int | None = None, *, files: bool = True
    ) -> list[str]:
        """The queue ids in ``queue``, oldest first (ids sort by arrival).

        For incoming, the journal's unclaimed messages follow the files, in the
        order their ticks came (arrival order per worker), at most
        ``journal_limit`` of them: with a backlog of many thousands, the queue
        manager asks only for as many as it has free delivery slots, instead
        of copying and sorting the whole backlog at every tick. ``files=False``
        leaves out the listing of the queue directory (the journal's part only).
        """
        found: list[str] = []
        if files:
            try:
                names = self._fs.listdir(self.layout.queue_dir(queue))
            except OSError as err:
                raise from_os_error(err, f"list {queue.value}/") from err
            found = sorted(name for name in names if is_queue_id(name))
        if queue is Queue.INCOMING:
            self.journal_index.unpark(time.monotonic())
        waiting = self.journal_index.waiting
        if queue is Queue.INCOMING and waiting:
            if journal_limit is None:
                found.extend(waiting)
            else:
                found.extend(itertools.islice(waiting, max(0, journal_limit)))
        return found

    def settle_journal(self) -> int:
        """On a stopped gateway (no other Spool open anywhere), write journal
        messages out as queue files, so that tools can hold or delete them;
        the number written out. On a running one nothing (they are being
        delivered, and show as active). Raises SpoolError (e.g. no space)."""
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            return 0
        try:
            return len(recover_journal(self._fs, self.layout, write_out=True).queue_ids)
        except OSError as err:
            raise from_os_error(err, "write out the journal") from err
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def prepare_journal(self) -> None:
        """Start preparing the journal's first zero-filled segment now (a worker
        at start), so that the first messages already find one."""
        if self.journal is not None:
            self.journal.writer.prepare_spare()

    def adopt_journal(self) -> int:
        """Take over the journal segments of earlier workers (the queue manager,
        at start, before its workers run); the number of messages to deliver."""
        return self.journal_index.adopt()

    def feed_journal(self, segment: str, durable: int, sealed: bool) -> int:
        """A worker's tick: ``segment`` is durable up to ``durable``. The new
        messages join incoming (see ``scan``); their number."""
        return self.journal_index.feed(segment, durable, sealed)

    def locate(self, queue_id: str) -> Queue | None:
        """Which live queue holds ``queue_id``, None if none does."""
        for queue in LIVE_QUEUES:
            if os.path.exists(self._record(queue, queue_id)):
                return queue
        return None

    def load(self, queue_id: str, queue: Queue | None = None) -> QueuedMessage:
        """Read one record. MessageNotFoundError, SpoolCorruptError, SpoolError."""
        journal = self.journal_index.record(queue_id)
        if journal is not None and queue in (None, Queue.ACTIVE):
            return self._message(journal, Queue.ACTIVE)
        waiting = self.journal_index.peek(queue_id) if queue in (None, Queue.INCOMING) else None
        if waiting is not None:
            return self._message(waiting, Queue.INCOMING)
        if queue is None:
            queue = self.locate(queue_id)
            if queue is None:
                raise MessageNotFoundError(f"{queue_id}: no such message")
        return self._message(self._read(queue, queue_id), queue)

    def open_body(self, queue_id: str) -> BinaryIO:
        """The body for reading (stream it; it can be large). Close it when done.

        Unbuffered: readers take large chunks, and a buffer in between only
        costs an allocation and a copy."""
        if queue_id in self.journal_index:
            # Journal messages are small (the writer keeps big ones out).
            try:
                return io.BytesIO(self.journal_index.body(queue_id))
            except (KeyError, OSError):
                pass  # written out meanwhile: read the file
        path = f"{self._data_dir}/{queue_id}"
        try:
            return open(path, "rb", buffering=0)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise from_os_error(err, f"{queue_id}: open body") from err
        body = find_body(self.layout, queue_id)  # another process's journal message
        if body is not None:
            return io.BytesIO(body)
        try:
            # Written out by the queue manager between our two looks (the file
            # first, then the frame's done line): the file is there now.
            return open(path, "rb", buffering=0)
        except FileNotFoundError:
            raise MessageNotFoundError(f"{queue_id}: no body") from None
        except OSError as err:
            raise from_os_error(err, f"{queue_id}: open body") from err

    def list_all(self, *, include_corrupt: bool = True) -> Iterator[QueueEntry]:
        """Every record of every queue, for ``mxgate queue list`` (reads each record)."""
        queues = (*LIVE_QUEUES, Queue.CORRUPT) if include_corrupt else LIVE_QUEUES
        listed: set[str] = set()
        for item in list_journal(self.layout):
            # In the journal: being delivered (or just accepted): active.
            if isinstance(item[0], Record):
                record, size = item
                assert isinstance(size, int)
                listed.add(record.envelope.queue_id)
                yield QueueEntry(
                    record.envelope.queue_id,
                    Queue.ACTIVE,
                    QueuedMessage(record.envelope, Queue.ACTIVE, size),
                )
            else:
                queue_id, problem = item
                assert isinstance(queue_id, str) and isinstance(problem, str)
                yield QueueEntry(queue_id, Queue.ACTIVE, None, problem)
        for queue in queues:
            for queue_id in self.scan(queue):
                if queue_id in listed:
                    continue  # written out from the journal while we listed
                try:
                    message = self._message(self._read(queue, queue_id), queue)
                except MessageNotFoundError:
                    continue  # delivered and removed while we listed
                except SpoolError as err:
                    yield QueueEntry(queue_id, queue, None, str(err))
                    continue
                yield QueueEntry(queue_id, queue, message)

    # -- the queue manager's operations ---------------------------------------------

    def claim(self, queue_id: str, source: Queue = Queue.INCOMING) -> QueuedMessage | None:
        """Move a record to active/ for delivery; None if another claimer was first.

        A record that does not decode is moved to corrupt/ (with a log line) and
        SpoolCorruptError raised.
        """
        if source is Queue.INCOMING and queue_id in self.journal_index.waiting:
            record = self.journal_index.claim(queue_id)
            if record is None:
                return None
            return self._message(record, Queue.ACTIVE)
        active = self._record(Queue.ACTIVE, queue_id)
        try:
            self._fs.rename(self._record(source, queue_id), active)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise from_os_error(err, f"{queue_id}: claim") from err
        try:
            return self._message(self._read(Queue.ACTIVE, queue_id), Queue.ACTIVE)
        except SpoolCorruptError as err:
            self.quarantine(queue_id, Queue.ACTIVE, str(err))
            raise

    def update(self, envelope: Envelope, queue: Queue) -> None:
        """Durably replace the envelope of a message in ``queue`` (atomic rewrite).

        The body and its checksum are kept; only the record is rewritten.
        """
        queue_id = envelope.queue_id
        journal = self.journal_index.record(queue_id)
        if journal is not None and queue is Queue.ACTIVE:
            # Still in the journal: the new state goes to ordinary queue files.
            record = Record(envelope, journal.body_size, journal.body_sha256)
            self.journal_index.materialize(record, Queue.ACTIVE)
            return
        old = self._read(queue, queue_id)
        data = encode(Record(envelope, old.body_size, old.body_sha256))
        try:
            fsio.atomic_write(self._fs, self.layout.tmp, self.layout.record(queue, queue_id), data)
        except OSError as err:
            raise from_os_error(err, f"{queue_id}: update") from err

    def move(self, queue_id: str, source: Queue, target: Queue) -> None:
        """Durably move a record between queues (defer, hold, release, requeue)."""
        if source is target:
            return
        journal = self.journal_index.record(queue_id)
        if journal is not None and source is Queue.ACTIVE:
            try:
                self.journal_index.materialize(journal, target)
            except SpoolError:
                # No room to write it out (a full disk): it stays in the journal,
                # safe, and is offered again later instead of being lost from view.
                self.journal_index.park(queue_id, time.monotonic() + self.park_seconds)
                raise
            return
        try:
            fsio.move(
                self._fs, self.layout.record(source, queue_id), self.layout.record(target, queue_id)
            )
        except FileNotFoundError:
            raise MessageNotFoundError(f"{queue_id}: not in {source.value}/") from None
        except OSError as err:
            raise from_os_error(err, f"{queue_id}: move to {target.value}/") from err

    def remove(self, queue_id: str, queue: Queue) -> None:
        """Delete a message: the record first (the message is gone), then the body."""
        if queue is Queue.ACTIVE and queue_id in self.journal_index:
            self.journal_index.done(queue_id)
            return
        try:
            self._fs.unlink(self._record(queue, queue_id))
        except FileNotFoundError:
            raise MessageNotFoundError(f"{queue_id}: not in {queue.value}/") from None
        except OSError as err:
            raise from_os_error(err, f"{queue_id}: remove") from err
        body = self.layout.corrupt_body(queue_id) if queue is Queue.CORRUPT else None
        fsio.unlink_quietly(self._fs, body or self.layout.body(queue_id))

    def quarantine(self, queue_id: str, queue: Queue, reason: str) -> None:
        """Move a record (and its body) to corrupt/, with a log line."""
        recovery.quarantine(self._fs, self.layout, queue, queue_id, reason)
        self._fs.fsync_dir(self.layout.queue_dir(Queue.CORRUPT))

    # -- recovery ----------------------------------------------------------------------

    def recover(self, *, verify_bodies: bool = False) -> RecoveryReport:
        """Bring the spool to a clean state after a crash; call before serving.

        Counts unfinished journal frames in ``requeued`` (the queue manager
        adopts them: ``adopt_journal``), deletes tmp/ (never acknowledged),
        returns active/ to incoming/ (a crash during delivery means delivering
        again: at-least-once), moves torn or
        unreadable records, and records whose body is missing or of the wrong
        size (or, with ``verify_bodies``, checksum), to corrupt/, and deletes
        bodies that no record refers to. Raises SpoolBusyError while another
        Spool (in this or another process) or an unfinished writer is open.
        """
        if self._writers:
            raise SpoolBusyError("recover() with messages being received")
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A failed conversion may have dropped our shared lock: take it back.
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            raise SpoolBusyError(f"{self.layout.root} is in use by another process") from None
        try:
            # The journal first: what it writes out of a damaged segment is then
            # checked like every other queue file.
            journal = recover_journal(self._fs, self.layout)
            report = recovery.recover(self._fs, self.layout, verify_bodies=verify_bodies)
            # Unfinished journal frames were accepted or in delivery: like active/.
            report.requeued.extend(journal.queue_ids)
            report.messages += len(journal.queue_ids)
            return report
        except OSError as err:
            raise from_os_error(err, "recover") from err
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    # -- helpers ---------------------------------------------------------------------

    def _record(self, queue: Queue, queue_id: str) -> Path:
        return self._queue_dirs[queue] / queue_id

    def _read(self, queue: Queue, queue_id: str) -> Record:
        return recovery.read_record(self._fs, self.layout, queue, queue_id)

    @staticmethod
    def _message(record: Record, queue: Queue) -> QueuedMessage:
        return QueuedMessage(record.envelope, queue, record.body_size)
