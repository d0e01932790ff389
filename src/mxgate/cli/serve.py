"""``mxgate serve`` (the master) and ``mxgate worker`` (one SMTP worker process)."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import time
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from mxgate import native, sdnotify
from mxgate.app import database, master_settings, worker_settings
from mxgate.cli.common import ConfigOption, fail, settings
from mxgate.client_counts import ClientTable, parse_spec
from mxgate.config import ConfigError, load_config, split_endpoint
from mxgate.cpus import available_cpus
from mxgate.maillog import MaillogFile, configure_diagnostics
from mxgate.master import run_master
from mxgate.sockets import ListenSockets
from mxgate.spool import RecoveryReport, Spool, SpoolBusyError, SpoolError
from mxgate.supervisor import Supervisor, default_worker_count, worker_command
from mxgate.syslog_socket import SyslogSocket
from mxgate.worker import worker_main


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run the master's loop on uvloop when installed (as the workers do)."""
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio serves too
        return asyncio.run(main)
    return uvloop.run(main)


def _say(text: str) -> None:
    print(f"mxgate: {text}", file=sys.stderr, flush=True)


# A gateway killed just before (kill -9, then a restart by systemd or by hand)
# holds the spool lock until its last thread has left the kernel: one stuck
# in an fdatasync can take seconds. Wait that long before calling it busy.
SPOOL_LOCK_PATIENCE = 15.0


def _recover(spool_dir: Path) -> RecoveryReport:
    deadline = time.monotonic() + SPOOL_LOCK_PATIENCE
    said = False
    while True:
        try:
            with Spool(spool_dir) as spool:
                return spool.recover()
        except SpoolBusyError as exc:
            if time.monotonic() > deadline:
                fail(f"cannot open the spool {spool_dir}: {exc}")
            if not said:
                _say(f"spool {spool_dir} is in use; waiting for it to be released")
                said = True
            time.sleep(0.2)
        except SpoolError as exc:
            fail(f"cannot open the spool {spool_dir}: {exc}")


def _say_build() -> None:
    why = native.stale()
    if why is not None:
        # They still load first: code older than its source may be running.
        _say(f"warning: {why}; run scripts/build-native")
    elif not native.extension_paths():
        _say("running as plain Python: scripts/build-native compiles the hot modules")


def serve(config: ConfigOption = None) -> None:
    """Run the gateway (embedded database with example data when none is configured)."""
    loaded = settings(config)
    cfg = loaded.config
    configure_diagnostics(cfg.log_level, cfg.hostname)
    try:
        worker_settings(cfg, "")  # fail early, before any process starts, on bad TLS files
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load the TLS certificate or key: {exc}")
    if not cfg.postmaster:
        _say("warning: postmaster is not set: mail to postmaster gets 451 4.3.5 until it is")
    if cfg.maillog_file:
        try:
            MaillogFile(cfg.maillog_file).close()
        except OSError as exc:
            fail(f"cannot open maillog_file {cfg.maillog_file}: {exc.strerror or exc}")
    if cfg.syslog_facility and not SyslogSocket(0, cfg.syslog_socket).reachable():
        _say(f"warning: no syslog daemon at {cfg.syslog_socket}: mail log lines are dropped")
    if os.geteuid() == 0:
        # Postfix's daemons drop root; ours never take it: a unit with User=
        # and CAP_NET_BIND_SERVICE (contrib/systemd) binds port 25 without it.
        _say("warning: running as root; run serve as its own user (README: In production)")
    _say_build()
    report = _recover(Path(cfg.spool_dir))
    _say(
        f"spool {cfg.spool_dir}: {report.messages} message(s) queued, "
        f"{len(report.requeued)} returned from active/ or the journal, "
        f"{len(report.corrupt)} corrupt, {report.tmp_removed} unfinished file(s) removed"
    )
    with database(cfg, prepare=True) as dsn:
        env = dict(os.environ, MXGATE_DATABASE_URL=dsn)
        for name in sdnotify.ENVIRONMENT:  # the master speaks to systemd, not the workers
            env.pop(name, None)
        if loaded.file is not None:
            env["MXGATE_CONFIG"] = str(loaded.file)

        def check_reload() -> str | None:
            try:
                fresh = load_config(loaded.file).config
                worker_settings(fresh, dsn)
            except (ConfigError, OSError, ssl.SSLError) as exc:
                return str(exc)
            if tuple(fresh.listen) != tuple(cfg.listen):
                # The sockets are the master's (sockets.py): opened once.
                return "listen changed: restart mxgate serve to listen elsewhere"
            destination = ("maillog_file", "syslog_facility", "syslog_socket")
            if any(getattr(fresh, name) != getattr(cfg, name) for name in destination):
                # The master keeps its log: one destination for all processes.
                return (
                    "the mail log's destination changed (maillog_file, syslog_facility, "
                    "syslog_socket): restart mxgate serve to log elsewhere"
                )
            return None

        count = cfg.workers or default_worker_count()
        try:
            sockets = ListenSockets([split_endpoint(item) for item in cfg.listen], count)
        except OSError as exc:
            fail(f"fatal: cannot listen: {exc}")
        why = "" if cfg.workers else f" (workers = 0: {available_cpus()} usable core(s) less one)"
        _say(
            f"SMTP on {', '.join(cfg.listen)} with {count} worker(s){why}; queue in {cfg.spool_dir}"
        )
        try:
            # Rows for the workers, those a reload starts beside them, and spares.
            clients: ClientTable | None = ClientTable(rows=4 * count)
        except OSError as exc:
            _say(f"warning: connections per client counted by each worker alone: {exc}")
            clients = None
        supervisor = Supervisor(
            worker_command(None),
            count,
            env,
            _say,
            check_reload=check_reload,
            listen_fds=sockets.fds,
            close_listeners=sockets.close,
            clients=clients,
        )
        try:
            code = _run(
                run_master(
                    master_settings(cfg, dsn),
                    supervisor,
                    reread=lambda: master_settings(load_config(loaded.file).config, dsn),
                )
            )
        finally:
            supervisor.close()
            sockets.close()
            if clients is not None:
                clients.close()
    raise typer.Exit(code)


MasterFdOption = Annotated[
    int | None,
    typer.Option("--master-fd", hidden=True, help="Socket shared with the master (serve)."),
]


ListenFdOption = Annotated[
    list[int] | None,
    typer.Option("--listen-fd", hidden=True, help="A listening socket opened by serve."),
]


ClientsOption = Annotated[
    str | None,
    typer.Option("--clients", hidden=True, help="FD:ROW:ROWS of the shared client counts."),
]


def worker(
    config: ConfigOption = None,
    master_fd: MasterFdOption = None,
    listen_fd: ListenFdOption = None,
    clients: ClientsOption = None,
) -> None:
    """One SMTP worker process (started by serve; not for direct use)."""
    loaded = settings(config)
    if not loaded.config.database_url:
        fail("worker needs database_url (serve sets it)")
    configure_diagnostics(loaded.config.log_level, loaded.config.hostname)
    try:
        ws = worker_settings(loaded.config, loaded.config.database_url)
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load the TLS certificate or key: {exc}")
    if listen_fd:
        ws = replace(ws, listen_fds=tuple(listen_fd))
    if clients:
        try:
            ws = replace(ws, client_counts=parse_spec(clients))
        except ValueError:
            fail(f"--clients {clients}: expected FD:ROW:ROWS")
    raise typer.Exit(worker_main(ws, master_fd))
