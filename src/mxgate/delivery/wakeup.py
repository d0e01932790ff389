"""The queue manager's doorbell: a flag that one task waits on, with a timeout.

What ``asyncio.Event`` plus ``asyncio.wait((stop, event), timeout=...)`` did,
for the one waiter there is. Those are interpreted Python even when the
caller is compiled: per wait, a task for ``Event.wait()``, ``asyncio.wait``'s
own future, callbacks and timer, and the task registry's WeakSet. At light
load the queue manager waits once or twice per message (a worker's tick, then
the end of the delivery), so that was about a tenth of its CPU time. Here a
wait is one future and one timer, all of it compiled with the queue manager.

Never decides when to wake or why: callers ring, the waiter looks.
"""

from __future__ import annotations

import asyncio


def wake(waiter: asyncio.Future[None] | None) -> None:
    """End the wait on ``waiter``, if there is one still going on.

    Not ``waiter.set_result`` directly: the wait may have ended (rung, or
    cancelled) before a timer or a late event fires; that is no error."""
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class Doorbell:
    """``ring()`` sets the flag and wakes the waiter; ``clear()`` resets it;
    ``wait(timeout)`` returns at once when set, else on the next ring or after
    ``timeout`` seconds. One waiter at a time."""

    def __init__(self) -> None:
        self._rung = False
        self._waiter: asyncio.Future[None] | None = None

    def ring(self) -> None:
        self._rung = True
        waiter = self._waiter
        if waiter is not None:
            wake(waiter)

    def clear(self) -> None:
        self._rung = False

    def is_rung(self) -> bool:
        return self._rung

    async def wait(self, timeout: float) -> None:
        if self._rung:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


async def sleep(seconds: float) -> None:
    """``asyncio.sleep(seconds)`` for seconds > 0, without its interpreted
    coroutine and callback (one future, one timer)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    timer = loop.call_later(seconds, wake, waiter)
    try:
        await waiter
    finally:
        timer.cancel()
