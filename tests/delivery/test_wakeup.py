"""The queue manager's doorbell (delivery/wakeup.py): a ring wakes the
waiter at once, a ring before the wait is not lost, a clear forgets it, the
timeout ends a wait nobody rings, and a cancelled wait leaves nothing behind."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from mxgate.delivery.wakeup import Doorbell, sleep


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def sync() -> None:
        asyncio.run(test())

    return sync


@run
async def test_a_ring_wakes_the_waiter_before_its_timeout() -> None:
    bell = Doorbell()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, bell.ring)
    started = loop.time()
    await bell.wait(30)
    assert loop.time() - started < 5
    assert bell.is_rung()


@run
async def test_a_ring_before_the_wait_is_kept_until_cleared() -> None:
    bell = Doorbell()
    bell.ring()
    await asyncio.wait_for(bell.wait(30), 5)  # returns at once
    bell.clear()
    assert not bell.is_rung()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bell.wait(30), 0.05)


@run
async def test_the_timeout_ends_a_wait_nobody_rings() -> None:
    bell = Doorbell()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(bell.wait(0.05), 5)
    assert loop.time() - started >= 0.04
    assert not bell.is_rung()


@run
async def test_rings_after_a_cancelled_wait_and_late_timers_are_harmless() -> None:
    bell = Doorbell()
    waiting = asyncio.ensure_future(bell.wait(0.02))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    bell.ring()  # nobody waits: only the flag
    await asyncio.sleep(0.05)  # the cancelled wait's timer would have fired by now
    assert bell.is_rung()
    await asyncio.wait_for(bell.wait(30), 5)


@run
async def test_sleep_sleeps_and_can_be_cancelled() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sleep(0.03)
    assert loop.time() - started >= 0.025
    sleeping = asyncio.ensure_future(sleep(30))
    await asyncio.sleep(0)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
