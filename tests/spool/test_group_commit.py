"""Group commit: concurrent sessions share directory fsyncs, and nobody is
acknowledged before their own file and directory fsyncs have returned."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from mxgate.spool import Queue, Spool
from tests.spool.fakes import RecordingFS
from tests.spool.util import assert_clean, assert_intact, make_body, make_envelope, tree


async def receive(spool: Spool, fs: RecordingFS, index: int, delay: float = 0.0) -> str:
    await asyncio.sleep(delay)
    with spool.begin() as writer:
        writer.write(make_body(f"G{index}", 4096))
        await writer.commit(make_envelope(writer.queue_id))
        fs.note("acked", writer.queue_id)
        return writer.queue_id


def test_concurrent_commits_share_directory_fsyncs(tmp_path: Path) -> None:
    fs = RecordingFS()
    with Spool(tmp_path / "spool", fs=fs) as spool:

        async def burst() -> list[str]:
            return await asyncio.gather(*(receive(spool, fs, i) for i in range(64)))

        ids = asyncio.run(burst())
        assert len(set(ids)) == 64
        assert spool.committer.batches == 1
        assert fs.count("fsync_dir", spool.layout.queue_dir(Queue.INCOMING)) == 1
        assert fs.count("fsync_dir", spool.layout.data) == 1
        assert fs.count("fsync") == 2 * 64  # body and record of each message
        for index, queue_id in enumerate(ids):
            assert_intact(spool, queue_id, make_body(f"G{index}", 4096))


def test_staggered_sessions_still_share(tmp_path: Path) -> None:
    fs = RecordingFS()
    with Spool(tmp_path / "spool", fs=fs) as spool:

        async def stream() -> list[str]:
            return await asyncio.gather(
                *(receive(spool, fs, i, delay=(i % 20) * 0.001) for i in range(200))
            )

        asyncio.run(stream())
        dir_fsyncs = fs.count("fsync_dir")
        assert dir_fsyncs == 2 * spool.committer.batches
        assert dir_fsyncs < 200 / 4
        assert len(spool.scan(Queue.INCOMING)) == 200


def test_no_commit_returns_before_its_fsyncs(tmp_path: Path) -> None:
    fs = RecordingFS()
    with Spool(tmp_path / "spool", fs=fs) as spool:

        async def waves() -> None:
            await asyncio.gather(*(receive(spool, fs, i, delay=(i % 3) * 0.002) for i in range(30)))

        asyncio.run(waves())
        incoming = str(spool.layout.queue_dir(Queue.INCOMING))
        data = str(spool.layout.data)
        log = fs.log
        for queue_id in spool.scan(Queue.INCOMING):
            body = str(spool.layout.body(queue_id))
            target = str(spool.layout.record(Queue.INCOMING, queue_id))
            acked = log.index(("acked", queue_id))
            created = log.index(("create", body))
            body_synced = log.index(("fsync", body))
            renamed = log.index(("rename", target))
            assert created < body_synced < renamed < acked
            # the record file was fsynced (under its tmp/ name) before the rename
            record_syncs = [
                i
                for i, (op, path) in enumerate(log)
                if op == "fsync" and Path(path).name.startswith(queue_id + ".")
            ]
            assert record_syncs and record_syncs[0] < renamed
            assert any(log[i] == ("fsync_dir", data) for i in range(created, renamed)), (
                "data/ not synced between the body's creation and the commit point"
            )
            assert any(log[i] == ("fsync_dir", incoming) for i in range(renamed, acked)), (
                "acknowledged before incoming/ was synced"
            )


class GateFS(RecordingFS):
    """Holds every fsync of incoming/ until ``release`` is set."""

    def __init__(self, incoming: Path) -> None:
        super().__init__()
        self.incoming = incoming
        self.reached = threading.Event()
        self.release = threading.Event()

    def before(self, op: str, path: Path | None) -> None:
        if op == "fsync_dir" and path == self.incoming:
            self.reached.set()
            assert self.release.wait(10)


def test_commits_wait_for_the_directory_fsync_and_the_loop_keeps_running(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"
    fs = GateFS(root / "incoming")
    with Spool(root, fs=fs) as spool:

        async def scenario() -> None:
            first = [asyncio.create_task(receive(spool, fs, i)) for i in range(10)]
            await asyncio.to_thread(fs.reached.wait, 10)
            # The batch is renamed into incoming/ but the directory is not synced yet.
            assert len(spool.scan(Queue.INCOMING)) == 10
            ticks = 0
            for _ in range(5):
                await asyncio.sleep(0.01)  # the event loop is not blocked by the fsync
                ticks += 1
            assert ticks == 5
            assert not any(task.done() for task in first)
            late = asyncio.create_task(receive(spool, fs, 99))  # joins the next batch
            await asyncio.sleep(0.01)
            assert not late.done()
            fs.release.set()
            await asyncio.gather(*first, late)

        asyncio.run(scenario())
        assert spool.committer.batches == 2
        assert len(spool.scan(Queue.INCOMING)) == 11


def test_a_commit_cancelled_before_its_batch_leaves_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as spool:

        async def scenario() -> None:
            writer = spool.begin()
            writer.write(b"never acknowledged\r\n")
            task = asyncio.create_task(writer.commit(make_envelope(writer.queue_id)))
            await asyncio.sleep(0)  # the commit is queued, its batch not started
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)

        asyncio.run(scenario())
        assert tree(spool.layout.root) == {}


def test_the_spool_serves_one_event_loop_after_another(tmp_path: Path) -> None:
    fs = RecordingFS()
    with Spool(tmp_path / "spool", fs=fs) as spool:
        for round_ in range(3):
            asyncio.run(receive(spool, fs, round_))
        assert len(spool.scan(Queue.INCOMING)) == 3
        assert_clean(spool)


class ThreadsFS(RecordingFS):
    """Notes which thread made each create and fsync."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: dict[str, set[str]] = {"create": set(), "fsync": set()}

    def before(self, op: str, path: Path | None) -> None:
        if op in self.threads:
            with self.lock:
                self.threads[op].add(threading.current_thread().name)


def test_one_thread_creates_and_a_few_fsync(tmp_path: Path) -> None:
    fs = ThreadsFS()
    with Spool(tmp_path / "spool", fs=fs, fsync_threads=3) as spool:

        async def burst() -> list[str]:
            return await asyncio.gather(*(receive(spool, fs, i) for i in range(40)))

        ids = asyncio.run(burst())
        assert spool.committer.batches == 1
        assert fs.count("fsync") == 2 * 40
        # Files are created by the commit thread alone (creates in one directory
        # serialise in the kernel; more threads would only contend there).
        assert len(fs.threads["create"]) == 1
        assert fs.threads["create"] <= fs.threads["fsync"]
        assert 1 < len(fs.threads["fsync"]) <= 3
        for index, queue_id in enumerate(ids):
            assert_intact(spool, queue_id, make_body(f"G{index}", 4096))
