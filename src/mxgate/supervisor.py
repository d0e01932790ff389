"""The master process: starts the SMTP workers, restarts them, stops them in order.

Owns the worker processes of ``mxgate serve``: each is ``mxgate worker`` with
the same settings, listening on the same ports with SO_REUSEPORT. A worker
that dies is restarted (after a pause, so a crash loop cannot spin). SIGHUP
starts a fresh set of workers, which read the settings anew, waits until every
one of them listens, and only then asks the old set to finish their sessions
and exit: a reload never refuses a connection, however long a new worker
takes to start (a slow or hung database, for one). The old set gets SIGUSR2:
stop accepting and let each session run to its QUIT (within the grace), since
the new set serves by then. When the new set fails to start, the old set keeps
serving. SIGTERM and SIGINT stop every worker
gracefully, then the master.

Each worker gets one end of a socket pair as ``--master-fd N``: it writes
``READY`` there once it listens, and it sees end-of-file there when the master
is gone (kill -9), so that no orphaned worker keeps accepting beside the
workers of a restarted master (Postfix's master status pipe, in one socket).
Then it writes journal ticks there, ``J <segment> <offset> <sealed>`` lines
(see spool/journal.py), which go to ``on_journal``; when a worker exits, its
segments are handed over whole (``on_worker_gone``). About once a second it
also writes its SMTP counts, an ``M <json>`` line (metrics/counts.py), which
goes to ``on_counts``.

With ``--clients FD:ROW:ROWS`` a worker gets a row of the connection counts
all workers share (client_counts.py) for the per-client cap; the row is
cleared when the worker has exited.

Workers are started from a thread of the supervisor's own, made with it:
they get the CPU priority the master had then, whatever priority the master's
loop takes afterwards (the queue manager lowers its own, ``delivery_nice``;
on Linux the nice value belongs to a thread and what it starts).

Under systemd (``Type=notify``) it says when serve is ready, reloading and
stopping, and keeps the unit's watchdog fed while its loop turns (sdnotify.py).

Never speaks SMTP and never reads the settings: it runs the command it is given.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from mxgate import sdnotify
from mxgate.client_counts import ClientTable
from mxgate.cpus import available_cpus

RESTART_PAUSE = 1.0
# New workers that do not listen by then count as failed: at start, serve exits;
# on a reload, the running workers stay.
READY_TIMEOUT = 300.0
READY = b"READY\n"
CHANNEL_READ = 65536  # bytes per read of a worker's channel


class Supervisor:
    def __init__(
        self,
        command: Sequence[str],
        count: int,
        env: dict[str, str],
        log: Callable[[str], None],
        check_reload: Callable[[], str | None] | None = None,
        on_journal: Callable[[str, int, bool], None] | None = None,
        on_worker_gone: Callable[[list[str]], None] | None = None,
        listen_fds: Callable[[int], list[int]] | None = None,
        close_listeners: Callable[[], None] | None = None,
        clients: ClientTable | None = None,
    ) -> None:
        """``listen_fds(slot)``: the listening sockets worker slot ``slot``
        inherits (sockets.py); None: each worker binds its own.
        ``close_listeners()``: close ours when stopping, so that new clients
        are refused at once rather than queued for workers that are leaving.
        ``clients``: the connection counts the workers share (a row each)."""
        self.listen_fds = listen_fds
        self.close_listeners = close_listeners
        self.clients = clients
        self._rows: dict[int, int] = {}  # worker pid -> its row of ``clients``
        self._slot: dict[int, int] = {}  # worker pid -> slot
        self.on_journal = on_journal
        self.on_worker_gone = on_worker_gone
        self.on_counts: Callable[[bytes], object] | None = None
        # Called on SIGHUP before the new workers start (the master reopens its log).
        self.on_reload: Callable[[], None] | None = None
        # Called on SIGHUP once the new workers listen (the master takes up its
        # own settings): a reload refused or failed changes nothing anywhere.
        self.on_settings: Callable[[], None] | None = None
        self._segments: dict[int, set[str]] = {}  # journal segments per worker
        self.command = list(command)
        self.count = count
        self.env = env
        self.log = log
        self.check_reload = check_reload
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        # Replaced by a reload, finishing their sessions: reaped, not restarted.
        self.retiring: dict[int, subprocess.Popen[bytes]] = {}
        # Resolved True when the worker says it listens, False if it goes first.
        self._ready: dict[int, asyncio.Future[bool]] = {}
        self._channels: dict[int, socket.socket] = {}
        self._buffers: dict[int, tuple[bytearray, asyncio.Future[bool]]] = {}
        # One thread, made now (an executor makes its thread at the first
        # task): it keeps the priority of the thread that made the supervisor.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mxgate-spawn")
        self._spawner.submit(int).result()

    def close(self) -> None:
        """Let the spawning thread go (the workers are stopped by ``run``)."""
        self._spawner.shutdown(wait=True)

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        ours, theirs = socket.socketpair()  # neither end is inherited by default
        listening = self.listen_fds(slot) if self.listen_fds is not None else []
        table = self.clients
        row = table.take() if table is not None else None
        if table is not None and row is None:
            self.log("warning: no row left in the shared client counts: this worker counts alone")
        shared: list[str] = []  # the worker's option, and the descriptor it inherits
        inherit: list[int] = []
        if table is not None and row is not None:
            shared = ["--clients", f"{table.fd}:{row}:{table.rows}"]
            inherit = [table.fd]
        try:
            proc = self._spawner.submit(
                subprocess.Popen[bytes],
                [
                    *self.command,
                    "--master-fd",
                    str(theirs.fileno()),
                    *(arg for fd in listening for arg in ("--listen-fd", str(fd))),
                    *shared,
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *listening, *inherit),
            ).result()
        except BaseException:
            ours.close()
            if table is not None and row is not None:
                table.give_back(row)
            raise
        finally:
            theirs.close()
        if row is not None:
            self._rows[proc.pid] = row
        self.workers[proc.pid] = proc
        self._slot[proc.pid] = slot
        self._channels[proc.pid] = ours
        self._segments[proc.pid] = set()
        self._ready[proc.pid] = self._watch_channel(proc.pid, ours)
        return proc

    def _watch_channel(self, pid: int, channel: socket.socket) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[bool] = loop.create_future()
        channel.setblocking(False)
        received = bytearray()

        def readable() -> None:
            data, eof = self._drain(channel)
            received.extend(data)
            self._lines(pid, received, ready)
            if eof:
                loop.remove_reader(channel)
                if not ready.done():
                    ready.set_result(False)

        loop.add_reader(channel, readable)
        self._buffers[pid] = (received, ready)
        return ready

    @staticmethod
    def _drain(channel: socket.socket) -> tuple[bytes, bool]:
        """What the worker wrote so far, and whether it reached end of file.

        A read shorter than asked took all there was: reading again would only
        meet EAGAIN, an exception raised and caught per journal tick (2% of
        the queue manager's CPU at one session). Anything that arrives later,
        end of file included, makes the channel readable again.
        """
        chunks: list[bytes] = []
        while True:
            try:
                data = channel.recv(CHANNEL_READ)
            except BlockingIOError:
                return b"".join(chunks), False
            except OSError:
                data = b""
            if not data:
                return b"".join(chunks), True
            chunks.append(data)
            if len(data) < CHANNEL_READ:
                return b"".join(chunks), False

    def _lines(self, pid: int, received: bytearray, ready: asyncio.Future[bool]) -> None:
        while True:
            end = received.find(b"\n")
            if end < 0:
                return
            line = bytes(received[:end])
            del received[: end + 1]
            if line == READY.strip():
                if not ready.done():
                    ready.set_result(True)
            elif line.startswith(b"M ") and self.on_counts is not None:
                self.on_counts(line[2:])
            elif line.startswith(b"J ") and self.on_journal is not None:
                parts = line.split()
                if len(parts) == 4 and parts[2].isdigit():
                    name = parts[1].decode("ascii", "replace")
                    sealed = parts[3] == b"1"
                    segments = self._segments.setdefault(pid, set())
                    if sealed:
                        segments.discard(name)
                    else:
                        segments.add(name)
                    self.on_journal(name, int(parts[2]), sealed)

    def ready_workers(self) -> int:
        """Workers (reload leftovers aside) that said they listen."""
        return sum(
            1
            for pid in self.workers
            if (ready := self._ready.get(pid)) is not None
            and ready.done()
            and not ready.cancelled()
            and ready.result()
        )

    def _forget(self, pid: int) -> None:
        """Drop what we keep for an exited worker (its channel, its readiness),
        after reading the last of its ticks."""
        channel = self._channels.pop(pid, None)
        if channel is not None:
            asyncio.get_running_loop().remove_reader(channel)
            buffered = self._buffers.get(pid)
            if buffered is not None:
                received, ready = buffered
                received.extend(self._drain(channel)[0])
                self._lines(pid, received, ready)
            channel.close()
        self._buffers.pop(pid, None)
        segments = self._segments.pop(pid, set())
        if segments and self.on_worker_gone is not None:
            self.on_worker_gone(sorted(segments))
        self._slot.pop(pid, None)
        row = self._rows.pop(pid, None)
        if row is not None and self.clients is not None:
            self.clients.give_back(row)  # its connections ended with it
        readiness = self._ready.pop(pid, None)
        if readiness is not None and not readiness.done():
            readiness.set_result(False)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        reload = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        for slot in range(self.count):
            self._spawn(slot)
        problem = await self._wait_ready(self.workers, stop)
        if problem is not None and not stop.is_set():
            # Nothing serves yet: fail now rather than restart them forever.
            self.log(f"fatal: the workers did not start: {problem}")
            sdnotify.notify(f"STATUS=the SMTP workers did not start: {problem}")
            await self._terminate(self.workers)
            return 1
        self.log(f"started {self.count} worker(s): {', '.join(map(str, self.workers))}")
        self._ready_status()
        interval = sdnotify.watchdog_interval()
        # A task of its own: a reload waiting minutes for its workers must not
        # starve the watchdog, which is to catch a loop that stopped turning.
        feeding = asyncio.create_task(_feed_watchdog(interval)) if interval else None
        try:
            while not stop.is_set():
                waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(reload.wait())]
                await asyncio.wait(waiters, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                for task in waiters:
                    task.cancel()
                if reload.is_set() and not stop.is_set():
                    reload.clear()
                    await self._reload(stop)
                if not stop.is_set():
                    await self._reap_and_restart()
            await self._stop_all()
        finally:
            if feeding is not None:
                feeding.cancel()
        return 0

    async def _reap_and_restart(self) -> None:
        for pid, proc in list(self.retiring.items()):
            if proc.poll() is not None:
                del self.retiring[pid]
                self._forget(pid)
        for pid, proc in list(self.workers.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.workers[pid]
            slot = self._slot.get(pid, 0)
            self._forget(pid)
            self.log(f"warning: worker {pid} exited with status {code}; restarting it")
            await asyncio.sleep(RESTART_PAUSE)
            self._spawn(slot)

    def _ready_status(self) -> None:
        sdnotify.notify("READY=1", f"STATUS={self.ready_workers()} SMTP worker(s) listening")

    async def _reload(self, stop: asyncio.Event) -> None:
        sdnotify.reloading()
        if self.on_reload is not None:
            self.on_reload()
        try:
            await self._replace_workers(stop)
        finally:
            self._ready_status()

    async def _replace_workers(self, stop: asyncio.Event) -> None:
        if self.check_reload is not None:
            problem = self.check_reload()
            if problem is not None:
                self.log(f"warning: reload refused, keeping the running workers: {problem}")
                return
        old = self.workers
        self.workers = {}
        for slot in range(self.count):
            self._spawn(slot)
        new = self.workers
        # The new workers accept beside the old ones (each slot's socket is
        # shared with its predecessor); the old ones stop accepting only once
        # every new one listens.
        problem = await self._wait_ready(new, stop)
        if problem is not None:
            self.log(f"warning: reload failed, keeping the running workers: {problem}")
            self.workers = old
            await self._terminate(new)
            return
        self.log(f"reload: new worker(s) {', '.join(map(str, new))}")
        if self.on_settings is not None:
            self.on_settings()  # only now: a reload that failed changes nothing
        # Not awaited: their sessions may take the whole grace, and meanwhile
        # this loop must go on restarting and reloading.
        for pid, proc in old.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR2)
            self.retiring[pid] = proc

    async def _wait_ready(
        self, procs: dict[int, subprocess.Popen[bytes]], stop: asyncio.Event
    ) -> str | None:
        """None once every worker of ``procs`` listens; else what went wrong."""
        pending: dict[asyncio.Future[bool], int] = {self._ready[pid]: pid for pid in procs}
        stopping: asyncio.Future[bool] = asyncio.ensure_future(stop.wait())
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        try:
            while pending:
                timeout = deadline - asyncio.get_running_loop().time()
                done, _ = await asyncio.wait(
                    {*pending, stopping}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if stopping in done:
                    return "stopped by a signal"
                if not done:
                    return f"worker(s) {', '.join(map(str, pending.values()))} not listening"
                for ready in done:
                    pid = pending.pop(ready)
                    if not ready.result():
                        return f"worker {pid} exited before it listened"
            return None
        finally:
            stopping.cancel()

    async def _terminate(self, procs: dict[int, subprocess.Popen[bytes]]) -> None:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for pid, proc in procs.items():
            while proc.poll() is None:
                await asyncio.sleep(0.05)
            self._forget(pid)

    async def _stop_all(self) -> None:
        self.log("stopping: waiting for the workers to finish their sessions")
        sdnotify.notify("STOPPING=1", "STATUS=stopping: the workers finish their sessions")
        if self.close_listeners is not None:
            self.close_listeners()
        await self._terminate({**self.retiring, **self.workers})
        self.workers, self.retiring = {}, {}


async def _feed_watchdog(interval: float) -> None:
    """``WATCHDOG=1`` every ``interval`` seconds for as long as the loop turns."""
    while True:
        sdnotify.notify("WATCHDOG=1")
        await asyncio.sleep(interval)


def worker_command(config_file: str | None) -> list[str]:
    command = [sys.executable, "-m", "mxgate", "worker"]
    if config_file:
        command += ["--config", config_file]
    return command


def default_worker_count() -> int:
    """One SMTP worker per core, less one for the queue manager; at least one.
    Cores are those this process may use (its affinity and a container's CPU
    quota: ``cpus.py``).

    The master (queue manager and delivery) uses about a quarter of mxgate's
    CPU at full load, and every worker adds a sync helper and commits in its
    own batches (smaller ones, so more fdatasyncs): on 2 cores one worker took
    8-15% more messages per second than two at 10 sessions (bench/,
    smtp-source, 1 and 5 recipients) and as many or more at 1 and 50. Set
    ``workers`` higher where the SMTP side alone needs more than that (many
    TLS handshakes, say): the workers share the listening sockets either way.
    """
    return max(1, available_cpus() - 1)
