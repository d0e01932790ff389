"""Fault injection through the fsio seam: errors and crashes at every step.

The invariant checked after every fault: a message whose commit returned is in
the spool, whole; any other message is either entirely gone or entirely there
(at-least-once), and nothing torn, half-written or orphaned is left to deliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from dataclasses import replace
from pathlib import Path

import pytest

from mxgate.core.envelope import RecipientState
from mxgate.spool import Queue, Spool, SpoolError, SpoolFullError
from tests.spool.fakes import CrashFS, FailingFS, RecordingFS, SimulatedCrash
from tests.spool.util import (
    assert_clean,
    assert_intact,
    make_body,
    make_envelope,
    store,
    tree,
)

BODY_SIZE = 150_000  # more than two write buffers: the body is flushed while streaming


def steps_of_one_message(tmp_path: Path) -> int:
    fs = RecordingFS()
    with Spool(tmp_path / "dry-run", fs=fs) as spool:
        fs.log.clear()
        store(spool, make_body("DRYRUN", BODY_SIZE))
        return len(fs.log)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC, errno.EDQUOT])
def test_error_at_every_step_of_receiving(tmp_path: Path, code: int) -> None:
    steps = steps_of_one_message(tmp_path)
    assert steps >= 12
    outcomes = set()
    for step in range(steps + 1):
        fs = FailingFS(code=code)
        with Spool(tmp_path / f"s{step}", fs=fs) as spool:
            fs.steps, fs.fail_at = 0, step
            body = make_body(f"STEP{step}", BODY_SIZE)
            try:
                queue_id = store(spool, body)
            except SpoolError as err:
                assert fs.failed
                assert isinstance(err, SpoolFullError) == (code != errno.EIO)
                assert tree(spool.layout.root) == {}, f"leftovers after a failure at {step}"
                outcomes.add("refused")
            else:
                # Only a failing close() after the fsync may go unnoticed.
                assert_intact(spool, queue_id, body)
                outcomes.add("stored")
            fs.fail_at = None
            assert spool.recover().corrupt == []
            assert_clean(spool)
    assert outcomes == {"refused", "stored"}


def test_disk_full_while_streaming(tmp_path: Path) -> None:
    fs = FailingFS(code=errno.ENOSPC, matches=lambda op, _path: op == "write")
    with Spool(tmp_path / "spool", fs=fs) as spool:
        writer = spool.begin()
        with pytest.raises(SpoolFullError):
            for _ in range(100):
                writer.write(b"x" * 4096)
        with pytest.raises(SpoolError):
            writer.write(b"more")
        assert tree(spool.layout.root) == {}


def crash_and_recover(root: Path, fs: CrashFS, spool: Spool, power_loss: bool) -> Spool:
    """Kill the spool (no cleanup runs), optionally lose unsynced data, restart."""
    with contextlib.suppress(SimulatedCrash):
        spool.close()
    if power_loss:
        fs.power_loss()
    else:
        fs.release()
    restarted = Spool(root)
    report = restarted.recover(verify_bodies=True)
    assert report.corrupt == [], "a torn message survived"
    assert_clean(restarted)
    return restarted


@pytest.mark.parametrize("power_loss", [False, True], ids=["kill", "power-loss"])
def test_crash_at_every_step_of_a_commit(tmp_path: Path, power_loss: bool) -> None:
    steps = steps_of_one_message(tmp_path)
    kept = set()
    for step in range(steps + 1):
        root = tmp_path / f"s{step}"
        fs = CrashFS()
        spool = Spool(root, fs=fs)
        fs.steps, fs.crash_at = 0, step
        body = make_body(f"CRASH{step}", BODY_SIZE)
        acked = None
        with contextlib.suppress(SimulatedCrash):
            acked = store(spool, body)
        with crash_and_recover(root, fs, spool, power_loss) as restarted:
            present = restarted.scan(Queue.INCOMING)
            if acked is not None:
                assert present == [acked]
            for queue_id in present:
                assert_intact(restarted, queue_id, body)
            kept.add(bool(present))
    assert kept == {False, True}


@pytest.mark.parametrize("power_loss", [False, True], ids=["kill", "power-loss"])
def test_crash_at_every_step_of_a_group_commit(tmp_path: Path, power_loss: bool) -> None:
    messages = 3

    async def receive(spool: Spool, index: int, acked: dict[str, bytes]) -> None:
        body = make_body(f"GROUP{index}", 5000 * (index + 1))
        with contextlib.suppress(SimulatedCrash), spool.begin() as writer:
            writer.write(body)
            await writer.commit(make_envelope(writer.queue_id))
            acked[writer.queue_id] = body

    async def burst(spool: Spool, acked: dict[str, bytes]) -> None:
        await asyncio.gather(*(receive(spool, i, acked) for i in range(messages)))

    dry = RecordingFS()
    with Spool(tmp_path / "dry-run", fs=dry) as spool:
        dry.log.clear()
        asyncio.run(burst(spool, {}))
        steps = len(dry.log)
        assert spool.committer.batches == 1

    counts = set()
    for step in range(steps + 1):
        root = tmp_path / f"s{step}"
        fs = CrashFS()
        spool = Spool(root, fs=fs)
        fs.steps, fs.crash_at = 0, step
        acked: dict[str, bytes] = {}
        asyncio.run(burst(spool, acked))
        if step == steps:
            assert len(acked) == messages
        counts.add(len(acked))
        with crash_and_recover(root, fs, spool, power_loss) as restarted:
            present = set(restarted.scan(Queue.INCOMING))
            assert set(acked) <= present
            for queue_id in present:
                index = int(restarted.load(queue_id).body_size / 5000) - 1
                assert_intact(restarted, queue_id, make_body(f"GROUP{index}", 5000 * (index + 1)))
    assert counts == {0, messages}  # one batch: all acknowledged together, or none


@pytest.mark.parametrize("power_loss", [False, True], ids=["kill", "power-loss"])
def test_crash_at_every_step_of_an_update(tmp_path: Path, power_loss: bool) -> None:
    seen = set()
    for step in range(8):
        root = tmp_path / f"s{step}"
        with Spool(root) as setup:
            queue_id = store(setup, make_body("UPD", 2000))
            old = setup.claim(queue_id)
        assert old is not None
        rcpt = replace(old.envelope.recipients[0], state=RecipientState.DELIVERED, attempts=1)
        new = old.envelope.with_recipient(rcpt)
        fs = CrashFS()
        spool = Spool(root, fs=fs)
        fs.steps, fs.crash_at = 0, step
        done = False
        with contextlib.suppress(SimulatedCrash):
            spool.update(new, Queue.ACTIVE)
            done = True
        with crash_and_recover(root, fs, spool, power_loss) as restarted:
            envelope = restarted.load(queue_id).envelope  # back in incoming/, whole
            assert envelope == new if done else envelope in (old.envelope, new)
            seen.add(envelope == new)
    assert seen == {False, True}


async def commit_many(spool: Spool, count: int) -> dict[str, BaseException | None]:
    results: dict[str, BaseException | None] = {}

    async def one(index: int) -> None:
        with spool.begin() as writer:
            writer.write(make_body(f"M{index}", 3000))
            try:
                await writer.commit(make_envelope(writer.queue_id))
                results[writer.queue_id] = None
            except SpoolError as err:
                results[writer.queue_id] = err

    await asyncio.gather(*(one(i) for i in range(count)))
    return results


def test_a_failed_fsync_fails_only_its_own_message(tmp_path: Path) -> None:
    victim: list[str] = []

    def matches(op: str, path: Path | None) -> bool:
        return op == "fsync" and path is not None and path.name in victim

    fs = FailingFS(code=errno.ENOSPC, matches=matches)
    with Spool(tmp_path / "spool", fs=fs) as spool:
        victim.append(spool.new_queue_id())  # not used by a writer: nothing fails yet

        async def run() -> dict[str, BaseException | None]:
            with spool.begin() as target:
                victim.append(target.queue_id)
                target.write(b"doomed\r\n")
                task = asyncio.ensure_future(target.commit(make_envelope(target.queue_id)))
                others = await commit_many(spool, 5)
                with pytest.raises(SpoolFullError):
                    await task
            return others

        others = asyncio.run(run())
        assert spool.committer.batches == 1
        assert all(err is None for err in others.values())
        assert set(spool.scan(Queue.INCOMING)) == set(others)
        assert_clean(spool)


def test_a_failed_directory_fsync_fails_the_whole_batch(tmp_path: Path) -> None:
    incoming = tmp_path / "spool" / "incoming"
    fs = FailingFS(code=errno.EIO, matches=lambda op, path: op == "fsync_dir" and path == incoming)
    with Spool(tmp_path / "spool", fs=fs) as spool:
        results = asyncio.run(commit_many(spool, 8))
        assert len(results) == 8
        assert all(isinstance(err, SpoolError) for err in results.values())
        assert tree(spool.layout.root) == {}
