"""Removing delivered messages in the helper process, and on threads once it is gone."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from pathlib import Path

import pytest

from mxgate.core.envelope import Recipient
from mxgate.delivery.unlinker import Unlinker
from mxgate.spool import MessageNotFoundError, Spool
from tests.delivery.peers import ScriptedPeer
from tests.delivery.test_scheduler import Clock, enqueue, manager, settle, snapshot


def one(address: str) -> Recipient:
    return Recipient(address, address)


def test_helper_removes_record_and_body_and_says_which_were_missing(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool") as spool:
        present = enqueue(spool, "s@example.org", [one("a@example.com")])
        assert spool.claim(present) is not None
        answers: dict[str, Exception | None] = {}
        lost: list[str] = []

        async def run() -> None:
            unlinker = Unlinker(spool.layout.root, answers.__setitem__, lost.extend)
            await unlinker.start()
            unlinker.send([present, "0000000000000000GONE"])
            await unlinker.close()

        asyncio.run(run())
        assert answers[present] is None and not lost
        assert isinstance(answers["0000000000000000GONE"], MessageNotFoundError)
        assert spool.locate(present) is None
        assert not (spool.layout.data / present).exists()


def test_a_dead_helper_hands_its_work_to_threads(tmp_path: Path) -> None:
    async def run() -> None:
        async with ScriptedPeer() as peer:
            with Spool(tmp_path / "spool") as spool:
                log = io.StringIO()
                qm = manager(spool, lambda: snapshot(peer.port), Clock(1e9 + 5), log)
                first = enqueue(
                    spool, "s@example.org", [Recipient("a@example.com", "a@example.com")]
                )
                await settle(qm, spool)
                assert f"{first}: removed" in log.getvalue()

                stop = asyncio.Event()
                runner = asyncio.create_task(qm.run(stop))
                for _ in range(100):
                    await asyncio.sleep(0.01)
                    if qm.remover_pid is not None:
                        break
                pid = qm.remover_pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                second = enqueue(
                    spool, "s@example.org", [Recipient("b@example.com", "b@example.com")]
                )
                for _ in range(200):
                    await asyncio.sleep(0.02)
                    if f"{second}: removed" in log.getvalue():
                        break
                stop.set()
                await runner
                assert f"{second}: removed" in log.getvalue()
                assert spool.locate(second) is None
                assert not list(spool.list_all())
            assert len(peer.messages) == 2

    asyncio.run(run())


@pytest.mark.parametrize("line", [b"../../etc/passwd\n", b"\n"])
def test_helper_refuses_what_is_not_a_queue_id(tmp_path: Path, line: bytes) -> None:
    async def run() -> list[bytes]:
        proc = await asyncio.create_subprocess_exec(
            *Unlinker.command(str(tmp_path)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(line)
        return out.splitlines()

    [answer] = asyncio.run(run())
    assert b" ! not a queue id" in answer
