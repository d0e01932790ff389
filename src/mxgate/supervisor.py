"""The master process: starts the SMTP workers, restarts them, stops them in order.

Owns the worker processes of ``mxgate serve``: each is ``mxgate worker`` with
the same settings, listening on the same ports with SO_REUSEPORT. A worker
that dies is restarted (after a pause, so a crash loop cannot spin). SIGHUP
starts a fresh set of workers, which read the settings anew, and then asks the
old set to finish their sessions and exit: a reload never refuses a
connection. SIGTERM and SIGINT stop every worker gracefully, then the master.

Never speaks SMTP and never reads the settings: it runs the command it is given.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence

RESTART_PAUSE = 1.0


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        count: int,
        env: dict[str, str],
        log: Callable[[str], None],
        check_reload: Callable[[], str | None] | None = None,
    ) -> None:
        self.command = list(command)
        self.count = count
        self.env = env
        self.log = log
        self.check_reload = check_reload
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self._wake = asyncio.Event()

    def _spawn(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.command, env=self.env, stdin=subprocess.DEVNULL)
        self.workers[proc.pid] = proc
        return proc

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reload = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        for _ in range(self.count):
            self._spawn()
        self.log(f"started {self.count} worker(s): {', '.join(map(str, self.workers))}")
        while not stop.is_set():
            waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(reload.wait())]
            await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            for task in waiters:
                task.cancel()
            if reload.is_set() and not stop.is_set():
                reload.clear()
                await self._reload()
            if not stop.is_set():
                await self._reap_and_restart()
        await self._stop_all()
        return 0

    async def _reap_and_restart(self) -> None:
        for pid, proc in list(self.workers.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.workers[pid]
            self.log(f"warning: worker {pid} exited with status {code}; restarting it")
            await asyncio.sleep(RESTART_PAUSE)
            self._spawn()

    async def _reload(self) -> None:
        if self.check_reload is not None:
            problem = self.check_reload()
            if problem is not None:
                self.log(f"warning: reload refused, keeping the running workers: {problem}")
                return
        old = dict(self.workers)
        self.workers = {}
        for _ in range(self.count):
            self._spawn()
        # The new workers bind beside the old ones (SO_REUSEPORT); give them a
        # moment to listen before the old ones stop accepting.
        await asyncio.sleep(1.0)
        self.log(f"reload: new worker(s) {', '.join(map(str, self.workers))}")
        await self._terminate(old)

    async def _terminate(self, procs: dict[int, subprocess.Popen[bytes]]) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            while proc.poll() is None:
                await asyncio.sleep(0.05)

    async def _stop_all(self) -> None:
        self.log("stopping: waiting for the workers to finish their sessions")
        await self._terminate(self.workers)
        self.workers = {}


def worker_command(config_file: str | None) -> list[str]:
    command = [sys.executable, "-m", "mxgate", "worker"]
    if config_file:
        command += ["--config", config_file]
    return command


def default_worker_count() -> int:
    return len(os.sched_getaffinity(0)) or 1
