"""A decision on a snapshot of one million mailboxes takes under 20 µs (median)."""

from __future__ import annotations

import statistics
import time

import pytest

from mxgate.core.policy import decide_recipient
from mxgate.core.snapshot import RoutingData
from tests.core.data import INTERNET, POLICY

MAILBOXES = 1_000_000
DOMAINS = [f"d{i}.example.com" for i in range(1000)]


@pytest.fixture(scope="module")
def million() -> RoutingData:
    data = RoutingData()
    data.domains = dict.fromkeys(DOMAINS)
    data.mailboxes = {f"user{i}@{DOMAINS[i % 1000]}": "maila" for i in range(MAILBOXES)}
    data.transports = {d: {"": "smtp:[10.0.0.2]"} for d in DOMAINS}
    data.forwards = {f"@{DOMAINS[i]}": ("someone@example.net",) for i in range(0, 1000, 2)}
    return data


def _median_us(data: RoutingData, rcpts: list[str]) -> float:
    for rcpt in rcpts[:200]:  # warm the caches as a running gateway has them
        decide_recipient(data, POLICY, rcpt, INTERNET)
    samples = []
    for rcpt in rcpts:
        start = time.perf_counter()
        decide_recipient(data, POLICY, rcpt, INTERNET)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def _mailbox(i: int) -> str:
    n = (i * 7919) % MAILBOXES
    return f"user{n}@{DOMAINS[n % 1000]}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "rcpts",
    [
        [f"<{_mailbox(i)}>" for i in range(20_000)],
        [f"<{_mailbox(i).replace('@', '+tag@')}>" for i in range(20_000)],
        [f"<nobody{i}@d1.example.com>" for i in range(20_000)],
        [f"<nobody{i}@d2.example.com>" for i in range(20_000)],
        [f"<someone{i}@gmail.com>" for i in range(20_000)],
    ],
    ids=["mailbox", "extension", "unknown", "catch-all", "relay-denied"],
)
def test_median_decision_under_20us(million: RoutingData, rcpts: list[str]) -> None:
    assert _median_us(million, rcpts) < 20.0
