"""Removing delivered messages from active/, off the event loop.

Owns the queue manager's deletes: an unlink of an fsynced file waits for the
disk, so they go to the helper process of ``unlinker`` (or to worker threads
when it cannot run), in batches, and each message's future ends when its
file is gone. Never decides what to remove: the queue manager does.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from mxgate.delivery.unlinker import Unlinker
from mxgate.spool import MessageNotFoundError, Queue, Spool, SpoolError

log = logging.getLogger(__name__)


class Remover:
    """Removes delivered messages from active/, off the event loop (an
    unlink of an fsynced file waits for the disk): through the helper
    process of ``unlinker`` once ``start`` has started it, else (or after it
    died) on worker threads. Either way in batches: a batch leaves
    ``GATHER`` seconds after its first message, or at once while nothing
    is being removed."""

    GATHER = 0.005
    MAX_THREAD_BATCHES = 2  # in flight at once: one stuck on the disk does not stop the rest

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._waiting: dict[str, asyncio.Future[None]] = {}
        self._pending: list[str] = []
        self._threads = 0  # thread batches running
        self._timer: asyncio.Handle | None = None
        self._helper: Unlinker | None = None
        self._resent: set[str] = set()  # unanswered by a helper that died

    async def start(self) -> None:
        helper = Unlinker(self.spool.layout.root, self._answer, self._lost)
        try:
            await helper.start()
        except OSError as exc:
            log.warning("cannot start the remover helper, removing on threads: %s", exc)
            return
        self._helper = helper

    @property
    def helper_pid(self) -> int | None:
        """The helper process, None when removing on threads."""
        helper = self._helper
        return helper.pid if helper is not None and helper.alive else None

    async def close(self) -> None:
        """Stop the helper once it answered everything it was sent."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._flush()
        helper, self._helper = self._helper, None
        if helper is not None:
            await helper.close()

    def remove(self, queue_id: str) -> asyncio.Future[None]:
        """Remove ``queue_id`` from active/; the future ends when it is gone
        (with the spool's exception if it could not be removed)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._waiting[queue_id] = done
        self._pending.append(queue_id)
        if self._timer is None:
            if self._busy:
                self._timer = loop.call_later(self.GATHER, self._due)
            else:
                self._flush()
        return done

    @property
    def _busy(self) -> bool:
        helper = self._helper
        if helper is not None and helper.alive:
            return helper.outstanding > 0
        return self._threads > 0

    def _due(self) -> None:
        self._timer = None
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        helper = self._helper
        if helper is not None and helper.alive:
            batch, self._pending = self._pending, []
            helper.send(batch)
        elif self._threads < self.MAX_THREAD_BATCHES:
            batch, self._pending = self._pending, []
            self._threads += 1
            job = asyncio.get_running_loop().run_in_executor(None, self._unlink, batch)
            job.add_done_callback(functools.partial(self._unlinked, batch))
        # else: the next thread batch to end sends these

    def _answer(self, queue_id: str, error: Exception | None) -> None:
        if queue_id in self._resent:
            self._resent.discard(queue_id)
            if isinstance(error, MessageNotFoundError):
                error = None  # the helper removed it before it died
        done = self._waiting.pop(queue_id, None)
        if done is None or done.done():
            return  # its attempt was cancelled (shutdown)
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def _lost(self, queue_ids: list[str]) -> None:
        log.warning("the remover helper exited; removing on threads")
        self._resent.update(queue_ids)
        self._pending[:0] = queue_ids
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_soon(self._due)

    def _unlink(self, queue_ids: list[str]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for queue_id in queue_ids:
            try:
                self.spool.remove(queue_id, Queue.ACTIVE)
            except Exception as exc:  # the message's own attempt reports it
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def _unlinked(self, batch: list[str], job: asyncio.Future[list[Exception | None]]) -> None:
        self._threads -= 1
        errors: list[Exception | None]
        if job.cancelled():
            errors = [SpoolError("removal cancelled")] * len(batch)
        elif (failure := job.exception()) is not None:
            errors = [SpoolError(f"removal failed: {failure!r}")] * len(batch)
        else:
            errors = job.result()
        for queue_id, error in zip(batch, errors, strict=True):
            self._answer(queue_id, error)
        if self._pending and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.GATHER, self._due)
