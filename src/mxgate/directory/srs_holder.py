"""The SRS keys of a running gateway: loaded at start, followed, kept through outages.

Owns ``SrsKeyHolder``: one asyncio task with one database connection that
reads the keys at start, LISTENs on ``mxgate_srs_keys`` (the table's trigger
notifies on every change) and reads them again on each notification and every
``poll_interval`` seconds anyway (on a replica NOTIFY never arrives; rotation
starts a new key a few minutes ahead, more than the poll, see core.srs_keys).
When the database goes away it keeps the keys it has and reconnects with
backoff; their ``synced_at`` then ages, which the SRS check reads as "may be
out of date" (451, never 550, for a hash it cannot verify).

Also owns the disk copy of the keys (``SrsKeyCache``, mode 0600 since they
are secrets): written when the keys change, read at start when the database
is unreachable, so that a restart during an outage still verifies the
addresses of the last weeks.

Never answers an SRS question itself (``core.srs_policy`` does, from
``ring``), never blocks the event loop on the file, never raises because the
database is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from contextlib import suppress
from pathlib import Path

import asyncpg

from mxgate.core.srs_keys import SrsKey, SrsKeyRing
from mxgate.directory.connect import DATABASE_ERRORS
from mxgate.directory.srs_keys import SRS_CHANNEL, read_keys

log = logging.getLogger("mxgate.directory")

CACHE_FORMAT = "mxgate-srs-keys-1"


class SrsKeyCache:
    """The keys on local disk: one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, keys: tuple[SrsKey, ...], saved_at: float) -> None:
        document = {
            "format": CACHE_FORMAT,
            "saved_at": saved_at,
            "keys": [
                {
                    "id": k.id,
                    "secret": k.secret,
                    "created": k.created,
                    "signs_from": k.signs_from,
                    "retired_at": k.retired_at,
                }
                for k in keys
            ],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Several processes of one gateway write the same file: each its own temporary.
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def read(self) -> SrsKeyRing | None:
        """The cached keys (source "disk-cache", ``synced_at`` = when saved);
        None when there is no usable file."""
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            if document.get("format") != CACHE_FORMAT:
                return None
            keys = tuple(
                SrsKey(
                    id=int(item["id"]),
                    secret=str(item["secret"]),
                    signs_from=float(item["signs_from"]),
                    retired_at=None if item["retired_at"] is None else float(item["retired_at"]),
                    created=float(item.get("created", 0.0)),
                )
                for item in document["keys"]
            )
            return SrsKeyRing(keys, "disk-cache", float(document["saved_at"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


class SrsKeyHolder:
    """Holds ``ring``, the SRS keys the sessions and the queue manager use.

    dsn:            libpq-style URL
    cache_path:     the disk copy (None: none)
    poll_interval:  seconds between reads when no NOTIFY comes
    """

    def __init__(
        self,
        dsn: str,
        *,
        cache_path: Path | None = None,
        poll_interval: float = 30.0,
        connect_timeout: float = 5.0,
        query_timeout: float = 30.0,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._cache = SrsKeyCache(cache_path) if cache_path is not None else None
        self._poll_interval = poll_interval
        self._connect_timeout = connect_timeout
        self._query_timeout = query_timeout
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._ring = SrsKeyRing()
        self._last_error: str | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ring(self) -> SrsKeyRing:
        return self._ring

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def start(self) -> None:
        """Read the keys (the database, else the disk copy), then follow them.
        Returns once the first attempt is over, whatever its outcome."""
        if self._task is not None:
            raise RuntimeError("SrsKeyHolder already started")
        self._task = asyncio.create_task(self._run(), name="mxgate-srs-key-holder")
        ready = asyncio.create_task(self._ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self._task.result()  # only a bug ends the task; show it

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Read the keys now (NOTIFY, SIGHUP)."""
        self._wake.set()

    async def _run(self) -> None:
        delay = self._retry_min
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
                await conn.add_listener(SRS_CHANNEL, self._on_notify)
                delay = self._retry_min
                while True:
                    self._wake.clear()  # before the read: a NOTIFY during it is kept
                    await self._read(conn)
                    self._ready.set()
                    with suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
            finally:
                if conn is not None:
                    await _close(conn)
            if not self._ready.is_set():
                await self._load_cache()
                self._ready.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max)

    async def _read(self, conn: asyncpg.Connection) -> None:
        keys = await read_keys(conn, timeout=self._query_timeout)
        changed = keys != self._ring.keys or self._ring.source != "database"
        now = time.time()
        self._ring = SrsKeyRing(keys, "database", now)
        if self._last_error is not None:
            log.info("SRS keys: database reachable again")
            self._last_error = None
        if changed:
            log.info("SRS keys loaded: %d key(s)", len(keys))
            if self._cache is not None:
                try:
                    await asyncio.to_thread(self._cache.write, keys, now)
                except OSError as exc:
                    log.warning("could not write the SRS key cache %s: %s", self._cache.path, exc)

    async def _load_cache(self) -> None:
        if self._cache is None or self._ring.loaded:
            return
        found = await asyncio.to_thread(self._cache.read)
        if found is None:
            log.error("no SRS keys: database unreachable and no usable key cache")
            return
        self._ring = found
        log.warning("SRS keys from the disk cache %s (database unreachable)", self._cache.path)

    def _failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_error:
            if isinstance(exc, DATABASE_ERRORS):
                log.warning("SRS keys: %s; keeping the keys we have", message)
            else:
                log.exception("SRS key holder failed; keeping the keys we have")
        self._last_error = message

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._wake.set()


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=2)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:
        conn.terminate()
