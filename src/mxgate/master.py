"""The master process of ``mxgate serve``: the queue manager beside the supervisor.

Owns what runs once per gateway rather than once per worker: the queue manager
(with its own routing snapshot, SRS keys, courier and connection pool), the pid file
that ``mxgate queue`` uses to wake it (SIGUSR1), and the shutdown order: stop
the SMTP workers first (no new mail), then let deliveries in flight finish for
a while, then cut the rest (they stay in the spool and are retried at start).

Gets plain settings from app.py; never reads the configuration itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from mxgate.core.routing import RoutingPolicy
from mxgate.core.srs_keys import SrsContext, SrsSettings
from mxgate.delivery import Courier, CourierConfig, DnsResolver
from mxgate.delivery.scheduler import QueueManager, SchedulerSettings
from mxgate.directory import SnapshotHolder, SrsKeyHolder
from mxgate.directory.memory import fewer_young_collections
from mxgate.directory.retention import keep_pruning
from mxgate.maillog import MailLog, open_mail_log
from mxgate.metrics.counts import SmtpTotals
from mxgate.metrics.endpoint import GatewayView, MetricsEndpoint
from mxgate.spool import Spool
from mxgate.supervisor import Supervisor


@dataclass(frozen=True, slots=True)
class MasterSettings:
    hostname: str
    dsn: str
    cache_path: Path
    reload_interval: float
    spool_dir: Path
    pid_file: Path
    policy: RoutingPolicy
    courier: CourierConfig
    nameservers: tuple[str, ...]
    dns_port: int
    scheduler: SchedulerSettings
    delivery_grace: float = 10.0
    srs: SrsSettings | None = None  # None: SRS off
    srs_cache_path: Path | None = None
    change_log_retention: int = 0  # seconds; 0: never prune
    metrics_listen: tuple[str, int] | None = None  # the HTTP endpoint; None: none
    maillog_file: str = ""  # empty: stderr (unless syslog)
    syslog_facility: int | None = None  # None: no syslog
    syslog_socket: str = "/dev/log"
    delivery_nice: int = 0  # added to this thread's nice value (the workers keep theirs)


def lower_thread_priority(increment: int) -> int:
    """Add ``increment`` to the calling thread's nice value (at most 19) and
    return the new value. On Linux the value belongs to the thread (who=0 is
    the caller alone) and is inherited by the threads and processes it starts
    later; the supervisor's spawning thread, made before, keeps its own.

    Why: on a loaded machine the SMTP sessions, whose clients wait on every
    reply, should get the CPU before deliveries, whose only cost in waiting is
    a little latency; at the default weights (nice 10 is about a ninth of nice
    0) the queue manager still has the CPU no worker uses."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    target = min(19, current + increment)
    if increment > 0 and target != current:
        os.setpriority(os.PRIO_PROCESS, 0, target)
    return target


def lower_delivery_priority(increment: int, log: MailLog) -> None:
    """``lower_thread_priority`` for the master's loop; where the system
    refuses (a sandbox that filters setpriority), deliveries keep the
    workers' priority and the log says so."""
    try:
        lower_thread_priority(increment)
    except OSError as exc:
        log.line("master", f"warning: cannot lower the queue manager's priority: {exc}")


# What a reload cannot change in a running master: where it keeps its state,
# listens and logs, and the database it follows. A change waits for a restart,
# with a warning, and the master keeps the value it started with. Each field
# with the setting (mxgate.toml) it comes from.
RESTART_ONLY: dict[str, str] = {
    "dsn": "database_url",
    "cache_path": "state_dir",
    "pid_file": "state_dir",
    "srs_cache_path": "state_dir",
    "reload_interval": "snapshot_reload_interval",
    "spool_dir": "spool_dir",
    "change_log_retention": "change_log_retention",
    "metrics_listen": "metrics_listen",
    "maillog_file": "maillog_file",
    "syslog_facility": "syslog_facility",
    "syslog_socket": "syslog_socket",
}


def reload_plan(
    current: MasterSettings, new: MasterSettings, srs_keys: bool
) -> tuple[MasterSettings, list[str]]:
    """What a reload applies: ``new`` less what only a restart can change,
    and the settings (as mxgate.toml names them) that wait for the restart.
    ``srs_keys``: the master follows the SRS keys (SRS was on at start)."""
    kept = {
        field.name
        for field in fields(MasterSettings)
        if field.name in RESTART_ONLY and getattr(new, field.name) != getattr(current, field.name)
    }
    waiting = {RESTART_ONLY[name] for name in kept}
    if new.srs is not None and not srs_keys:
        kept.add("srs")  # turning SRS on needs the keys, followed from the start
        waiting.add("srs_enabled")
    if new.delivery_nice < current.delivery_nice:
        kept.add("delivery_nice")  # a thread cannot raise its own priority again
        waiting.add("delivery_nice")
    return replace(new, **{name: getattr(current, name) for name in kept}), sorted(waiting)


async def run_master(
    settings: MasterSettings,
    supervisor: Supervisor,
    reread: Callable[[], MasterSettings] | None = None,
) -> int:
    """``reread``: the settings as the file says now (on SIGHUP, once the new
    workers listen); None: the master keeps those it started with."""
    log, logfile = open_mail_log(
        settings.hostname, settings.maillog_file, settings.syslog_facility, settings.syslog_socket
    )
    lower_delivery_priority(settings.delivery_nice, log)
    if logfile is not None:
        supervisor.on_reload = logfile.reopen  # after a rotation that renamed it
    totals = SmtpTotals()
    supervisor.on_counts = totals.take_line
    published = [GatewayView(heartbeat=time.monotonic())]  # replaced whole, read by the endpoint
    endpoint = None
    if settings.metrics_listen is not None:
        host, port = settings.metrics_listen
        endpoint = MetricsEndpoint(host, port, settings.spool_dir, totals, lambda: published[0])
        try:
            endpoint.start()
        except OSError as exc:
            log.line("master", f"fatal: cannot listen on {host}:{port} (metrics_listen): {exc}")
            log.flush()
            return 1
    holder = SnapshotHolder(
        settings.dsn, cache_path=settings.cache_path, reload_interval=settings.reload_interval
    )
    srs = settings.srs
    keys = None
    if srs is not None:
        keys = SrsKeyHolder(settings.dsn, cache_path=settings.srs_cache_path)
    # Both at once: with the database down each waits for its connect timeout.
    await asyncio.gather(holder.start(), *([keys.start()] if keys is not None else []))
    # What exists now (the modules, the first snapshot) lives as long as the
    # process: keep the collector from walking it again and again. Deliveries
    # make many short-lived objects, so young collections run less often.
    gc.freeze()
    fewer_young_collections()

    current = [settings]  # replaced whole by a reload

    def srs_context(now: float) -> SrsContext | None:
        srs = current[0].srs
        return SrsContext(srs, keys.ring, now) if srs and keys else None

    resolver = DnsResolver(list(settings.nameservers) or None, port=settings.dns_port)
    courier = Courier(
        settings.courier, resolver, warn=lambda text: log.line("smtp", f"warning: {text}")
    )
    spool = Spool(settings.spool_dir)
    # Frames that earlier workers left in the journal (a crash, a restart) are
    # delivered from there; no worker of ours runs yet.
    adopted = spool.adopt_journal()
    if adopted:
        log.line("qmgr", f"{adopted} message(s) taken over from the journal")
    manager = QueueManager(
        spool,
        lambda: holder.current,
        settings.policy,
        courier,
        log,
        settings.scheduler,
        srs=srs_context,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, manager.wake)

    def journal_tick(segment: str, durable: int, sealed: bool) -> None:
        if spool.feed_journal(segment, durable, sealed):
            manager.journal_news()

    def worker_gone(segments: list[str]) -> None:
        # Its last frames may lack a tick (a crash between fdatasync and the
        # tick): take every complete frame. Frames never acknowledged may be
        # among them: delivered anyway (at-least-once), never lost.
        for segment in segments:
            with contextlib.suppress(OSError):
                size = (settings.spool_dir / "journal" / segment).stat().st_size
                journal_tick(segment, size, True)

    def reconfigure() -> None:
        if reread is None:
            return
        try:
            new = reread()
        except Exception as exc:  # the file changed again since the check
            log.line("master", f"warning: reload: the queue manager keeps its settings: {exc}")
            return
        applied, waiting = reload_plan(current[0], new, keys is not None)
        if applied.delivery_nice > current[0].delivery_nice:
            lower_delivery_priority(applied.delivery_nice - current[0].delivery_nice, log)
        if (applied.nameservers, applied.dns_port) != (current[0].nameservers, current[0].dns_port):
            courier.resolver = DnsResolver(list(applied.nameservers) or None, port=applied.dns_port)
        courier.reconfigure(applied.courier)
        manager.reconfigure(applied.policy, applied.scheduler)
        log.rename(applied.hostname)
        current[0] = applied
        if waiting:
            log.line(
                "master",
                f"warning: reload: {', '.join(waiting)} changed: restart mxgate serve to apply",
            )

    supervisor.on_settings = reconfigure
    supervisor.on_journal = journal_tick
    supervisor.on_worker_gone = worker_gone
    settings.pid_file.parent.mkdir(parents=True, exist_ok=True)
    settings.pid_file.write_text(f"{os.getpid()}\n")
    stop = asyncio.Event()
    deliveries = asyncio.create_task(manager.run(stop))

    async def publish() -> None:
        # The endpoint's thread reads only this value; /healthz watches its age.
        while True:
            status = holder.status()
            published[0] = GatewayView(
                heartbeat=time.monotonic(),
                workers_ready=supervisor.ready_workers(),
                snapshot_version=status.version,
                in_flight=manager.delivering,
                waiting_to_record=manager.recording,
                recipients=manager.outcomes.copy(),
                recipients_by_nexthop=manager.outcomes_by_nexthop.copy(),
                transactions={"new": courier.pool.opened, "reused": courier.pool.reused},
                stopping=stop.is_set(),
            )
            await asyncio.sleep(1.0)

    publishing = asyncio.create_task(publish()) if endpoint is not None else None
    pruning = None
    if settings.change_log_retention > 0:
        pruning = asyncio.create_task(
            keep_pruning(
                settings.dsn,
                settings.change_log_retention,
                lambda text: log.line("master", text),
                stop,
            )
        )
    try:
        code = await supervisor.run()
    finally:
        stop.set()
        published[0] = replace(published[0], stopping=True, workers_ready=0)
        _done, pending = await asyncio.wait({deliveries}, timeout=current[0].delivery_grace)
        for task in pending:
            task.cancel()
        for task in list(manager.in_flight.values()):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(deliveries, *manager.in_flight.values(), return_exceptions=True)
        for task in [t for t in (pruning, publishing) if t is not None]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if endpoint is not None:
            endpoint.stop()
        await courier.close()
        await holder.stop()
        if keys is not None:
            await keys.stop()
        spool.close()
        log.flush()
        with contextlib.suppress(OSError):
            settings.pid_file.unlink()
    return code
