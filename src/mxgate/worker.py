"""One SMTP worker process: snapshot holder, spool writer and listener together.

Owns the life of a worker: start the routing snapshot (database, else the
disk copy, else none: then RCPT answers 451), open the spool, listen, and on
SIGTERM stop accepting, let sessions finish (``shutdown_grace``), flush the
snapshot cache and exit. SIGHUP asks the snapshot holder to check for changes
now; re-reading the settings is the supervisor's job (it replaces workers).

Gets plain settings from app.py; never reads the configuration itself.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path

from mxgate.directory import SnapshotHolder
from mxgate.maillog import MailLog
from mxgate.server.listener import Listener
from mxgate.server.session import Session, SessionSettings
from mxgate.spool import Spool


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


async def run_worker(settings: WorkerSettings, ready: asyncio.Event | None = None) -> None:
    log = MailLog(settings.session.hostname)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    holder = SnapshotHolder(
        settings.dsn,
        cache_path=settings.cache_path,
        reload_interval=settings.reload_interval,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, holder.wake)
    await holder.start()
    status = holder.status()
    if holder.current is None:
        log.line("smtpd", f"warning: no routing data ({status.last_error}); answering 451 4.3.0")
    else:
        log.line("smtpd", f"routing data from {status.source}, version {status.version}")
    spool = Spool(settings.spool_dir)

    async def run_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Session(reader, writer, settings.session, lambda: holder.current, spool, log).run()

    listener = Listener(
        settings.endpoints,
        run_session,
        hostname=settings.session.hostname,
        per_client_limit=settings.per_client_limit,
        log=log,
    )
    try:
        await listener.start()
        log.line("master", f"listening on {', '.join(f'{h}:{p}' for h, p in listener.bound())}")
        if ready is not None:
            ready.set()
        await stop.wait()
        log.line("master", "terminating on signal: closing the listeners, finishing sessions")
        await listener.shutdown(settings.shutdown_grace)
    finally:
        await holder.stop()
        spool.close()


def worker_main(settings: WorkerSettings) -> None:
    """Entry point of a worker process (``mxgate worker``, started by ``serve``)."""
    try:
        import uvloop
    except ImportError:  # uvloop is optional: plain asyncio serves too
        asyncio.run(run_worker(settings))
    else:
        uvloop.run(run_worker(settings))
