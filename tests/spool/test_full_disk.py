"""A spool on a file system that is really full (a 256 KiB tmpfs mounted for the
test): commits fail with SpoolFullError (the session's 452 4.3.1), nothing of
a failed message can be delivered later, and commits work again once there is
room. Needs root (mount); skips without it unless MXGATE_TEST_REQUIRE_TOOLS=1."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxgate.spool import Queue, Spool, SpoolFullError
from mxgate.spool.journal import JournalWriter
from tests.spool.util import make_body, receive


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    problem = None
    if os.geteuid() != 0:
        problem = "needs root to mount a small tmpfs"
    else:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mountpoint)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            problem = f"mount failed: {done.stderr.strip()}"
    if problem is not None:
        if os.environ.get("MXGATE_TEST_REQUIRE_TOOLS") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_full_disk_refuses_commits_and_leaves_nothing_deliverable(small_fs: Path) -> None:
    root = small_fs / "spool"
    ticks: list[tuple[str, int, bool]] = []
    accepted: list[str] = []
    refused = 0
    with Spool(root, journal=True, notify=lambda *t: ticks.append(t)) as spool:

        async def fill() -> None:
            nonlocal refused
            # Journal messages (small) and queue files (over the write buffer) both.
            for n in range(200):
                body = make_body(f"m{n}", 20_000 if n % 2 else 70_000)
                try:
                    accepted.append(await receive(spool, body))
                except SpoolFullError:
                    refused += 1

        asyncio.run(fill())
    assert accepted, "nothing fitted at all"
    assert refused, "the file system never filled up"
    # What the master and recovery see is exactly what was acknowledged.
    with Spool(root) as spool:
        # A restart on the full disk works: nothing is written out to start.
        spool.recover()
        spool.adopt_journal()
        queued = set(spool.scan(Queue.INCOMING))
        assert queued == set(accepted)
        for queue_id in accepted:
            message = spool.claim(queue_id)
            assert message is not None
            with spool.open_body(queue_id) as body:
                assert len(body.read()) == message.body_size
        # Room again: delivered messages go, and commits succeed.
        for queue_id in accepted:
            spool.remove(queue_id, Queue.ACTIVE)
    with Spool(root, journal=True) as spool:
        assert asyncio.run(receive(spool, make_body("again", 3000)))


def test_no_spare_segment_takes_the_last_free_space(small_fs: Path) -> None:
    # 256 KiB in all; a filler leaves about 100 KiB. A 64 KiB spare would fit,
    # but zero-filling it while commits append would leave them no room.
    (small_fs / "filler").write_bytes(bytes(150 * 1024))
    directory = small_fs / "journal"
    directory.mkdir()
    names = iter(f"SEG{n}" for n in range(10))
    writer = JournalWriter(directory, lambda: next(names), limit=64 * 1024)
    writer.append(b"x" * 1000)  # opens the first segment, which asks for a spare
    with writer._spare_lock:
        preparing = writer._preparing
    if preparing is not None:
        preparing.join()
    assert writer._spare is None
    assert [p.name for p in directory.iterdir() if p.name.startswith(".spare-")] == []
    writer.append(b"y" * 30_000)  # the commits keep the room
    writer.discard_spare()
    writer.abandon()
