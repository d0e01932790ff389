"""Receiving one message into the spool: the body streamed in chunks, then the commit.

Owns the life of one message from ``Spool.begin`` until it is durable or gone:
a bounded write buffer, the body file ``data/<QUEUEID>`` (created with O_EXCL
when the buffer first fills, or at commit time for a body smaller than the
buffer, so most messages touch the disk only on the commit threads), the body's
size and SHA-256, and the encoded envelope record handed to the committer.

The SHA-256 is taken only of bodies that become files. A body committed to the
journal is covered by its frame's CRC-32 (journal.py), and its record says
``"sha256": ""`` until the queue manager writes it out as queue files
(``journal_index.write_queue_files`` fills it in): hashing every body in the
SMTP worker cost an eighth of its CPU per message at one client at a time.

Never holds a whole message in memory (at most ``BUFFER_SIZE`` bytes plus one
chunk), and never leaves a deliverable trace of a message that was not
committed: every failure removes what was written before the exception reaches
the caller. Knows nothing of SMTP: the caller writes the ``Received:`` header as
the first chunk and turns ``SpoolFullError`` / ``SpoolError`` into 452 4.3.1 /
451 4.3.0.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from types import TracebackType

from mxgate.core.envelope import Envelope
from mxgate.spool.commit import GroupCommitter, PendingCommit, commit_batch
from mxgate.spool.errors import SpoolError, from_os_error
from mxgate.spool.format import Record, encode
from mxgate.spool.fsio import FileSystem, close_quietly, tmp_name, unlink_quietly, write_all
from mxgate.spool.journal import JournalCommitter, frame
from mxgate.spool.layout import Layout

BUFFER_SIZE = 64 * 1024
"""Body bytes gathered before one write(2); most messages fit and are written at commit."""


class _State(enum.Enum):
    OPEN = "open"
    COMMITTING = "committing"
    COMMITTED = "committed"
    ABORTED = "aborted"


class SpoolWriter:
    """One message being received. Made by ``Spool.begin``; use as a context manager
    (leaving the block without a commit aborts) or call ``abort`` yourself."""

    def __init__(
        self,
        fs: FileSystem,
        layout: Layout,
        committer: GroupCommitter,
        queue_id: str,
        on_done: Callable[[SpoolWriter], None],
        journal: JournalCommitter | None = None,
    ) -> None:
        self.queue_id = queue_id
        self._journal = journal
        self._fs = fs
        self._layout = layout
        self._committer = committer
        self._on_done = on_done
        self._buffer = bytearray()
        self._hash = hashlib.sha256()  # of the bytes flushed to the body file
        self._size = 0
        self._fd: int | None = None
        self._state = _State.OPEN

    @property
    def size(self) -> int:
        """Body bytes received so far."""
        return self._size

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the body. On failure the message is aborted and
        SpoolFullError / SpoolError raised."""
        self._require_open()
        self._size += len(chunk)
        self._buffer += chunk
        if len(self._buffer) >= BUFFER_SIZE:
            self._flush()

    async def commit(self, envelope: Envelope) -> None:
        """Make the message durable, sharing fsyncs with concurrent commits.

        When this returns the message is on stable storage in incoming/ and may
        be acknowledged. Raises SpoolFullError / SpoolError after removing it.

        With a journal, a body that never left the write buffer goes there (one
        append and a shared fdatasync); bigger ones become files as before.
        """
        if self._journal is not None and self._fd is None:
            await self._commit_journal(self._journal, envelope)
            return
        item = self._prepare(envelope)
        try:
            await self._committer.commit(item)
        except BaseException:
            self._finish(_State.ABORTED)
            raise
        self._finish(_State.COMMITTED)

    async def _commit_journal(self, journal: JournalCommitter, envelope: Envelope) -> None:
        data = self._journal_frame(envelope)
        try:
            await journal.commit(self.queue_id, data)
        except BaseException:
            self._finish(_State.ABORTED)
            raise
        self._finish(_State.COMMITTED)

    def submit(self, envelope: Envelope, done: Callable[[SpoolError | None], None]) -> bool:
        """Like ``commit``, with a callback instead of a coroutine, when the
        message goes to the journal: True, and ``done(None)`` once durable or
        ``done(error)`` (the message removed). False, with nothing done, when
        it must take ``commit`` (no journal, or a body too big for it)."""
        journal = self._journal
        if journal is None or self._fd is not None:
            return False
        data = self._journal_frame(envelope)

        def finished(error: SpoolError | None) -> None:
            self._finish(_State.ABORTED if error is not None else _State.COMMITTED)
            done(error)

        journal.submit(self.queue_id, data, finished)
        return True

    def _journal_frame(self, envelope: Envelope) -> bytes:
        self._require_open()
        self._check_envelope(envelope)
        body = bytes(self._buffer)
        record = encode(Record(envelope, self._size, ""))
        self._buffer = bytearray()
        self._state = _State.COMMITTING
        return frame(self.queue_id, record, body)

    def commit_sync(self, envelope: Envelope) -> None:
        """Like ``commit``, blocking, with fsyncs of its own (no sharing).

        For callers without an event loop (bounces made by tools, tests) and as the
        naive baseline of the benchmark.
        """
        item = self._prepare(envelope)
        try:
            errors = commit_batch(self._fs, self._layout, [item], None)
        except BaseException:
            self._finish(_State.ABORTED)
            raise
        if errors[0] is not None:
            self._finish(_State.ABORTED)
            raise errors[0]
        self._finish(_State.COMMITTED)

    def abort(self) -> None:
        """Forget the message: remove its files. Safe to call more than once."""
        if self._state is not _State.OPEN:
            return
        self._buffer = bytearray()
        if self._fd is not None:
            close_quietly(self._fs, self._fd)
            unlink_quietly(self._fs, self._layout.body(self.queue_id))
            self._fd = None
        self._finish(_State.ABORTED)

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def _require_open(self) -> None:
        if self._state is not _State.OPEN:
            raise SpoolError(f"{self.queue_id}: message is {self._state.value}")

    def _flush(self) -> None:
        try:
            if self._fd is None:
                self._fd = self._fs.create(self._layout.body(self.queue_id))
            write_all(self._fs, self._fd, self._buffer)
            self._hash.update(self._buffer)
        except OSError as err:
            # A FileExistsError means another message has this id (only possible
            # with a caller's id, or a clock stepping back): that body is not ours.
            self.abort()
            raise from_os_error(err, f"{self.queue_id}: write body") from err
        self._buffer.clear()

    def _prepare(self, envelope: Envelope) -> PendingCommit:
        """Hand everything over to the committer; nothing is written here."""
        self._require_open()
        self._check_envelope(envelope)
        self._hash.update(self._buffer)  # the tail, written by the committer
        record = encode(Record(envelope, self._size, self._hash.hexdigest()))
        item = PendingCommit(
            queue_id=self.queue_id,
            body_fd=self._fd,
            tail=self._buffer,  # handed over, not copied: the writer is done with it
            record=record,
            record_tmp=self._layout.tmp / tmp_name(self.queue_id),
            owns_body=self._fd is not None,
        )
        self._fd = None
        self._buffer = bytearray()
        self._state = _State.COMMITTING
        return item

    def _check_envelope(self, envelope: Envelope) -> None:
        if envelope.queue_id != self.queue_id:
            raise ValueError(f"envelope of {envelope.queue_id} given to {self.queue_id}")
        if not envelope.recipients:
            raise ValueError(f"{self.queue_id}: an envelope needs at least one recipient")

    def _finish(self, state: _State) -> None:
        self._state = state
        self._on_done(self)
