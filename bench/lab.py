"""The closed lab of bench/compare.py: PostgreSQL, the data set, the reference
Postfix, mxgate, the smtp-sink next hops, and process accounting.

Everything lives under one work directory (default /tmp/mxgate-bench) and
listens on 127.0.0.1 only. Every process here is started by this module and
stopped through its own PID or its own control command (``pg_ctl -D``,
``postfix -c``); nothing is looked up by name.

Set-up is idempotent: a PostgreSQL cluster, a data set or a Postfix
configuration that is already there and matches is reused, anything else is
rebuilt.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from mxgate.supervisor import default_worker_count

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
POSTFIX_TEMPLATES = BENCH_DIR / "postfix"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
LOOPBACK = "127.0.0.1"
DATASET_VERSION = 2
TRUSTED_NETWORK = "127.0.0.254/32"
"""Both gateways' mynetworks: no client of the lab connects from it, so every
load (smtp-source from 127.0.0.1 included) is "the internet" to them."""
CONNECTIONS_PER_CLIENT = 100
"""Both gateways' smtpd_client_connection_count_limit (Postfix's default: 50):
smtp-source connects from one address, and at 50 sessions a new connection
can arrive before the server has seen the previous one close."""


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(
    args: list[str],
    *,
    user: str | None = None,
    check: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> str:
    proc = subprocess.run(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        user=user,
        check=False,
        timeout=timeout,
        env=env,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}")
    return str(proc.stdout)


def wait_port(port: int, timeout: float, host: str = LOOPBACK, banner: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=5) as sock:
                if not banner:
                    return
                data = sock.recv(512)
                sock.sendall(b"QUIT\r\n")
                if data.startswith(b"220"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers on {host}:{port} after {timeout:.0f} s")
        time.sleep(0.1)


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Ports:
    postgres: int = 25432
    postfix: int = 2625
    mxgate: int = 2525
    sink_a: int = 2601  # node "maila": even domains
    sink_b: int = 2602  # node "mailb": odd domains
    sink_limit: int = 2603  # smtp-source -> smtp-sink, and the load client's own ceiling

    @classmethod
    def from_env(cls) -> Ports:
        values = {}
        for name in cls.__dataclass_fields__:
            env = os.environ.get(f"MXBENCH_PORT_{name.upper()}")
            if env:
                values[name] = int(env)
        return cls(**values)


# -- PostgreSQL ----------------------------------------------------------------


class Postgres:
    """Debian's PostgreSQL 15 binaries on a private cluster under the work dir."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.datadir = root / "data"
        self.port = port
        self.logfile = root / "postgresql.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def _ctl(self, *args: str, timeout: float = 120) -> str:
        return run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), *args],
            user="postgres",
            timeout=timeout,
        )

    def pid(self) -> int | None:
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        entry = pwd.getpwnam("postgres")
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if (self.datadir / "PG_VERSION").exists():
            return
        log(f"initdb {self.datadir}")
        run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            user="postgres",
        )

    def start(self) -> None:
        self.init()
        if self.pid() is not None:
            return
        # Debian's defaults (shared_buffers 128MB, ...) except: loopback TCP on
        # our port, the socket in our directory, and max_connections 500, since
        # the tutorial's Postfix opens one connection per map per process
        # (about 250 at 50 sessions; the default 100 answers 451s).
        options = (
            f"-c listen_addresses={LOOPBACK} -p {self.port} "
            f"-c unix_socket_directories={self.root} -c max_connections=500"
        )
        self._ctl("-w", "-t", "120", "-l", str(self.logfile), "-o", options, "start")

    def stop(self) -> None:
        if self.pid() is not None:
            self._ctl("-w", "-m", "fast", "stop")

    def psql(self, sql: str, database: str = "postgres", timeout: float = 900) -> str:
        return run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                LOOPBACK,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            timeout=timeout,
        ).strip()

    def version(self) -> str:
        return self.psql("SHOW server_version")


# -- the data set ------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """Rows of the data set. Domain k is ``d{k}.bench.example`` (node maila
    when k is even, mailb when odd; transport to sink A or B accordingly).
    Mailbox n is ``user{n}@d{n % domains}.bench.example``. Domains with
    k % 100 == 99 have a forward catch-all, k % 100 == 98 a relay catch-all.
    Exact forwards ``alias{j}@...`` point at mailboxes; exact relays are
    ``relay{j}@...``. The last ``source_mailboxes`` of the mailboxes are named
    ``{j}user@d0.bench.example`` (j from 1): the recipients ``smtp-source -N -t
    user@d0.bench.example`` numbers, distinct per recipient and all valid."""

    mailboxes: int
    domains: int = 1000
    forwards: int = 20_000
    relays: int = 5_000

    @property
    def source_mailboxes(self) -> int:
        # More than the fastest gateway run takes (about 2,000 msgs/s x 8 s x 5).
        return min(200_000, self.mailboxes // 5)

    @property
    def regular_mailboxes(self) -> int:
        """``user{n}@d{n % domains}`` for n below this (what loadgen.py draws from)."""
        return self.mailboxes - self.source_mailboxes

    def key(self) -> str:
        return (
            f"mxgate-bench dataset v{DATASET_VERSION}: {self.mailboxes} mailboxes, "
            f"{self.domains} domains, {self.forwards} forwards, {self.relays} relays"
        )


TUTORIAL_DDL = """
CREATE TABLE domain (
    domain varchar(50) PRIMARY KEY,
    node varchar(50) NULL,
    comment varchar(500) NULL
);
CREATE TABLE forward (
    source varchar(80) PRIMARY KEY,
    destination text NOT NULL,
    comment varchar(500) NULL
);
CREATE TABLE relay (
    source varchar(80) PRIMARY KEY,
    node varchar(50) NOT NULL,
    comment varchar(500) NULL
);
CREATE TABLE mailbox (
    email varchar(80) PRIMARY KEY,
    password varchar(20) NOT NULL,
    quota bigint DEFAULT 10485760,
    node varchar(50) NOT NULL,
    comment varchar(500) NULL
);
CREATE TABLE transport (
    domain varchar(128) NOT NULL DEFAULT '' UNIQUE,
    transport varchar(128) NOT NULL DEFAULT '',
    node varchar(50) NOT NULL,
    comment varchar(500) NULL
);
"""


def dataset_sql(s: Scale, ports: Ports) -> str:
    d = "'.bench.example'"
    node = "CASE WHEN ({}) % 2 = 0 THEN 'maila' ELSE 'mailb' END"
    sink = (
        f"CASE WHEN g % 2 = 0 THEN 'smtp:[{LOOPBACK}]:{ports.sink_a}' "
        f"ELSE 'smtp:[{LOOPBACK}]:{ports.sink_b}' END"
    )
    return f"""
BEGIN;
INSERT INTO domain (domain, node)
    SELECT 'd' || g || {d}, {node.format("g")} FROM generate_series(0, {s.domains - 1}) g;
INSERT INTO transport (domain, transport, node)
    SELECT 'd' || g || {d}, {sink}, '' FROM generate_series(0, {s.domains - 1}) g;
INSERT INTO mailbox (email, password, node)
    SELECT 'user' || g || '@d' || (g % {s.domains}) || {d}, 'x', {node.format(f"g % {s.domains}")}
    FROM generate_series(0, {s.regular_mailboxes - 1}) g;
INSERT INTO mailbox (email, password, node)
    SELECT g || 'user@d0' || {d}, 'x', 'maila' FROM generate_series(1, {s.source_mailboxes}) g;
INSERT INTO forward (source, destination)
    SELECT '@d' || g || {d}, 'user' || g || '@d' || g || {d}
    FROM generate_series(99, {s.domains - 1}, 100) g;
INSERT INTO forward (source, destination)
    SELECT 'alias' || g || '@d' || (g % {s.domains}) || {d},
           'user' || m || '@d' || (m % {s.domains}) || {d}
    FROM (SELECT g, (g::bigint * 7919) % {s.regular_mailboxes} AS m
          FROM generate_series(0, {s.forwards - 1}) g) t;
INSERT INTO relay (source, node)
    SELECT '@d' || g || {d}, {node.format("g")} FROM generate_series(98, {s.domains - 1}, 100) g;
INSERT INTO relay (source, node)
    SELECT 'relay' || g || '@d' || (g % {s.domains}) || {d}, {node.format(f"g % {s.domains}")}
    FROM generate_series(0, {s.relays - 1}) g;
COMMIT;
"""


POSTFIX_DB = "mail"
MXGATE_DB = "mail_mxgate"


def database_comment(pg: Postgres, name: str) -> str | None:
    out = pg.psql(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database "
        f"WHERE datname = '{name}'"
    )
    return (
        None
        if out == "" and not pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        else out
    )


def prepare_databases(pg: Postgres, scale: Scale, ports: Ports, mxgate_config: Path) -> None:
    """``mail`` with the tutorial's DDL and the data set (what Postfix reads), and
    ``mail_mxgate``, a copy upgraded by ``mxgate db migrate`` (what mxgate reads)."""
    key = scale.key() + f", sinks {ports.sink_a}/{ports.sink_b}"
    if database_comment(pg, POSTFIX_DB) != key:
        log(f"building database {POSTFIX_DB}: {key}")
        started = time.monotonic()
        for name in (MXGATE_DB, POSTFIX_DB):
            pg.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        pg.psql(f"CREATE DATABASE {POSTFIX_DB}")
        pg.psql(TUTORIAL_DDL, POSTFIX_DB)
        pg.psql(dataset_sql(scale, ports), POSTFIX_DB)
        pg.psql("VACUUM ANALYZE", POSTFIX_DB)
        pg.psql(f"COMMENT ON DATABASE {POSTFIX_DB} IS '{key}'")
        log(f"built in {time.monotonic() - started:.0f} s")
    if database_comment(pg, MXGATE_DB) != key:
        log(f"copying {POSTFIX_DB} to {MXGATE_DB} and migrating it (mxgate db migrate)")
        pg.psql(f"DROP DATABASE IF EXISTS {MXGATE_DB} WITH (FORCE)")
        # A template copy needs the source idle: cut Postfix's connections, if any.
        pg.psql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{POSTFIX_DB}' AND pid <> pg_backend_pid()"
        )
        pg.psql(f"CREATE DATABASE {MXGATE_DB} TEMPLATE {POSTFIX_DB}")
        out = run(
            [sys.executable, "-m", "mxgate", "db", "migrate", "--config", str(mxgate_config)],
            env=mxgate_env(),
            timeout=900,
        )
        log("  " + out.strip().replace("\n", "; "))
        pg.psql("VACUUM ANALYZE", MXGATE_DB)
        pg.psql(f"COMMENT ON DATABASE {MXGATE_DB} IS '{key}'")
    # Rows left by the edit test of an earlier run.
    for name in (POSTFIX_DB, MXGATE_DB):
        pg.psql("DELETE FROM mailbox WHERE email LIKE 'edit%'", name)


def count_rows(pg: Postgres, database: str) -> dict[str, int]:
    out = {}
    for table in ("domain", "mailbox", "forward", "relay", "transport"):
        out[table] = int(pg.psql(f"SELECT count(*) FROM {table}", database))
    return out


# -- smtp-sink ------------------------------------------------------------------------

_COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


class Sink:
    """``smtp-sink -c``: counts messages; we read its last counter line."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.root = root
        self.name = name
        self.port = port
        self.out = root / f"sink-{name}.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [
            "smtp-sink",
            "-c",
            "-u",
            "nobody",
            "-h",
            f"sink-{self.name}.bench.example",
            f"{LOOPBACK}:{self.port}",
            "1024",
        ]

    def start(self) -> None:
        if not port_free(self.port):
            raise RuntimeError(f"port {self.port} (sink {self.name}) is in use")
        self.root.mkdir(parents=True, exist_ok=True)
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        wait_port(self.port, 10, banner=True)

    def messages(self) -> int:
        with self.out.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 400))
            tail = f.read()
        found = _COUNTER.findall(tail)
        return int(found[-1][2]) if found else 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# -- Postfix ---------------------------------------------------------------------------


class Postfix:
    """The tutorial's Postfix as its own instance: config_directory, queue and
    data directories under ``root``, smtpd on 127.0.0.1:``port``."""

    def __init__(self, root: Path, ports: Ports) -> None:
        self.root = root
        self.etc = root / "etc"
        self.queue = root / "queue"
        self.data = root / "data"
        self.maillog = root / "maillog"
        self.ports = ports

    def settings(self) -> dict[str, str]:
        return {
            "@CONFIG@": str(self.etc),
            "@QUEUE@": str(self.queue),
            "@DATA@": str(self.data),
            "@MAILLOG@": str(self.maillog),
            "@ROOT@": str(self.root),
            "@PGHOST@": f"inet:{LOOPBACK}:{self.ports.postgres}",
            "@PGDB@": POSTFIX_DB,
            "@SMTPD@": f"{LOOPBACK}:{self.ports.postfix}",
            "@RELAYHOST@": f"[{LOOPBACK}]:{self.ports.sink_a}",
            "@TRUSTED@": TRUSTED_NETWORK,
            "@CONNECTIONS@": str(CONNECTIONS_PER_CLIENT),
        }

    def configure(self) -> None:
        """Write main.cf, master.cf and the five pgsql .cf files from bench/postfix/."""
        (self.etc / "pgsql").mkdir(parents=True, exist_ok=True)
        for d in (self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        subs = self.settings()
        for template in sorted(POSTFIX_TEMPLATES.rglob("*")):
            if template.is_dir() or template.name.endswith("~"):
                continue
            rel = template.relative_to(POSTFIX_TEMPLATES)
            text = template.read_text()
            for key, value in subs.items():
                text = text.replace(key, value)
            if rel.name == "master.cf.append":
                target = self.etc / "master.cf"
                text = master_cf(text)
            elif rel.name == "main.cf":
                target = self.etc / "main.cf"
            else:
                target = self.etc / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        for cf in (self.etc / "pgsql").glob("*.cf"):
            cf.chmod(0o640)
            shutil.chown(cf, "root", "postfix")
        data_dir = self.data
        shutil.chown(data_dir, "postfix", "postfix")
        self.maillog.touch()
        run(["postfix", "-c", str(self.etc), "check"])

    def master_pid(self) -> int | None:
        try:
            pid = int((self.queue / "pid" / "master.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def start(self) -> None:
        if self.master_pid() is not None:
            run(["postfix", "-c", str(self.etc), "reload"])
        else:
            if not port_free(self.ports.postfix):
                raise RuntimeError(f"port {self.ports.postfix} (Postfix) is in use")
            run(["postfix", "-c", str(self.etc), "start"])
        wait_port(self.ports.postfix, 30, banner=True)

    def reload(self) -> None:
        run(["postfix", "-c", str(self.etc), "reload"])
        time.sleep(1.0)
        wait_port(self.ports.postfix, 30, banner=True)

    def stop(self) -> None:
        if self.master_pid() is not None:
            run(["postfix", "-c", str(self.etc), "stop"], check=False)
            deadline = time.monotonic() + 30
            while self.master_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.2)

    def queued(self) -> int:
        total = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            d = self.queue / sub
            if d.exists():
                total += sum(len(files) for _, _, files in os.walk(d))
        return total

    def flush_queue(self) -> None:
        """Delete whatever is left in the queue (after a failed run)."""
        if self.queued():
            run(["postsuper", "-c", str(self.etc), "-d", "ALL"], check=False)

    def version(self) -> str:
        return run(["postconf", "-c", str(self.etc), "-h", "mail_version"]).strip()


def master_cf(append: str) -> str:
    """Debian's master.cf with its ``smtp inet`` line replaced by ours (``append``),
    and chroot turned off (see BENCHMARKS.md)."""
    lines = []
    for line in Path("/usr/share/postfix/master.cf.dist").read_text().splitlines():
        if re.match(r"^smtp\s+inet\s", line):
            line = "#" + line
        fields = line.split()
        if fields and not line.startswith(("#", " ", "\t")) and len(fields) >= 8:
            fields[4] = "n"
            line = "  ".join(fields[:8]) + (" " + " ".join(fields[8:]) if fields[8:] else "")
        lines.append(line)
    return "\n".join(lines) + "\n" + append


# -- mxgate ------------------------------------------------------------------------------


def mxgate_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MXGATE_")}


SERVE_PYTHON = os.environ.get("MXBENCH_SERVE_PYTHON") or sys.executable
"""The interpreter of ``mxgate serve`` in the lab: bench/run.sh makes a venv of
the distribution's python3 for it when there is one (what an administrator
deploys on; Debian's is built with PGO and LTO and linked statically, which a
default pyenv or source build is not: BENCHMARKS.md, session 20)."""


def python_description(python: str) -> str:
    """``CPython 3.11.2 (/usr/bin/python3.11, libpython static)`` of an interpreter."""
    # Whether libpython is a shared library mapped into the process (pyenv's and
    # --enable-shared builds) or linked into the executable (Debian's python3):
    # the configuration variable says "shared" for Debian's too.
    code = (
        "import platform, sys; "
        "shared = 'libpython' in open('/proc/self/maps').read(); "
        "print(f'{platform.python_implementation()} {platform.python_version()} '"
        'f\'({sys._base_executable}, libpython {"shared" if shared else "static"})\')'
    )
    return run([python, "-c", code]).strip()


class Mxgate:
    """``mxgate serve --config bench.toml`` on 127.0.0.1:``port``."""

    def __init__(self, root: Path, ports: Ports, dns_port: int, workers: int = 0) -> None:
        """``workers``: 0 for mxgate's own default on this machine (written out,
        so that the start can wait for each of them to listen)."""
        self.root = root
        self.config = root / "bench.toml"
        self.logfile = root / "mxgate.log"
        self.spool = root / "spool"
        self.state = root / "state"
        self.ports = ports
        self.dns_port = dns_port
        self.workers = workers or default_worker_count()
        self.proc: subprocess.Popen[bytes] | None = None

    def configure(self, pg: Postgres) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        settings = {
            "myhostname": "mx-mxgate.bench.example",
            "listen": [f"{LOOPBACK}:{self.ports.mxgate}"],
            "mynetworks": [TRUSTED_NETWORK],
            "smtpd_client_connection_count_limit": CONNECTIONS_PER_CLIENT,
            "database_url": pg.dsn(MXGATE_DB),
            "spool_dir": str(self.spool),
            "state_dir": str(self.state),
            "postmaster": "postmaster@d0.bench.example",
            "relayhost": f"[{LOOPBACK}]:{self.ports.sink_a}",
            "dns_nameservers": [f"{LOOPBACK}:{self.dns_port}"],
            "workers": self.workers,
        }
        lines = []
        for key, value in settings.items():
            if isinstance(value, list):
                lines.append(f"{key} = [{', '.join(chr(34) + v + chr(34) for v in value)}]")
            elif isinstance(value, int):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{value}"')
        self.config.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [SERVE_PYTHON, "-m", "mxgate", "serve", "--config", str(self.config)]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 300) -> float:
        if not port_free(self.ports.mxgate):
            raise RuntimeError(f"port {self.ports.mxgate} (mxgate) is in use")
        mark = self.logfile.stat().st_size if self.logfile.exists() else 0
        started = time.monotonic()
        with self.logfile.open("ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=mxgate_env(),
                cwd=self.root,
            )
        deadline = started + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mxgate serve exited with {self.proc.returncode}:\n"
                    + self.log_since(mark)[-3000:]
                )
            if self.log_since(mark).count("listening on") >= self.workers:
                try:
                    wait_port(self.ports.mxgate, 5, banner=True)
                    return time.monotonic() - started
                except RuntimeError:
                    pass
            if time.monotonic() > deadline:
                raise RuntimeError("mxgate serve did not start:\n" + self.log_since(mark)[-3000:])
            time.sleep(0.1)

    def log_since(self, mark: int) -> str:
        with self.logfile.open("rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.logfile.stat().st_size if self.logfile.exists() else 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def queued(self) -> int:
        """Envelope records still to deliver (incoming, active, deferred, hold)."""
        total = 0
        for sub in ("incoming", "active", "deferred", "hold"):
            d = self.spool / sub
            if d.exists():
                total += sum(1 for p in d.rglob("*") if p.is_file())
        return total

    def version(self) -> str:
        out = run(
            [SERVE_PYTHON, "-c", "import importlib.metadata as m; print(m.version('mxgate'))"],
            env=mxgate_env(),
        )
        return out.strip()


# -- process accounting ---------------------------------------------------------


def _tree(root: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(root)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(root: int | None) -> float:
    """CPU seconds of a process tree so far: every live process's own and
    reaped-children times (an exited child's times move into its parent's
    children times when it is reaped, so the sum only grows)."""
    if root is None:
        return 0.0
    total = 0.0
    for proc in _tree(root):
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_breakdown(root: int | None) -> dict[str, float]:
    """user and system CPU seconds of a tree (as tree_cpu), and the root's own share."""
    out = {"user": 0.0, "system": 0.0, "root": 0.0}
    if root is None:
        return out
    for proc in _tree(root):
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        out["user"] += t.user + t.children_user
        out["system"] += t.system + t.children_system
        if proc.pid == root:
            out["root"] += t.user + t.system
    return out


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Peak:
    rss: int = 0
    pss: int = 0
    processes: int = 0

    def update(self, rss: int, pss: int | None, n: int) -> None:
        self.rss = max(self.rss, rss)
        if pss is not None:
            self.pss = max(self.pss, pss)
        self.processes = max(self.processes, n)


class StolenTime:
    """The share of the machine's CPU time that the hypervisor gave to other
    guests (``steal`` in /proc/stat) from construction to ``percent()``: a busy
    neighbour shows here, and in every latency measured meanwhile."""

    def __init__(self) -> None:
        self.start = _steal_and_total()

    def percent(self) -> float:
        steal0, total0 = self.start
        steal1, total1 = _steal_and_total()
        return 100.0 * (steal1 - steal0) / max(1, total1 - total0)


def _steal_and_total() -> tuple[int, int]:
    # user nice system idle iowait irq softirq steal (guest time is within user)
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return values[7], sum(values)


@dataclass
class Sampler:
    """Samples the memory of process trees every ``interval`` seconds (PSS every
    ``pss_every``-th time) and keeps the peak of each member and group. A member
    is a root pid and a command-line text whose processes it leaves out:
    PostgreSQL appears once whole and once per gateway without the other
    gateway's backends (``postgres: postgres mail_mxgate ...``)."""

    members: dict[str, tuple[int | None, str | None]]
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    interval: float = 1.0
    pss_every: int = 5
    peaks: dict[str, Peak] = field(default_factory=dict)
    sampling_cpu_s: float = 0.0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def sample(self) -> None:
        t0 = time.thread_time()
        with_pss = self.samples % self.pss_every == 0
        self.samples += 1
        # One pass over /proc for every tree.
        procs: dict[int, tuple[int, str, int]] = {}
        for proc in psutil.process_iter(["ppid", "cmdline", "memory_info"]):
            info = proc.info
            if info["memory_info"] is None:
                continue
            procs[proc.pid] = (
                info["ppid"],
                " ".join(info["cmdline"] or ()) + " ",
                info["memory_info"].rss,
            )
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        pss_cache: dict[int, int] = {}

        def tree(root: int | None) -> list[int]:
            out, stack = [], [root] if root in procs else []
            while stack:
                pid = stack.pop()
                out.append(pid)
                stack.extend(children.get(pid, ()))
            return out

        each: dict[str, tuple[int, int, int]] = {}
        for name, (root, exclude) in self.members.items():
            pids = [p for p in tree(root) if exclude is None or exclude not in procs[p][1]]
            pss = 0
            if with_pss:
                for p in pids:
                    if p not in pss_cache:
                        pss_cache[p] = _pss_kb(p) * 1024
                    pss += pss_cache[p]
            each[name] = (sum(procs[p][2] for p in pids), pss, len(pids))
        for group, names in self.groups.items():
            each[group] = tuple(sum(each[n][i] for n in names) for i in range(3))  # type: ignore[assignment]
        for name, (rss, pss, n) in each.items():
            self.peaks.setdefault(name, Peak()).update(rss, pss if with_pss else None, n)
        self.sampling_cpu_s += time.thread_time() - t0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()


def cpu_of(roots: Iterable[int | None]) -> float:
    return sum(tree_cpu(r) for r in roots)
