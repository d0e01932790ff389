"""Polling a worker's loop for a moment instead of sleeping, while it pays.

Why: between a reply and the client's next command a worker's event loop
sleeps in epoll_wait. On a virtual machine whose idle vCPUs halt (no guest
halt-polling), every such sleep costs a halt, and the next command a
wake-up (an inter-processor interrupt, a VM exit and entry, caches cooled by
whatever the host ran meanwhile), seven times per message for a client that
does not pipeline (BENCHMARKS.md, sessions 8 and 21). A loop kept busy for a
few dozen microseconds picks the next command up without sleeping.

Adaptive, as KVM's halt polling (its ``halt_poll_ns``, 200 µs by default,
grown and shrunk per vCPU): the window starts closed; it opens (10 µs, then
doubling up to ``limit``) each time the loop slept and the next input came
sooner than ``limit``, and it halves each time the loop waited longer than
``limit``. Clients milliseconds away, as on the internet, keep it closed:
polling spends CPU only where the wait it replaces is short. Linux's own
socket busy polling (``net.core.busy_poll``) does not apply to loopback or to
most virtual NICs, hence this in user space.

Owns the window (``PollWindow``, pure) and the poll itself
(``BusyPoller``: a chain of ``call_soon`` callbacks; while one is pending the
loop checks its sockets without blocking). Sessions tell it when input
arrives and when they wait for more; nothing else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

GROW_START = 10e-6
"""The first window after a short wait (KVM's halt_poll_ns_grow_start)."""


class PollWindow:
    """How long to poll before sleeping (seconds; 0: do not poll)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.seconds = 0.0

    def waited(self, seconds: float) -> None:
        """The loop waited ``seconds`` for input (polling, then sleeping).

        Within the window: polling caught it, or would have; nothing to change.
        Longer than ``limit``: the client is far (or idle); polling that long
        only burnt CPU, so halve the window (closed once below GROW_START).
        Between the two: a longer window would have caught it; grow."""
        if seconds <= self.seconds:
            return
        if seconds > self.limit:
            half = self.seconds / 2
            self.seconds = half if half >= GROW_START else 0.0
        else:
            self.seconds = min(self.limit, max(GROW_START, self.seconds * 2))


class BusyPoller:
    """One per worker loop; ``limit`` 0 turns it off (``smtpd_busy_poll``)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limit: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.loop = loop
        self.window = PollWindow(limit)
        self.clock = clock
        self.enabled = limit > 0
        self._waiting_since = -1.0  # when the last reply went out; -1: not waiting
        self._inputs = 0  # input events so far (a poll ends at the next one)
        self._polling = False
        self._poll_seen = 0
        self._poll_until = 0.0
        self._poll_from = -1.0  # when the wait being polled for began; -1: none
        self.polls = 0  # waits polled for
        # For the metrics (the worker sends them to the master once a second):
        self.caught = 0  # waits that polling saw end with input
        self.expired = 0  # polls that ran out of window (the loop then slept)
        self.polled = 0.0  # seconds spent polling: from each wait to its input or the window's end

    def input(self) -> None:
        """Input arrived (a command, a new connection): learn from the wait."""
        if not self.enabled:
            return
        self._inputs += 1
        since = self._waiting_since
        if since >= 0:
            self._waiting_since = -1.0
            now = self.clock()
            self.window.waited(now - since)
            if self._poll_from >= 0:  # polling for it: caught
                self.polled += now - self._poll_from
                self._poll_from = -1.0
                self.caught += 1

    def wait(self) -> None:
        """A session answered and waits for its client: poll for a moment."""
        if not self.enabled:
            return
        now = self.clock()
        self._waiting_since = now
        window = self.window.seconds
        if window <= 0:
            return
        # A poll still pending (its input came, but its callback has not run
        # since) goes on for this wait instead.
        self._poll_seen = self._inputs
        self._poll_until = now + window
        self._poll_from = now
        self.polls += 1
        if not self._polling:
            self._polling = True
            self.loop.call_soon(self._poll)

    def _poll(self) -> None:
        # Each turn of the loop with a callback pending checks the sockets
        # with a zero timeout, then runs this again: no sleep until the
        # window runs out or input came (whoever it was for).
        if self._inputs != self._poll_seen:
            self._polling = False
        elif self.clock() >= self._poll_until:
            self._polling = False
            if self._poll_from >= 0:
                self.polled += self._poll_until - self._poll_from
                self._poll_from = -1.0
                self.expired += 1
        else:
            self.loop.call_soon(self._poll)
