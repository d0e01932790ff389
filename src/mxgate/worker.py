"""One SMTP worker process: snapshot holder, spool writer and listener together.

Owns the life of a worker: start the routing snapshot (database, else the
disk copy, else none: then RCPT answers 451), open the spool, listen, and on
SIGTERM stop accepting, let sessions finish their transaction
(``shutdown_grace``; a session between transactions hears 421 at once), flush
the snapshot cache and exit. SIGUSR2 (the supervisor's reload) is the gentle
stop: new workers already listen, so sessions go on to their QUIT, with 421
only to those still there when the grace ends. SIGHUP asks the snapshot holder to check for changes
now; re-reading the settings is the supervisor's job (it replaces workers).
With SRS on it also holds the SRS keys, for the RCPT check of SRS addresses.
Started by the master (``--master-fd``), it tells the master when it listens,
and stops as on SIGTERM when the master is gone.

Gets plain settings from app.py; never reads the configuration itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mxgate.client_counts import ClientCounts
from mxgate.core.srs_keys import SrsContext, SrsSettings
from mxgate.directory import SnapshotHolder, SrsKeyHolder
from mxgate.directory.memory import fewer_young_collections
from mxgate.maillog import open_mail_log
from mxgate.metrics.counts import SmtpCounts
from mxgate.server.listener import Listener
from mxgate.server.session import Session
from mxgate.server.transaction import SessionSettings
from mxgate.spool import Spool
from mxgate.supervisor import READY


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    session: SessionSettings
    endpoints: list[tuple[str, int]]
    per_client_limit: int
    dsn: str
    cache_path: Path
    reload_interval: float
    spool_dir: Path
    shutdown_grace: float = 30.0
    srs: SrsSettings | None = None  # None: SRS off
    listen_fds: tuple[int, ...] = ()  # sockets from the master; empty: bind endpoints
    srs_cache_path: Path | None = None
    # The master's shared connection counts (client_counts.py): fd, our row, rows.
    client_counts: tuple[int, int, int] | None = None
    maillog_file: str = ""  # empty: stderr (unless syslog)
    syslog_facility: int | None = None  # None: no syslog
    syslog_socket: str = "/dev/log"
    busy_poll: float = 0.0  # seconds (smtpd_busy_poll); 0: the loop never polls


class MasterChannel:
    """Our end of the socket pair the master made for us (see supervisor.py)."""

    def __init__(self, fd: int, on_gone: Callable[[], None]) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.on_gone = on_gone
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.sock, self._readable)
        # Journal ticks not sent yet (socket buffer full), latest per segment:
        # a later tick of a segment covers the earlier ones.
        self._ticks: dict[str, tuple[int, bool]] = {}
        self._unsent = b""  # the rest of a line the socket took only part of
        self._waiting_writable = False
        self._counts = b""  # the latest M line not sent yet (metrics/counts.py)

    def tick(self, segment: str, durable: int, sealed: bool) -> None:
        """Tell the master that ``segment`` is durable up to ``durable``."""
        previous = self._ticks.get(segment)
        self._ticks[segment] = (durable, sealed or (previous is not None and previous[1]))
        self._send_ticks()

    def counts(self, line: bytes) -> None:
        """Send our SMTP counts (an ``M`` line; a newer one replaces one not sent)."""
        self._counts = line
        self._send_ticks()

    def _send_ticks(self) -> None:
        # What a full socket buffer did not take goes first next time: a stream
        # socket may take part of a line, and the master must see whole lines.
        while self._unsent or self._ticks or self._counts:
            if not self._unsent:
                if self._ticks:
                    segment, (durable, sealed) = self._ticks.popitem()
                    self._unsent = f"J {segment} {durable} {int(sealed)}\n".encode("ascii")
                else:
                    self._unsent, self._counts = self._counts, b""
            try:
                sent = self.sock.send(self._unsent)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._ticks.clear()  # the master is gone: _readable stops us
                self._unsent = self._counts = b""
                return
            self._unsent = self._unsent[sent:]
            if self._unsent:
                if not self._waiting_writable:
                    self._waiting_writable = True
                    self.loop.add_writer(self.sock, self._writable)
                return

    def _writable(self) -> None:
        self._waiting_writable = False
        self.loop.remove_writer(self.sock)
        self._send_ticks()

    def _readable(self) -> None:
        try:
            data = self.sock.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # end of file: the master is gone
            self.loop.remove_reader(self.sock)
            self.on_gone()

    def ready(self) -> None:
        """Tell the master we listen (a few bytes: the socket buffer takes them)."""
        with contextlib.suppress(OSError):  # the master is gone: _readable stops us
            self.sock.send(READY)

    def close(self) -> None:
        if self._ticks or self._unsent or self._counts:
            # Last ticks (the sealing of our segment) must reach the master.
            self.sock.setblocking(True)
            self.sock.settimeout(5)
            lines = [self._unsent] + [
                f"J {segment} {durable} {int(sealed)}\n".encode("ascii")
                for segment, (durable, sealed) in self._ticks.items()
            ]
            lines.append(self._counts)
            self._counts = b""
            with contextlib.suppress(OSError):
                self.sock.sendall(b"".join(lines))
            self._ticks.clear()
            self._unsent = b""
        if self._waiting_writable:
            self.loop.remove_writer(self.sock)
        self.loop.remove_reader(self.sock)
        self.sock.close()


async def run_worker(settings: WorkerSettings, master_fd: int | None = None) -> int:
    """Serve until SIGTERM (or the master is gone); the exit status."""
    log, _ = open_mail_log(
        settings.session.hostname,
        settings.maillog_file,
        settings.syslog_facility,
        settings.syslog_socket,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def master_gone() -> None:
        log.line("master", "warning: the master process is gone; stopping")
        stop.set()

    master = MasterChannel(master_fd, master_gone) if master_fd is not None else None
    holder = SnapshotHolder(
        settings.dsn,
        cache_path=settings.cache_path,
        reload_interval=settings.reload_interval,
    )
    srs = settings.srs
    keys = (
        SrsKeyHolder(settings.dsn, cache_path=settings.srs_cache_path) if srs is not None else None
    )

    def srs_context() -> SrsContext | None:
        return SrsContext(srs, keys.ring, time.time()) if srs and keys else None

    def wake() -> None:
        holder.wake()
        if keys is not None:
            keys.wake()

    draining = False

    def drain() -> None:
        nonlocal draining
        draining = True
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, drain)
    loop.add_signal_handler(signal.SIGHUP, wake)
    # Both at once: with the database down each waits for its connect timeout.
    await asyncio.gather(holder.start(), *([keys.start()] if keys is not None else []))
    fewer_young_collections()
    status = holder.status()
    if holder.current is None:
        log.line("smtpd", f"warning: no routing data ({status.last_error}); answering 451 4.3.0")
    else:
        log.line("smtpd", f"routing data from {status.source}, version {status.version}")
    # Small messages go to this worker's journal segment; the master hears of
    # each durable batch through the channel. Without a master (a worker run on
    # its own) the journal is read at the next start of serve.
    listener: Listener | None = None

    def quiet() -> bool:
        # One client at a time (its previous connection may not be closed yet
        # when the next arrives): the fdatasync runs inline, which beats both a
        # thread and the helper process when nothing else waits on the loop.
        return listener is not None and len(listener.sessions) <= 2

    spool = Spool(
        settings.spool_dir,
        journal=True,
        notify=master.tick if master is not None else None,
        quiet=quiet,
    )

    spool.prepare_journal()

    counts = SmtpCounts()
    # The master keeps the last line per key: one key for our whole life.
    counts_key = f"{os.getpid()}:{time.time():.6f}"

    def new_session() -> Session:
        return Session(
            settings.session,
            lambda: holder.current,
            spool,
            log,
            srs=srs_context,
            counts=counts,
        )

    def count_polls() -> None:
        poller = listener.poller if listener is not None else None
        if poller is not None:
            counts.busy_polled(poller.caught, poller.expired, poller.polled)

    async def report_counts(channel: MasterChannel) -> None:
        # Once a second at most, and only when something changed.
        sent = -1
        while True:
            count_polls()
            if counts.changes != sent:
                sent = counts.changes
                channel.counts(counts.line(counts_key))
            await asyncio.sleep(1.0)

    reporting = asyncio.create_task(report_counts(master)) if master is not None else None

    shared_counts = None
    if settings.client_counts is not None:
        try:
            shared_counts = ClientCounts(*settings.client_counts)
        except (OSError, ValueError) as exc:
            log.line("master", f"warning: connections per client counted here alone: {exc}")
    listener = Listener(
        settings.endpoints,
        new_session,
        inherited=settings.listen_fds,
        hostname=settings.session.hostname,
        per_client_limit=settings.per_client_limit,
        log=log,
        shared_counts=shared_counts,
        busy_poll=settings.busy_poll,
    )
    try:
        try:
            await listener.start()
        except OSError as exc:
            # Another program on the port, an address we do not have...: one
            # clear line, and the master keeps (or restarts) the workers it has.
            log.line("master", f"fatal: cannot listen: {exc}")
            await listener.shutdown(0)
            return 1
        log.line("master", f"listening on {', '.join(f'{h}:{p}' for h, p in listener.bound())}")
        if master is not None:
            master.ready()
        await stop.wait()
        if draining:
            log.line("master", "replaced by new workers: closing the listeners, sessions go on")
        else:
            log.line("master", "terminating on signal: closing the listeners, finishing sessions")
        await listener.shutdown(settings.shutdown_grace, drain=draining)
    finally:
        if reporting is not None:
            reporting.cancel()
        await holder.stop()
        if keys is not None:
            await keys.stop()
        spool.close()
        log.flush()
        if master is not None:
            count_polls()
            master.counts(counts.line(counts_key))  # the last sessions' too
            master.close()
    return 0


def worker_main(settings: WorkerSettings, master_fd: int | None = None) -> int:
    """Entry point of a worker process (``mxgate worker``, started by ``serve``);
    the exit status."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio serves too
        return asyncio.run(run_worker(settings, master_fd))
    return uvloop.run(run_worker(settings, master_fd))
