"""Making accepted messages durable, alone or many at once (group commit).

Owns the commit sequence and the batching of commits across the sessions of one
asyncio process. Never acknowledges anything itself: it resolves a commit only
after every step below has returned, and the caller answers 250 after that.

The sequence for a batch of messages handed over by their writers
(``PendingCommit``: the body file if already started, the last body bytes, the
encoded envelope record), run by one commit thread:

1. on the commit thread alone, one message after the other: create the body
   file if the writer has not yet (bodies under one write buffer never touch
   the disk before this) and write the last body bytes, then create each
   record's file in ``tmp/`` and write the record;
2. fsync both files of every message, the batch cut into one slice per fsync
   thread (the commit thread takes the first), and ``data/`` ONCE beside them
   (it holds the bodies' directory entries, all created by now); concurrent
   fsyncs on ext4/xfs share journal commits, so this step costs about one
   commit, as long as enough of them are in flight at once;
3. rename each record into ``incoming/`` (the commit point of that message);
4. fsync ``incoming/`` ONCE for the whole batch;
5. resolve the futures of the whole batch.

Why this split of the work over threads: creating a file is CPU work in the
kernel (inode allocation; on an ext4 without journal it also walks past every
inode deleted in the last minutes), serialised per directory anyway, so threads
creating side by side only spin on the kernel's locks and switch. fsync is
waiting for the disk, which is what threads overlap. Handing each thread a
slice rather than each message a job costs one wake-up per thread and batch
instead of two per message. ``bench/spool_commit.py`` measures the CPU time.

A step that fails for one message fails only that message; a failure of a
directory fsync fails every message of the batch. Failed messages are removed
(body and record), so nothing unacknowledged can be delivered later.

Why per-message files with shared directory fsyncs rather than an append-only
log with one fsync per batch: the queue manager needs to move, rewrite and
delete single messages, which in a log means compaction and an index; with one
file per message every queue operation is one rename and the queue can be read
with ``ls`` and an editor (Postfix's choice). What group commit saves here are
the directory fsyncs (two per batch instead of two per message) and, by running
the file fsyncs concurrently, most journal commits. ``syncfs(2)`` would replace
all the fsyncs of a batch by one call, but it writes back every dirty file of
the whole file system (other programs' too), so a commit would wait for, and
this process pay for, writes that are not ours, and it cannot tell which file
failed.

Batching: the first commit of an idle spool starts a drain task; every commit
made while the previous batch is in the thread pool (and in the same loop
iteration) joins the next batch. The event loop never blocks on fsync, nor, for
bodies smaller than the write buffer, on creating files (which can wait for a
journal commit on ext4).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mxgate.spool.errors import SpoolError, from_os_error
from mxgate.spool.fsio import FileSystem, close_quietly, unlink_quietly, write_all
from mxgate.spool.layout import Layout, Queue


@dataclass(slots=True)
class PendingCommit:
    """A message ready to commit: all its bytes, some maybe still in memory."""

    queue_id: str
    body_fd: int | None  # the body file if the writer created it already, else None
    tail: bytes | bytearray  # body bytes not written yet (at most a write buffer)
    record: bytes  # the encoded envelope record
    record_tmp: Path  # where the record is staged before the rename
    owns_body: bool  # this message created data/<queue_id> (so may delete it)
    record_fd: int | None = None


def stage(fs: FileSystem, layout: Layout, item: PendingCommit) -> None:
    """Write what is left of the body and the record (no fsync yet)."""
    if item.body_fd is None:
        item.body_fd = fs.create(layout.body(item.queue_id))
        item.owns_body = True
    write_all(fs, item.body_fd, item.tail)
    item.record_fd = fs.create(item.record_tmp)
    write_all(fs, item.record_fd, item.record)


def sync_files(fs: FileSystem, item: PendingCommit) -> None:
    """fsync the body and the record of one message."""
    assert item.body_fd is not None and item.record_fd is not None
    fs.fsync(item.body_fd)
    fs.fsync(item.record_fd)


def commit_batch(
    fs: FileSystem,
    layout: Layout,
    items: list[PendingCommit],
    pool: Executor | None,
    threads: int = 1,
) -> list[SpoolError | None]:
    """Run the commit sequence; per item None (durable) or the error (item removed).

    Blocking: call it from a worker thread, which does part of the work itself.
    With ``pool`` (``threads`` workers) the fsyncs run ``threads`` at a time;
    without, one after the other (naive commit). Exceptions other than OSError
    (bugs, a test's simulated crash) propagate.
    """
    everyone = list(range(len(items)))
    failures: list[OSError | None] = [None] * len(items)
    renamed = [False] * len(items)

    # Step 1, on this thread alone: creating files is CPU work in the kernel
    # (inode allocation), serialised per directory and per block group anyway;
    # threads creating side by side only add spinning on those locks and
    # context switches (measured: about 0.1-0.2 CPU-ms per message more).
    _each(partial(stage, fs, layout), items, everyone, failures)

    # Step 2: the fsyncs wait for the disk, so they overlap, a slice of the batch
    # per thread (one hand-off per thread, none per message), with data/ beside
    # them (every body's entry exists by now: one directory fsync covers them all).
    staged = [index for index in everyone if failures[index] is None]
    data_failure: list[OSError | None] = [None]
    if staged:
        count = max(1, min(threads, len(staged)))
        sync = partial(sync_files, fs)
        _spread(
            pool,
            [partial(_each, sync, items, staged[start::count], failures) for start in range(count)]
            + [partial(_fsync_dir, fs, layout.data, data_failure)],
        )
    errors: list[SpoolError | None] = [
        None if err is None else from_os_error(err, f"{items[index].queue_id}: store")
        for index, err in enumerate(failures)
    ]
    if data_failure[0] is not None:
        failure = from_os_error(data_failure[0], "fsync of data/")
        errors = [e or failure for e in errors]
    for item in items:
        _close(fs, item)

    # Step 3: the commit point of each message.
    for index, item in enumerate(items):
        if errors[index] is None:
            try:
                fs.rename(item.record_tmp, layout.record(Queue.INCOMING, item.queue_id))
                renamed[index] = True
            except OSError as err:
                errors[index] = from_os_error(err, f"{item.queue_id}: rename into incoming/")

    # Step 4: one directory fsync makes every rename of the batch durable.
    if any(renamed):
        try:
            fs.fsync_dir(layout.queue_dir(Queue.INCOMING))
        except OSError as err:
            failure = from_os_error(err, "fsync of incoming/")
            errors = [e or failure for e in errors]

    for index, item in enumerate(items):
        if errors[index] is not None:
            discard(fs, layout, item, renamed=renamed[index])
    return errors


def _each(
    job: Callable[[PendingCommit], None],
    items: list[PendingCommit],
    indices: list[int],
    failures: list[OSError | None],
) -> None:
    """``job`` on each of ``items[indices]``; an OSError fails only its own item."""
    for index in indices:
        try:
            job(items[index])
        except OSError as err:
            failures[index] = err


def _fsync_dir(fs: FileSystem, path: Path, failure: list[OSError | None]) -> None:
    try:
        fs.fsync_dir(path)
    except OSError as err:
        failure[0] = err


def _spread(pool: Executor | None, calls: Sequence[Callable[[], None]]) -> None:
    """Run ``calls`` at once, the first on this thread, and wait for all of them."""
    if pool is None:
        for call in calls:
            call()
        return
    futures = [pool.submit(call) for call in calls[1:]]
    crash: BaseException | None = None
    try:
        calls[0]()
    except BaseException as exc:
        crash = exc
    # Wait for every helper even after a crash: none may still touch a file
    # once the caller goes on to clean up.
    for future in futures:
        try:
            future.result()
        except BaseException as exc:
            crash = crash or exc
    if crash is not None:
        raise crash


def _close(fs: FileSystem, item: PendingCommit) -> None:
    for fd in (item.body_fd, item.record_fd):
        if fd is not None:
            close_quietly(fs, fd)
    item.body_fd = item.record_fd = None


def discard(fs: FileSystem, layout: Layout, item: PendingCommit, *, renamed: bool = False) -> None:
    """Remove what a failed or cancelled commit left."""
    _close(fs, item)
    if renamed:
        # Renamed but not made durable: remove it before anyone delivers it.
        unlink_quietly(fs, layout.record(Queue.INCOMING, item.queue_id))
    else:
        unlink_quietly(fs, item.record_tmp)
    if item.owns_body:
        unlink_quietly(fs, layout.body(item.queue_id))


class GroupCommitter:
    """Batches the commits of one event loop's sessions (see the module docstring).

    Serves one event loop at a time (a process runs one loop; tests run several
    in turn). ``commit_batch`` itself is thread-safe, so ``commit_sync`` callers
    on other threads may run beside it.
    """

    def __init__(
        self, fs: FileSystem, layout: Layout, *, max_batch: int = 512, fsync_threads: int = 16
    ) -> None:
        self._fs = fs
        self._layout = layout
        self._max_batch = max_batch
        self._fsync_threads = fsync_threads
        self._pending: list[tuple[PendingCommit, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: ThreadPoolExecutor | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.batches = 0
        """Batches run so far (for tests and benchmarks)."""

    async def commit(self, item: PendingCommit) -> None:
        """Return once ``item`` is durable; raise SpoolError (item removed) if not.

        A caller cancelled before its batch starts has its message removed; one
        cancelled later may find it committed all the same (never acknowledged,
        so the client sends it again: at-least-once).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A previous loop ended (tests run many); its drain task is gone.
            self._loop, self._task, self._pending = loop, None, []
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((item, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                # Let the sessions made ready in this loop iteration join the batch.
                await asyncio.sleep(0)
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                live = [(item, fut) for item, fut in batch if not fut.cancelled()]
                for item, fut in batch:
                    if fut.cancelled():
                        discard(self._fs, self._layout, item)
                if not live:
                    continue
                items = [item for item, _ in live]
                runner, pool = self._executors()
                try:
                    errors = await loop.run_in_executor(
                        runner,
                        commit_batch,
                        self._fs,
                        self._layout,
                        items,
                        pool,
                        self._fsync_threads,
                    )
                except asyncio.CancelledError:
                    # The loop is shutting down; the thread may still finish the batch.
                    for _, fut in live:
                        if not fut.done():
                            fut.set_exception(SpoolError("commit interrupted"))
                    raise
                except BaseException as exc:
                    # A bug (or a test's simulated crash): every caller gets it.
                    for _, fut in live:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.batches += 1
                for (_, fut), error in zip(live, errors, strict=True):
                    if fut.done():
                        continue
                    if error is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(error)
        finally:
            self._task = None

    def _executors(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        """The commit thread and the pool it spreads fsyncs over (made on first use)."""
        if self._runner is None or self._pool is None:
            self._runner = ThreadPoolExecutor(1, thread_name_prefix="spool-commit")
            self._pool = ThreadPoolExecutor(self._fsync_threads, thread_name_prefix="spool-fsync")
        return self._runner, self._pool

    def close(self) -> None:
        """Stop the threads (after the batch in progress, if any)."""
        for executor in (self._runner, self._pool):
            if executor is not None:
                executor.shutdown(wait=True)
        self._runner = self._pool = None
