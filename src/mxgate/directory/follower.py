"""The live routing snapshot of a running gateway: load, follow, survive outages.

Owns ``SnapshotHolder``: one asyncio task with one database connection that
loads the snapshot at start, then keeps it current. With a change log
(migrated database) it LISTENs on ``mxgate_changes`` as a wake-up and polls
every ``poll_interval`` seconds anyway (the mechanism on a replica, where
NOTIFY never arrives), applying each batch incrementally (changes.py).
Without one (a tutorial database never migrated) it reloads everything every
``reload_interval`` seconds, and switches to the change log as soon as a
migration creates it. When the database goes away it keeps serving the last
snapshot and reconnects with exponential backoff; after reconnecting it
catches up from the change log. Every load and every change is saved,
debounced, to the disk cache, which is what a restart with the database
down serves from.

Never answers a lookup, never blocks the event loop for long (parsing and
file writes run in threads), and never lets a reader see half a batch: a
batch is applied without an await between the first mutation and the version
bump, and a full load builds a new snapshot that replaces ``current`` in one
assignment (build-then-swap). Never raises because the database is down:
errors go to ``status()`` and the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import asyncpg

from mxgate.core.snapshot import RoutingData
from mxgate.directory.cache import CacheFile, encode
from mxgate.directory.changes import Batch, NeedsReload, poll
from mxgate.directory.connect import DATABASE_ERRORS
from mxgate.directory.loader import load
from mxgate.directory.memory import freeze_long_lived, release_freed_heap
from mxgate.directory.queries import CHANNEL, HAS_CHANGE_LOG

log = logging.getLogger("mxgate.directory")

Source = Literal["database", "disk-cache", "none"]


@dataclass(frozen=True, slots=True)
class HolderStatus:
    """What ``SnapshotHolder.status()`` reports (for logs, health checks, the CLI).

    source:          where ``current`` came from
    version:         change-log id the snapshot reflects (None: no snapshot)
    connected:       whether the holder has a database connection now
    change_capture:  True: follows the change log; False: periodic full reloads;
                     None: not known yet (never reached the database)
    last_sync:       Unix time of the last successful read from the database
    last_error:      the last failure, cleared by the next successful read
    cache_saved_at:  Unix time the disk cache was written (when serving from it)
    counts:          rows per table in ``current``
    """

    source: Source
    version: int | None
    connected: bool
    change_capture: bool | None
    last_sync: float | None
    last_error: str | None
    last_error_at: float | None
    cache_saved_at: float | None
    counts: dict[str, int] = field(default_factory=dict)


class SnapshotHolder:
    """Holds ``current``, the routing snapshot every SMTP session reads.

    dsn:              libpq-style URL (several hosts allowed, as asyncpg takes them)
    cache_path:       file for the last good snapshot (None: no disk cache)
    poll_interval:    seconds between change-log polls (also the liveness check)
    reload_interval:  seconds between full reloads when the database has no change
                      log (an unmigrated tutorial database); 60 s by default, since
                      each reload reads every row
    connect_timeout:  seconds to wait for a connection before counting it failed
    query_timeout:    seconds per query (a hung server is treated as down)
    cache_delay:      debounce of cache writes after incremental changes
    retry_min/max:    backoff between reconnection attempts (doubling)
    max_batch:        more change-log entries than this at once: full reload instead
    on_change:        called with ``current`` after every load or applied batch,
                      synchronously on the event loop (keep it short)
    """

    def __init__(
        self,
        dsn: str,
        *,
        cache_path: Path | None = None,
        poll_interval: float = 1.0,
        reload_interval: float = 60.0,
        connect_timeout: float = 5.0,
        query_timeout: float = 60.0,
        cache_delay: float = 2.0,
        retry_min: float = 0.25,
        retry_max: float = 10.0,
        max_batch: int = 50_000,
        on_change: Callable[[RoutingData], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._cache = CacheFile(cache_path) if cache_path is not None else None
        self._poll_interval = poll_interval
        self._reload_interval = reload_interval
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._cache_delay = cache_delay
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._max_batch = max_batch
        self._on_change = on_change

        self._current: RoutingData | None = None
        self._source: Source = "none"
        self._pending: frozenset[int] = frozenset()
        self._change_log: bool | None = None
        self._connected = False
        self._last_sync: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_reload = 0.0
        self._cache_saved_at: float | None = None

        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cache_task: asyncio.Task[None] | None = None
        self._cache_due = asyncio.Event()
        self._cache_urgent = False
        self._changes = 0  # bumped on every load or applied batch
        self._written = 0  # value of _changes at the last completed cache write

    # -- public surface -------------------------------------------------

    @property
    def current(self) -> RoutingData | None:
        """The snapshot to route with; None until one is loaded (answer 451 4.3.0)."""
        return self._current

    async def start(self) -> None:
        """Load from the database, or else from the disk cache, then follow changes.

        Returns once the first attempt is over, whatever its outcome; the
        holder keeps trying in the background.
        """
        if self._task is not None:
            raise RuntimeError("SnapshotHolder already started")
        self._task = asyncio.create_task(self._run(), name="mxgate-snapshot-holder")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # only a bug ends the task; show it

    async def stop(self) -> None:
        """Stop following, close the connection and write any unsaved change to disk."""
        for task in (self._task, self._cache_task):
            if task is not None:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        self._task = self._cache_task = None
        if self._written < self._changes:
            await self._write_cache()

    async def __aenter__(self) -> SnapshotHolder:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def wake(self) -> None:
        """Check for changes now instead of at the next poll (e.g. on SIGHUP)."""
        self._wake.set()

    def status(self) -> HolderStatus:
        data = self._current
        return HolderStatus(
            source=self._source,
            version=data.version if data is not None else None,
            connected=self._connected,
            change_capture=self._change_log,
            last_sync=self._last_sync,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            cache_saved_at=self._cache_saved_at if self._source == "disk-cache" else None,
            counts=data.counts() if data is not None else {},
        )

    # -- the follower task ----------------------------------------------

    async def _run(self) -> None:
        delay = self._retry_min
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                conn.add_termination_listener(self._on_terminated)
                await conn.add_listener(CHANNEL, self._on_notify)
                self._connected = True
                if self._source != "database":
                    # At start, or serving the disk cache: that file may come
                    # from another database or be arbitrarily old, so it is
                    # replaced whole rather than caught up.
                    await self._reload(conn, "start" if self._current is None else "reconnected")
                self._ready.set()
                delay = self._retry_min
                await self._follow(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
            finally:
                self._connected = False
                if conn is not None:
                    await _close(conn)
            if not self._ready.is_set():
                if self._current is None:
                    await self._load_cache()
                self._ready.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def _follow(self, conn: asyncpg.Connection) -> None:
        while True:
            # Cleared before the sync: a NOTIFY arriving during it means
            # "look again" and must not be lost.
            self._wake.clear()
            await self._sync(conn)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)

    async def _sync(self, conn: asyncpg.Connection) -> None:
        if not self._change_log:
            due = time.monotonic() - self._last_reload >= self._reload_interval
            if due or await conn.fetchval(HAS_CHANGE_LOG, timeout=self._query_timeout):
                await self._reload(conn, "periodic reload" if due else "change log appeared")
            else:
                self._synced()
            return
        data = self._current
        assert data is not None  # a database source always has a snapshot
        try:
            result = await poll(
                conn,
                data.version,
                self._pending,
                limit=self._max_batch,
                timeout=self._query_timeout,
            )
        except asyncpg.UndefinedTableError:
            result = NeedsReload("change log disappeared")
        if isinstance(result, NeedsReload):
            await self._reload(conn, result.reason)
        else:
            self._apply(data, result)

    def _apply(self, data: RoutingData, batch: Batch) -> None:
        # No await in here: readers see all of the batch or none of it.
        batch.apply(data)
        self._pending = batch.in_progress
        self._synced()
        if batch.groups:
            log.debug("applied %d change(s), now at version %d", batch.entries, batch.version)
            self._changed(urgent=False)

    async def _reload(self, conn: asyncpg.Connection, reason: str) -> None:
        started = time.monotonic()
        loaded = await load(conn, timeout=self._query_timeout)
        self._current = loaded.data  # the swap
        # The snapshot lives until the next full load: keep the collector's
        # full collections from walking it each time (a stall of ~30 ms for
        # whatever runs then, a routing decision say). See memory.py.
        freeze_long_lived()
        self._pending = loaded.in_progress
        self._change_log = loaded.change_log
        self._source = "database"
        self._last_reload = time.monotonic()
        self._synced()
        # Periodic reloads of an unmigrated database are routine: debug only.
        log.log(
            logging.DEBUG if reason == "periodic reload" else logging.INFO,
            "routing snapshot loaded (%s) in %.2f s: version %d, %s",
            reason,
            self._last_reload - started,
            loaded.data.version,
            loaded.data.counts(),
        )
        self._changed(urgent=True)
        # The replaced snapshot is freed now: give its heap back as well.
        await asyncio.to_thread(release_freed_heap)

    def _synced(self) -> None:
        if self._last_error is not None:
            log.info("routing database reachable again")
        self._last_sync = time.time()
        self._last_error = None
        self._last_error_at = None

    def _failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        expected = isinstance(exc, DATABASE_ERRORS)
        if message != self._last_error:
            if expected:
                log.warning("routing database: %s; serving the last snapshot", message)
            else:
                log.exception("routing snapshot follower failed; serving the last snapshot")
        self._last_error = message
        self._last_error_at = time.time()

    def _changed(self, *, urgent: bool) -> None:
        self._changes += 1
        if self._on_change is not None and self._current is not None:
            try:
                self._on_change(self._current)
            except Exception:
                log.exception("on_change hook failed")
        if self._cache is not None:
            self._cache_urgent = self._cache_urgent or urgent
            self._cache_due.set()
            if self._cache_task is None:
                self._cache_task = asyncio.create_task(self._cache_loop())

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake.set()

    def _on_terminated(self, conn: object) -> None:
        # The next sync then fails at once instead of at the next poll.
        self._wake.set()

    # -- disk cache ---------------------------------------------------------

    async def _load_cache(self) -> None:
        if self._cache is None:
            return
        found = await asyncio.to_thread(self._cache.read)
        if found is None:
            log.error("no routing snapshot: database unreachable and no usable disk cache")
            return
        self._current, self._cache_saved_at = found
        self._source = "disk-cache"
        freeze_long_lived()  # as after a database load (see _reload)
        await asyncio.to_thread(release_freed_heap)
        log.warning(
            "database unreachable; serving the disk cache %s (version %d, saved at %s)",
            self._cache.path,
            self._current.version,
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._cache_saved_at)),
        )
        if self._on_change is not None:
            try:
                self._on_change(self._current)
            except Exception:
                log.exception("on_change hook failed")

    async def _cache_loop(self) -> None:
        while True:
            await self._cache_due.wait()
            if not self._cache_urgent:
                await asyncio.sleep(self._cache_delay)  # debounce bursts of edits
            self._cache_urgent = False
            self._cache_due.clear()
            await self._write_cache()

    async def _write_cache(self) -> None:
        data = self._current
        if self._cache is None or data is None or self._source != "database":
            return
        seq = self._changes
        parts = encode(data, time.time())
        try:
            await asyncio.to_thread(self._cache.write, parts, seq)
        except OSError as exc:
            log.warning("could not write the snapshot cache %s: %s", self._cache.path, exc)
            return
        self._written = max(self._written, seq)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=2)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:
        conn.terminate()
