"""Connection reuse and concurrency limits for outbound delivery.

Owns the open sessions between deliveries: an idle session is kept per next
hop, keyed by (transport, nexthop) as Postfix's connection cache is, for
``idle_timeout`` seconds (Postfix smtp_connection_cache_time_limit, 2 s) and
at most ``max_reuse`` transactions or ``reuse_time_limit`` seconds
(smtp_connection_reuse_count_limit / _time_limit). Also the limits: at most
``destination_concurrency`` open sessions per next hop, in use or idle
(Postfix default_destination_concurrency_limit, 20), and at most
``total_concurrency`` sessions in use at once (default_process_limit, 100).

A ``lease`` is one slot: the caller gets an idle session or None (then it
may open one), and gives back the session it ends with, or None.

Never speaks SMTP beyond asking a session to close, never resolves names,
never decides whether a session is healthy (``Session.usable`` does).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from .session import Session

Key = tuple[str, str]
"""(transport, nexthop), e.g. ("smtp", "example.com") or ("lmtp", "unix:/run/lmtp")."""


@dataclass(frozen=True, slots=True)
class PoolConfig:
    destination_concurrency: int = 20
    total_concurrency: int = 100
    idle_timeout: float = 2.0
    max_reuse: int = 100
    reuse_time_limit: float = 300.0


@dataclass(slots=True, init=False)
class Lease:
    """One slot for one destination. ``session`` is an idle session handed
    out (or None); set it to the session to give back (None: nothing to keep)."""

    key: Key
    session: Session | None
    reused: bool

    def __init__(self, key: Key, session: Session | None, reused: bool) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        self.key = key
        self.session = session
        self.reused = reused


@dataclass(slots=True)
class _Destination:
    open: int = 0  # sessions in use or idle, plus slots about to open one
    waiting: int = 0  # leases waiting for a slot
    idle: list[tuple[Session, asyncio.TimerHandle]] = field(default_factory=list)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    """Let the first waiter still waiting look again (it re-checks the limit)."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


async def _wait_turn(waiters: deque[asyncio.Future[None]]) -> None:
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except asyncio.CancelledError:
        # Woken and cancelled at once: pass the turn on, or it is lost.
        if waiter.done() and not waiter.cancelled():
            _wake_one(waiters)
        raise


class ConnectionPool:
    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self._destinations: dict[Key, _Destination] = {}
        self._in_use = 0  # leases holding a global slot
        self._global_waiters: deque[asyncio.Future[None]] = deque()
        self._closing: set[asyncio.Task[None]] = set()
        self.opened = 0  # leases that found no idle session (statistics, tests)
        self.reused = 0  # leases that got an idle session

    async def acquire(self, key: Key) -> Lease:
        """A slot for ``key`` and a global one; hand it back with ``release``.
        Without a wait when both are free (no task switch per message)."""
        dest = self._destinations.get(key)
        if dest is None:
            dest = self._destinations[key] = _Destination()
        limit = self.config.destination_concurrency
        if not dest.idle and dest.open >= limit:
            dest.waiting += 1
            try:
                while not dest.idle and dest.open >= limit:
                    await _wait_turn(dest.waiters)
            finally:
                dest.waiting -= 1
        session: Session | None = None
        if dest.idle:
            session, timer = dest.idle.pop()  # the most recently used
            timer.cancel()
            self.reused += 1
        else:
            dest.open += 1
            self.opened += 1
        lease = Lease(key, session, session is not None)
        try:
            while self._in_use >= self.config.total_concurrency:
                await _wait_turn(self._global_waiters)
        except BaseException:
            self._give_back(key, dest, session)
            raise
        self._in_use += 1
        return lease

    def release(self, lease: Lease) -> None:
        """Give the slots back, and the session the lease ends with (kept
        idle if it can be reused, else closed)."""
        self._in_use -= 1
        _wake_one(self._global_waiters)
        dest = self._destinations.get(lease.key)
        assert dest is not None
        self._give_back(lease.key, dest, lease.session)

    def _give_back(self, key: Key, dest: _Destination, session: Session | None) -> None:
        if session is not None and self._reusable(session):
            loop = asyncio.get_running_loop()
            timer = loop.call_later(self.config.idle_timeout, self._expire, key, session)
            dest.idle.append((session, timer))
        else:
            if session is not None:
                self._close_later(session)
            dest.open -= 1
        _wake_one(dest.waiters)
        self._forget(key, dest)

    def _reusable(self, session: Session) -> bool:
        age = time.monotonic() - session.created
        return (
            session.usable
            and session.transactions < self.config.max_reuse
            and age < self.config.reuse_time_limit
        )

    def _expire(self, key: Key, session: Session) -> None:
        dest = self._destinations.get(key)
        if dest is None:
            return
        for i, (idle, _) in enumerate(dest.idle):
            if idle is session:
                del dest.idle[i]
                dest.open -= 1
                self._close_later(session)
                _wake_one(dest.waiters)
                self._forget(key, dest)
                return

    def _forget(self, key: Key, dest: _Destination) -> None:
        """Drop the bookkeeping of a destination nobody uses (there may be
        many over a day)."""
        if dest.open == 0 and not dest.idle and not dest.waiting:
            self._destinations.pop(key, None)

    def _close_later(self, session: Session) -> None:
        self._track(asyncio.ensure_future(session.close()))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @property
    def idle_count(self) -> int:
        return sum(len(d.idle) for d in self._destinations.values())

    @property
    def open_count(self) -> int:
        """Sessions in use or idle (and slots about to open one)."""
        return sum(d.open for d in self._destinations.values())

    async def close(self) -> None:
        """Close every idle session (QUIT) and wait for all closes."""
        for key, dest in list(self._destinations.items()):
            for session, timer in dest.idle:
                timer.cancel()
                dest.open -= 1
                self._close_later(session)
            dest.idle.clear()
            self._forget(key, dest)
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
