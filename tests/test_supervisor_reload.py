"""A reload (SIGHUP) gives the master its new settings only once the new
workers listen: one refused or failed changes nothing anywhere.

The workers here are small real processes that speak the master channel's
first line (``READY``), or exit before it while a marker file exists.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from mxgate.supervisor import Supervisor

WORKER = """
import os, socket, sys
if os.path.exists(sys.argv[1]):
    sys.exit(3)  # fails before it listens
channel = socket.socket(fileno=int(sys.argv[sys.argv.index("--master-fd") + 1]))
channel.sendall(b"READY\\n")
channel.recv(1)  # until the master goes; SIGUSR2 and SIGTERM end it too
"""


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


def test_new_settings_reach_the_master_only_with_new_workers(tmp_path: Path) -> None:
    marker = tmp_path / "fail"
    lines: list[str] = []
    applied: list[int] = []
    refuse: list[str] = []

    def said(text: str) -> Callable[[], bool]:
        return lambda: any(text in line for line in lines)

    async def scenario() -> int:
        supervisor = Supervisor(
            [sys.executable, "-c", WORKER, str(marker)],
            1,
            dict(os.environ),
            lines.append,
            check_reload=lambda: refuse[0] if refuse else None,
        )
        supervisor.on_settings = lambda: applied.append(1)
        try:
            running = asyncio.create_task(supervisor.run())
            await until(lambda: supervisor.ready_workers() == 1)
            refuse.append("a bad file")
            os.kill(os.getpid(), signal.SIGHUP)
            await until(said("reload refused, keeping the running workers: a bad file"))
            refuse.clear()
            marker.touch()
            os.kill(os.getpid(), signal.SIGHUP)
            await until(said("reload failed, keeping the running workers"))
            assert applied == []
            marker.unlink()
            os.kill(os.getpid(), signal.SIGHUP)
            await until(said("reload: new worker(s)"))
            assert applied == [1]
            os.kill(os.getpid(), signal.SIGTERM)
            return await asyncio.wait_for(running, 30)
        finally:
            supervisor.close()

    assert asyncio.run(scenario()) == 0
