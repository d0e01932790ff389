"""The busy poller's window (adaptive, as KVM's halt polling) and its poll on a
real event loop, with a clock the tests move."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.server.busy_poll import GROW_START, BusyPoller, PollWindow

LIMIT = 200e-6


def test_window_starts_closed_and_opens_after_a_short_wait() -> None:
    window = PollWindow(LIMIT)
    assert window.seconds == 0.0
    window.waited(50e-6)
    assert window.seconds == GROW_START


def test_window_doubles_until_it_covers_the_waits_up_to_the_limit() -> None:
    window = PollWindow(LIMIT)
    seen = []
    for _ in range(8):
        window.waited(190e-6)
        seen.append(window.seconds)
    assert seen[:6] == [GROW_START * 2**n for n in range(5)] + [LIMIT]
    assert seen[6:] == [LIMIT] * 2  # 190 µs waits are caught now: no change


def test_window_stops_growing_once_it_covers_the_waits() -> None:
    window = PollWindow(LIMIT)
    for _ in range(10):
        window.waited(150e-6)
    assert window.seconds == 16 * GROW_START  # 160 µs: enough for 150 µs waits


def test_a_wait_the_window_covers_changes_nothing() -> None:
    window = PollWindow(LIMIT)
    for _ in range(3):
        window.waited(40e-6)
    assert window.seconds == 40e-6
    window.waited(40e-6)
    window.waited(1e-6)
    assert window.seconds == 40e-6


def test_long_waits_halve_the_window_then_close_it() -> None:
    window = PollWindow(LIMIT)
    for _ in range(6):
        window.waited(190e-6)
    assert window.seconds == LIMIT
    seen = []
    for _ in range(6):
        window.waited(0.05)  # a client 50 ms away
        seen.append(window.seconds)
    assert seen == [LIMIT / 2, LIMIT / 4, LIMIT / 8, LIMIT / 16, 0.0, 0.0]


def test_a_far_client_never_opens_the_window() -> None:
    window = PollWindow(LIMIT)
    for _ in range(100):
        window.waited(0.002)
    assert window.seconds == 0.0


@given(st.lists(st.floats(min_value=0.0, max_value=0.01), max_size=60))
def test_window_is_closed_or_between_grow_start_and_the_limit(waits: list[float]) -> None:
    window = PollWindow(LIMIT)
    for wait in waits:
        before = window.seconds
        window.waited(wait)
        assert window.seconds == 0.0 or GROW_START <= window.seconds <= LIMIT
        if wait > LIMIT:
            assert window.seconds <= before  # never grows on a long wait
        elif wait > before:
            assert window.seconds > before  # always grows on a short one it missed


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def open_poller(loop: asyncio.AbstractEventLoop, clock: Clock) -> BusyPoller:
    poller = BusyPoller(loop, LIMIT, clock=clock)
    for _ in range(6):  # short waits open the window (to 160 µs)
        poller.wait()
        clock.now += 150e-6
        poller.input()
    return poller


async def turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_poll_keeps_the_loop_turning_until_input_comes() -> None:
    async def main() -> None:
        clock = Clock()
        poller = open_poller(asyncio.get_running_loop(), clock)
        await turns(3)  # the polls of the set-up end
        polls, caught = poller.polls, poller.caught
        poller.wait()
        assert poller.polls == polls + 1
        await turns(20)
        assert poller._polling  # still turning: the window has not run out
        poller.input()
        await turns(2)
        assert not poller._polling
        assert poller.caught == caught + 1

    asyncio.run(main())


def test_a_poll_ends_when_the_window_runs_out() -> None:
    async def main() -> None:
        clock = Clock()
        poller = open_poller(asyncio.get_running_loop(), clock)
        await turns(3)
        caught = poller.caught
        poller.wait()
        await turns(5)
        assert poller._polling
        clock.now += LIMIT  # no input within the window
        await turns(2)
        assert not poller._polling
        assert poller.caught == caught

    asyncio.run(main())


def test_a_wait_while_the_last_poll_is_pending_polls_for_the_new_wait() -> None:
    """Input, then the reply and the next wait, all before the poll's callback
    runs again: the same chain goes on for the new wait instead of ending."""

    async def main() -> None:
        clock = Clock()
        poller = open_poller(asyncio.get_running_loop(), clock)
        await turns(3)
        poller.wait()
        await turns(2)
        poller.input()
        poller.wait()  # the callback has not seen the input yet
        await turns(10)
        assert poller._polling
        poller.input()
        await turns(2)
        assert not poller._polling

    asyncio.run(main())


def test_off_schedules_nothing() -> None:
    async def main() -> None:
        clock = Clock()
        poller = BusyPoller(asyncio.get_running_loop(), 0.0, clock=clock)
        for _ in range(10):
            poller.wait()
            clock.now += 10e-6
            poller.input()
        assert poller.polls == 0
        assert not poller._polling
        assert poller.window.seconds == 0.0

    asyncio.run(main())


@pytest.mark.parametrize("wait", [5e-6, 150e-6])
def test_short_waits_measured_by_input_open_the_window(wait: float) -> None:
    async def main() -> None:
        clock = Clock()
        poller = BusyPoller(asyncio.get_running_loop(), LIMIT, clock=clock)
        poller.wait()
        assert poller.polls == 0  # closed: the first wait only measures
        clock.now += wait
        poller.input()
        assert poller.window.seconds == GROW_START
        poller.wait()
        assert poller.polls == 1

    asyncio.run(main())


def test_polled_time_and_results_are_counted() -> None:
    async def main() -> None:
        clock = Clock()
        poller = open_poller(asyncio.get_running_loop(), clock)
        await turns(3)
        caught, expired, polled = poller.caught, poller.expired, poller.polled
        poller.wait()  # input 30 µs later: caught
        clock.now += 30e-6
        poller.input()
        await turns(2)
        assert (poller.caught, poller.expired) == (caught + 1, expired)
        assert poller.polled == pytest.approx(polled + 30e-6)
        poller.wait()  # nothing within the window (160 µs): expired, then slept
        await turns(2)
        clock.now += 1e-3
        await turns(2)
        assert (poller.caught, poller.expired) == (caught + 1, expired + 1)
        assert poller.polled == pytest.approx(polled + 30e-6 + 160e-6)
        poller.input()  # after the sleep: not caught, no more time counted
        assert poller.caught == caught + 1
        assert poller.polled == pytest.approx(polled + 190e-6)

    asyncio.run(main())
