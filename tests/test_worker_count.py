"""How many SMTP workers ``mxgate serve`` starts when ``workers`` is 0."""

from __future__ import annotations

import os

import pytest

from mxgate import supervisor


@pytest.mark.parametrize(
    ("cores", "workers"),
    [(1, 1), (2, 1), (3, 2), (8, 7)],
)
def test_one_worker_per_core_less_the_queue_managers_and_never_none(
    monkeypatch: pytest.MonkeyPatch, cores: int, workers: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert supervisor.default_worker_count() == workers
