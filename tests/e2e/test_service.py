"""Running as a service: systemd's notify protocol, the mail log in a file,
no root, and the unit file of contrib/systemd.

The service manager's end of ``sd_notify`` is a real datagram socket here (an
abstract one, as systemd may pass), read the way systemd reads it.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest

from tests.e2e.gateway import (
    INSIDE,
    OUTSIDE,
    Gateway,
    StallingProxy,
    child_environment,
    running_gateway,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "systemd" / "mxgate.service"
MESSAGE = b"Subject: service\r\n\r\nHello.\r\n"


class ServiceManager:
    """The receiving end of sd_notify: every datagram, as KEY=value dicts."""

    def __init__(self) -> None:
        self.name = f"mxgate-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.received: list[tuple[float, dict[str, str]]] = []  # arrival, message

    @property
    def address(self) -> str:
        return "@" + self.name  # how systemd names an abstract socket in NOTIFY_SOCKET

    def next(self, timeout: float = 30.0) -> tuple[float, dict[str, str]]:
        """The oldest message not taken yet, with when it arrived."""
        if not self.received:
            self.sock.settimeout(timeout)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                raise AssertionError("serve said nothing") from None
            lines = data.decode().splitlines()
            self.received.append((time.monotonic(), dict(line.split("=", 1) for line in lines)))
        return self.received.pop(0)

    def wait_for(self, key: str, value: str | None = None, timeout: float = 30.0) -> dict[str, str]:
        """The first message that sets ``key`` (to ``value``); consumed, with
        those before it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {key}={value or '*'} from serve")
            try:
                _, message = self.next(left)
            except AssertionError:
                continue
            if key in message and (value is None or message[key] == value):
                return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager() -> Iterator[ServiceManager]:
    listening = ServiceManager()
    yield listening
    listening.close()


def send(gateway: Gateway, recipient: str = "james@server1.example.com") -> str:
    with gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.example.org")
        client.mail("someone@example.org")
        code, text = client.rcpt(recipient)
        assert code == 250, text
        code, text = client.data(MESSAGE)
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def test_serve_tells_systemd_ready_reloading_stopping_and_feeds_the_watchdog(
    tmp_path: Path, e2e_database: str, manager: ServiceManager
) -> None:
    """Type=notify: READY=1 only once the workers listen, RELOADING=1 then
    READY=1 around SIGHUP, STOPPING=1 on SIGTERM; WATCHDOG=1 at half of
    WATCHDOG_USEC; the workers do not inherit the manager's variables."""
    gateway = Gateway(tmp_path / "gw", e2e_database)
    gateway.environment = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"}
    try:
        gateway.start()
        ready = manager.wait_for("READY", "1")
        assert ready["STATUS"] == "1 SMTP worker(s) listening"
        # The watchdog is fed about every 0.5 s while the master's loop turns.
        first = time.monotonic()
        manager.wait_for("WATCHDOG", "1", timeout=5)
        manager.wait_for("WATCHDOG", "1", timeout=5)
        assert time.monotonic() - first < 4
        for worker in gateway.worker_processes():
            inherited = worker.environ()
            assert not {"NOTIFY_SOCKET", "WATCHDOG_USEC"} & inherited.keys()

        gateway.reload()
        reloading = manager.wait_for("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert manager.wait_for("READY", "1")["STATUS"] == "1 SMTP worker(s) listening"
        send(gateway)

        workers = gateway.child_processes()
        gateway.terminate()
        manager.wait_for("STOPPING", "1")
        gateway.wait_exit(workers)
    finally:
        gateway.close()


def test_the_watchdog_is_fed_while_a_reload_waits_for_a_hung_database(
    tmp_path: Path, e2e_database: str, manager: ServiceManager
) -> None:
    """The watchdog proves the master's loop turns, not that reloads are
    quick: while the new worker of a reload waits for a database that stopped
    answering (its connect timeout, seconds), WATCHDOG=1 keeps coming at half
    of WATCHDOG_USEC, so systemd does not kill a healthy gateway."""
    parts = urlsplit(e2e_database)
    assert parts.hostname is not None and parts.port is not None
    proxy = StallingProxy((parts.hostname, parts.port))
    netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
    gateway = Gateway(tmp_path / "gw", urlunsplit(parts._replace(netloc=netloc)))
    gateway.environment = {"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": "1000000"}
    try:
        gateway.start()
        manager.wait_for("READY", "1")
        wait_until(lambda: (gateway.state_dir / "snapshot.cache").exists())
        proxy.stall()
        gateway.reload()
        manager.wait_for("RELOADING", "1")
        began = time.monotonic()
        fed = [began]
        while True:
            arrival, message = manager.next(timeout=60)
            if message.get("WATCHDOG") == "1":
                fed.append(arrival)
            if message.get("READY") == "1":
                break
        assert arrival - began > 3, "the reload did not wait for the database"
        gaps = [later - earlier for earlier, later in itertools.pairwise(fed)]
        assert max(gaps) < 0.9, gaps  # WatchdogSec=1s would not have fired
        gateway.stop()
    finally:
        gateway.close()
        proxy.close()


def test_serve_says_nothing_without_notify_socket(tmp_path: Path, e2e_database: str) -> None:
    """Not under systemd (no NOTIFY_SOCKET): serve runs as ever, and a
    NOTIFY_SOCKET whose manager is gone does not stop it either."""
    gateway = Gateway(tmp_path / "gw", e2e_database)
    gateway.environment = {"NOTIFY_SOCKET": "@mxgate-test-nobody-listens-" + uuid.uuid4().hex}
    try:
        gateway.start()
        send(gateway)
        gateway.stop()
    finally:
        gateway.close()


def test_the_mail_log_goes_to_maillog_file_and_follows_a_rotation(
    tmp_path: Path, e2e_database: str, manager: ServiceManager
) -> None:
    """maillog_file: the master's and the workers' lines in the file, none on
    stderr; after a rotation that renames the file, SIGHUP sends both to the
    new file; changing maillog_file needs a restart (the reload is refused)."""
    logfile = tmp_path / "mail.log"
    gateway = Gateway(tmp_path / "gw", e2e_database, maillog_file=str(logfile))
    gateway.environment = {"NOTIFY_SOCKET": manager.address}
    try:
        gateway.start()
        manager.wait_for("READY", "1")
        first = send(gateway)
        # Delivery is deferred (the relayhost refuses): a line of the master's.
        gateway.wait_for_log(rf"{first}: to=<james@server1.example.com>.*status=deferred")
        text = logfile.read_text()
        assert "mxgate/smtpd[" in text and f"{first}: client=" in text
        assert f"{first}: from=<someone@example.org>" in text
        assert "connect from" not in gateway.log_path.read_text()
        assert oct(logfile.stat().st_mode & 0o777) == "0o640"

        logfile.rename(tmp_path / "mail.log.1")
        old = gateway.worker_pids()
        gateway.reload()
        manager.wait_for("RELOADING", "1")
        manager.wait_for("READY", "1")
        # READY=1 comes once the new workers listen; the old one, told to
        # drain, may still take a connection from the shared socket until it
        # has handled that signal, and writes to the file it has open.
        wait_until(lambda: not (old & gateway.worker_pids()), timeout=30)
        second = send(gateway)
        gateway.wait_for_log(rf"{second}: to=<james@server1.example.com>.*status=deferred")
        rotated, fresh = (tmp_path / "mail.log.1").read_text(), logfile.read_text()
        assert f"{second}: client=" in fresh and f"{second}: client=" not in rotated
        assert f"{first}: client=" in rotated and f"{first}: client=" not in fresh

        gateway.write_config(maillog_file=str(tmp_path / "elsewhere.log"))
        gateway.reload()
        manager.wait_for("READY", "1")
        wait_until(lambda: "mail log's destination changed" in gateway.log_path.read_text())
        gateway.write_config(maillog_file=str(logfile))
        gateway.stop()
    finally:
        gateway.close()


def test_logrotate_copytruncate_of_the_running_gateway(
    tmp_path: Path, e2e_database: str, logrotate: str
) -> None:
    """contrib/logrotate/mxgate, run by logrotate itself on a gateway that is
    logging: the lines before the rotation are in mail.log.1, the next ones
    start the emptied mail.log (O_APPEND: no hole of NULs where the old end
    was), and no signal was needed."""
    logfile = tmp_path / "mail.log"
    config = (REPO / "contrib" / "logrotate" / "mxgate").read_text()
    assert "/var/log/mxgate/mail.log {" in config
    rotation = tmp_path / "logrotate.conf"
    rotation.write_text(
        config.replace("/var/log/mxgate/mail.log", str(logfile))
        .replace("    su mxgate mxgate\n", "")
        .replace("    delaycompress\n", "")
        .replace("    compress\n", "")
    )
    with running_gateway(tmp_path / "gw", e2e_database, maillog_file=str(logfile)) as gateway:
        first = send(gateway)
        gateway.wait_for_log(rf"{first}: to=<james@server1\.example\.com>.*status=deferred")
        workers = gateway.worker_pids()
        subprocess.run(
            [logrotate, "--force", "--state", str(tmp_path / "state"), str(rotation)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        second = send(gateway)
        gateway.wait_for_log(rf"{second}: to=<james@server1\.example\.com>.*status=deferred")
        assert gateway.worker_pids() == workers  # no reload
    rotated, fresh = (tmp_path / "mail.log.1").read_bytes(), logfile.read_bytes()
    assert f"{first}: client=".encode() in rotated
    assert f"{second}: client=".encode() in fresh and f"{first}: ".encode() not in fresh
    assert b"\0" not in fresh  # a writer without O_APPEND would leave a hole here
    assert re.match(rb"\w{3} [ \d]\d \d\d:\d\d:\d\d mx mxgate/", fresh), fresh[:100]


def test_a_maillog_file_gone_at_a_reload_sends_the_new_workers_to_stderr(
    tmp_path: Path, e2e_database: str
) -> None:
    """The directory of maillog_file removed under a running gateway: at the
    next reload the new worker cannot open the file and says so, and its
    lines go to stderr rather than nowhere, also when syslog (with no daemon
    listening here) is the other destination; the master keeps its file."""
    logs = tmp_path / "logs"
    logs.mkdir()
    gateway = Gateway(
        tmp_path / "gw",
        e2e_database,
        maillog_file=str(logs / "mail.log"),
        syslog_facility="mail",
        syslog_socket=str(tmp_path / "no-syslog-here"),
    )
    try:
        gateway.start()
        shutil.rmtree(logs)
        old = gateway.worker_pids()
        gateway.reload()
        wait_until(lambda: "cannot open maillog_file" in gateway.log_path.read_text())
        wait_until(lambda: "reload: new worker(s)" in gateway.log_path.read_text())
        wait_until(lambda: not (old & gateway.worker_pids()), timeout=30)  # as above
        queue_id = send(gateway)
        wait_until(lambda: f"{queue_id}: client=" in gateway.log_path.read_text())
        gateway.stop()
    finally:
        gateway.close()


def test_serve_refuses_a_maillog_file_it_cannot_open(tmp_path: Path, e2e_database: str) -> None:
    gateway = Gateway(tmp_path / "gw", e2e_database, maillog_file=str(tmp_path / "no" / "mail.log"))
    result = subprocess.run(
        [sys.executable, "-m", "mxgate", "serve", "--config", str(gateway.config_path)],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"mxgate: cannot open maillog_file {tmp_path / 'no' / 'mail.log'}: "
        "No such file or directory"
    )


def test_the_mail_log_goes_to_syslog_as_postfix_sends_it(e2e_database: str) -> None:
    """syslog_facility = "mail": every process sends each line as one datagram
    to the syslog socket, facility mail, tagged mxgate/<agent>[pid], as
    Postfix's daemons do (rsyslog files them into mail.log, journald under
    their tags); nothing of the mail log on stderr."""
    where = Path(tempfile.mkdtemp(prefix="mxgate-syslog-"))  # AF_UNIX paths are short
    daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    daemon.bind(str(where / "log"))
    daemon.settimeout(20)
    received: list[str] = []

    def wait_line(pattern: str) -> str:
        compiled = re.compile(pattern)
        while True:
            for line in received:
                if compiled.search(line):
                    return line
            received.append(daemon.recv(65536).decode())

    gateway = Gateway(
        where / "gw", e2e_database, syslog_facility="mail", syslog_socket=str(where / "log")
    )
    try:
        gateway.start(log_lines=False)
        wait_line(r"^<22>\w{3} [ \d]\d \d\d:\d\d:\d\d mxgate/master\[\d+\]: listening on ")
        queue_id = send(gateway)
        worker = gateway.worker_processes()[0].pid
        assert wait_line(rf"mxgate/smtpd\[{worker}\]: {queue_id}: client=unknown\[127\.0\.0\.2\]$")
        assert wait_line(
            rf"^<22>.* mxgate/qmgr\[{worker}\]: {queue_id}: from=<someone@example.org>"
        )
        # The master's delivery attempt (the relayhost refuses: deferred).
        deferred = wait_line(rf"mxgate/\w+\[{gateway.pid}\]: {queue_id}: to=<james@")
        assert "status=deferred" in deferred
        gateway.stop()
        assert "connect from" not in gateway.log_path.read_text()
    finally:
        gateway.close()
        daemon.close()
        shutil.rmtree(where, ignore_errors=True)


# fail2ban's stock Postfix filter, told our program name: what README.md gives.
FAIL2BAN_FILTER = r'postfix[_daemon="mxgate/\w+"]'


def test_fail2ban_finds_the_attackers_in_the_mail_log(
    tmp_path: Path, e2e_database: str, fail2ban_regex: str
) -> None:
    """SPEC section 11: fail2ban keeps working. Its own postfix filter, with
    mxgate's program name, finds each refused recipient of a client from
    the internet (unknown user, relay attempt) and nothing of accepted mail."""
    logfile = tmp_path / "mail.log"
    with running_gateway(tmp_path / "gw", e2e_database, maillog_file=str(logfile)) as gateway:
        send(gateway)
        with gateway.smtp(OUTSIDE) as client:
            client.ehlo("client.example.org")
            client.mail("a@example.org")
            for name in ("nobody", "admin"):
                assert client.rcpt(f"{name}@closed.example.net")[0] == 550
            assert client.rcpt("someone@elsewhere.example")[0] == 554
        send(gateway)
        gateway.wait_for_log(r"disconnect from unknown\[127\.0\.0\.2\] .*rcpt=0/3")
    result = subprocess.run(
        [fail2ban_regex, "-o", "ip", str(logfile), FAIL2BAN_FILTER],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.split() == [OUTSIDE] * 3, result.stdout + result.stderr


# -- no root -------------------------------------------------------------------


def _unprivileged() -> tuple[list[str], str, dict[str, str]]:
    """How to run serve as nobody with only CAP_NET_BIND_SERVICE (what the
    unit's User= and AmbientCapabilities= give): the setpriv prefix, a Python
    that nobody may execute (serve runs its workers with the same one), and the
    environment that finds this checkout's packages. Skips where there is none:
    a virtual environment whose interpreter lives under a home closed to
    other users (pyenv under /root) cannot be run by them, so the same Python
    version installed system-wide is tried too."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv (util-linux) to become another user")
    prefix = [
        setpriv,
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=+net_bind_service",
        "--ambient-caps=+net_bind_service",
    ]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    environment = {
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), sysconfig.get_paths()["purelib"]])
    }
    # What serve does: start another interpreter like itself, which imports mxgate.
    probe = (
        "import subprocess, sys; "
        f"assert sys.version.startswith('{version}.'); "
        "sys.exit(subprocess.call([sys.executable, '-c', 'import mxgate, uvloop, asyncpg']))"
    )
    tried = []
    for python in (sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"):
        run = subprocess.run(
            [*prefix, python, "-c", probe],
            capture_output=True,
            timeout=60,
            env={**child_environment(), **environment},
            cwd="/",
        )
        if run.returncode == 0:
            return prefix, python, environment
        tried.append(f"{python}: {run.stderr.decode()[-200:]}")
    pytest.skip("no Python that nobody may run: " + "; ".join(tried))


def _port_25_free() -> bool:
    with socket.socket() as sock:
        # As serve binds: connections of an earlier test in TIME_WAIT are no listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((INSIDE, 25))
        except OSError:
            return False
    return True


def test_serve_runs_as_its_own_user_on_port_25(e2e_database: str) -> None:
    """As the unit runs it: an unprivileged user with CAP_NET_BIND_SERVICE
    alone listens on port 25, takes mail into a spool it owns, and stops
    cleanly; no process of serve runs as root."""
    prefix, python, environment = _unprivileged()
    if not _port_25_free():
        pytest.skip(f"port 25 of {INSIDE} is in use")
    nobody = pwd.getpwnam("nobody")
    # Not under pytest's tmp_path: its parents are closed to other users.
    root = Path(tempfile.mkdtemp(prefix="mxgate-nobody-"))
    try:
        os.chmod(root, 0o755)
        gateway = Gateway(root / "gw", e2e_database)
        gateway.port = 25
        gateway.write_config(listen=[f"{INSIDE}:25"])
        for path in (root / "gw", root / "gw" / "mxgate.toml"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        gateway.command_prefix, gateway.python = prefix, python
        # systemd sets HOME to User='s home; ours (/root) is closed to nobody,
        # and libpq-style clients look there for client certificates.
        gateway.environment = {**environment, "HOME": str(root)}
        try:
            gateway.start()
            assert "warning: running as root" not in gateway.log()
            processes = [psutil.Process(gateway.pid), *gateway.child_processes()]
            assert {process.uids().effective for process in processes} == {nobody.pw_uid}
            queue_id = send(gateway)
            gateway.wait_for_log(rf"{queue_id}: to=<james@server1.example.com>.*status=deferred")
            owners = {path.stat().st_uid for path in gateway.spool_dir.rglob("*")}
            assert owners == {nobody.pw_uid}
            assert queue_id in gateway.messages()
            gateway.stop()
        finally:
            gateway.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- the unit file -------------------------------------------------------------


def test_the_systemd_unit_is_valid(tmp_path: Path, systemd_analyze: str) -> None:
    """systemd itself parses contrib/systemd/mxgate.service without a word of
    complaint (with ExecStart pointed at this checkout's mxgate), and the unit
    asks for what serve gives it."""
    text = UNIT.read_text()
    mxgate = Path(sys.executable).with_name("mxgate")
    assert mxgate.exists(), mxgate
    unit = tmp_path / "mxgate.service"
    unit.write_text(text.replace("/opt/mxgate/.venv/bin/mxgate", str(mxgate)))
    result = subprocess.run(
        [systemd_analyze, "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    complaint = subprocess.run(
        [systemd_analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert "notifyy" in complaint.stdout + complaint.stderr  # the check can fail
    for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "User=mxgate"):
        assert line in text.splitlines()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in text
