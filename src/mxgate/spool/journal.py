"""The journal: accepted messages appended to segment files, one fdatasync per batch.

Owns the fast path of making a message durable in an SMTP worker. Each worker
process appends to its own segment file ``journal/<SEGMENT>`` (the name is a
queue id, so unique across processes and restarts); a batch of messages is
written with one write(2) and made durable with one fdatasync(2), however many
sessions committed meanwhile (group commit). Only then are their futures
resolved and the 250 replies sent.

Why a journal beside the one-file-per-message queue: measured on this project's
benchmark machine (ext4), creating two files per message and fsyncing each cost
most of a worker's CPU (inode allocation, one synchronous inode write per
fsync, thread hand-offs per file); appending costs one write per batch. The
per-message files stay for what needs them: bodies over the journal limit,
messages waiting for a retry (the queue manager writes them out then, see
``journal_index.py``), held messages, and everything after a restart.

Frame of one message (big-endian)::

    "MXJ1" | id length (1 byte) | record length (4) | body length (4) | CRC-32 (4)
    | queue id | envelope record (format.encode) | body

The CRC covers the id, the record and the body, so a torn or half-written
frame (a crash in the middle of the write) is detected and never delivered: a
reader stops at the first frame that is incomplete or does not check.

Cancelling: when the fdatasync of a batch fails, its messages are answered
4xx, their ids are appended to ``<SEGMENT>.done`` (the file that lists frames
never to deliver) and the segment is abandoned for a new one.

Ticks: after each durable batch the writer calls ``notify(segment, offset,
sealed)``: the queue manager reads frames up to ``offset`` only (what is on
stable storage); ``sealed`` says no frame will ever follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mxgate.spool.errors import SpoolError, from_os_error

MAGIC = b"MXJ1"
HEAD = struct.Struct(">4sBIII")
SEGMENT_LIMIT = 64 * 1024 * 1024
"""Bytes after which a worker starts a new segment (an old one is deleted once done)."""
DONE_SUFFIX = ".done"

Notify = Callable[[str, int, bool], None]


def frame(queue_id: str, record: bytes, body: bytes) -> bytes:
    qid = queue_id.encode("ascii")
    crc = zlib.crc32(body, zlib.crc32(record, zlib.crc32(qid)))
    return b"".join((HEAD.pack(MAGIC, len(qid), len(record), len(body), crc), qid, record, body))


@dataclass(frozen=True, slots=True)
class Frame:
    """Where one message lies in a segment."""

    queue_id: str
    offset: int  # of the frame
    record_offset: int
    record_length: int
    body_length: int

    @property
    def body_offset(self) -> int:
        return self.record_offset + self.record_length

    @property
    def end(self) -> int:
        return self.body_offset + self.body_length


def frames(data: bytes | memoryview, base: int = 0) -> Iterator[Frame]:
    """The complete, checked frames at the start of ``data`` (which begins at
    file offset ``base``); stops at the first incomplete or damaged one."""
    view = memoryview(data)
    pos = 0
    size = len(view)
    while pos + HEAD.size <= size:
        magic, qid_len, record_len, body_len, crc = HEAD.unpack_from(view, pos)
        start = pos + HEAD.size
        end = start + qid_len + record_len + body_len
        if magic != MAGIC or end > size or qid_len == 0:
            return
        qid = bytes(view[start : start + qid_len])
        record = view[start + qid_len : start + qid_len + record_len]
        body = view[start + qid_len + record_len : end]
        if zlib.crc32(body, zlib.crc32(record, zlib.crc32(qid))) != crc:
            return
        try:
            queue_id = qid.decode("ascii")
        except UnicodeDecodeError:
            return
        yield Frame(queue_id, base + pos, base + start + qid_len, record_len, body_len)
        pos = end


def is_segment_name(name: str) -> bool:
    return not name.endswith(DONE_SUFFIX) and not name.startswith(".")


def read_done(path: Path) -> set[str]:
    """The ids listed in a segment's ``.done`` file (delivered or cancelled)."""
    try:
        text = path.read_bytes().decode("ascii", "replace")
    except FileNotFoundError:
        return set()
    return set(text.split())


class JournalWriter:
    """One process's current segment (blocking calls; see ``JournalCommitter``)."""

    def __init__(
        self, directory: Path, new_name: Callable[[], str], limit: int = SEGMENT_LIMIT
    ) -> None:
        self.directory = directory
        self._new_name = new_name
        self.limit = limit
        self.name: str | None = None
        self._fd = -1
        self.size = 0
        self._dir_synced = False

    def _open(self) -> None:
        name = self._new_name()
        fd = os.open(
            self.directory / name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        self.name, self._fd, self.size, self._dir_synced = name, fd, 0, False

    def append(self, data: bytes) -> tuple[str, int]:
        """Write ``data`` at the end of the segment; (segment, end offset).

        On failure the segment is cut back to where it was, so no part of the
        batch can be read as a message later.
        """
        if self._fd < 0:
            self._open()
        assert self.name is not None
        start = self.size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self.abandon()  # cannot cut it back: never append there again
            raise
        self.size = start + len(data)
        return self.name, self.size

    def sync(self) -> None:
        """Make everything appended so far durable (the segment's own directory
        entry too, the first time)."""
        os.fdatasync(self._fd)
        if not self._dir_synced:
            dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            self._dir_synced = True

    def cancel(self, queue_ids: list[str]) -> None:
        """List ``queue_ids`` as never to deliver (their batch failed), best effort."""
        if self.name is None or not queue_ids:
            return
        with contextlib.suppress(OSError):
            fd = os.open(
                self.directory / (self.name + DONE_SUFFIX),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                0o600,
            )
            try:
                os.write(fd, "".join(f"{q}\n" for q in queue_ids).encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)

    @property
    def full(self) -> bool:
        return self.size >= self.limit

    def abandon(self) -> str | None:
        """Stop appending to the current segment (the next append opens a new one);
        the name of the segment left, if any."""
        name = self.name
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self.name, self._fd, self.size = None, -1, 0
        return name


class JournalCommitter:
    """Group commit of one event loop's messages into the journal."""

    def __init__(self, writer: JournalWriter, notify: Notify | None = None) -> None:
        self.writer = writer
        self.notify = notify
        self._pending: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.batches = 0

    async def commit(self, queue_id: str, data: bytes) -> None:
        """Return once the frame ``data`` of ``queue_id`` is durable; SpoolError if not."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._task, self._pending = loop, None, []
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((queue_id, data, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="spool-journal")
        try:
            while self._pending:
                await asyncio.sleep(0)  # let this loop iteration's sessions join
                batch, self._pending = self._pending, []
                live = [item for item in batch if not item[2].cancelled()]
                if not live:
                    continue
                error = await self._write_and_sync(loop, live)
                for _, _, fut in live:
                    if fut.done():
                        continue
                    if error is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(error)
        finally:
            self._task = None

    async def _write_and_sync(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[str, bytes, asyncio.Future[None]]]
    ) -> SpoolError | None:
        writer = self.writer
        # Written from the event loop: a page-cache copy of a few hundred KiB;
        # only the fdatasync, which waits for the disk, goes to the thread.
        try:
            name, end = writer.append(b"".join(data for _, data, _ in batch))
        except OSError as err:
            return from_os_error(err, "journal write")
        assert self._thread is not None
        try:
            await loop.run_in_executor(self._thread, writer.sync)
        except OSError as err:
            writer.cancel([queue_id for queue_id, _, _ in batch])
            writer.abandon()
            self._tell(name, end, True)
            return from_os_error(err, "journal fdatasync")
        self.batches += 1
        sealed = writer.full
        if sealed:
            writer.abandon()
        self._tell(name, end, sealed)
        return None

    def _tell(self, name: str, end: int, sealed: bool) -> None:
        if self.notify is not None:
            # A lost tick delays delivery (until the worker is gone or the next
            # start); it never loses mail.
            with contextlib.suppress(Exception):
                self.notify(name, end, sealed)

    def close(self) -> None:
        """Seal the current segment (no frame will follow) and stop the thread."""
        name, end = self.writer.name, self.writer.size
        self.writer.abandon()
        if name is not None:
            self._tell(name, end, True)
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None


__all__ = [
    "DONE_SUFFIX",
    "Frame",
    "JournalCommitter",
    "JournalWriter",
    "SpoolError",
    "frame",
    "frames",
    "is_segment_name",
    "read_done",
]
