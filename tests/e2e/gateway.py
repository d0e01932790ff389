"""A real ``mxgate serve`` for end-to-end tests, and clients to talk to it.

``Gateway`` writes a TOML settings file under a temporary directory, starts
``python -m mxgate serve --config FILE`` as a subprocess listening on a free
port of 127.0.0.1, waits until the port answers with a greeting, and collects
everything the master and its workers write on stderr (the mail log, unless
``maillog_file`` sends it to a file of its own) in one file the tests read.
It is stopped with SIGTERM to the master's PID, and a clean exit (status 0,
no worker left, no traceback in the log) is asserted; ``kill()`` is the kill
-9 of the crash test.

``mynetworks`` is 127.0.0.1/32 only, so a client bound to 127.0.0.2 (see
``OUTSIDE``) is a client from the internet as far as the gateway knows.

Tests talk to loopback only.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

from mxgate.spool import QueuedMessage, Spool

HOSTNAME = "mx.test.example"
INSIDE = "127.0.0.1"  # in mynetworks
OUTSIDE = "127.0.0.2"  # not in mynetworks: "the internet"
POSTMASTER = "alice@closed.example.net"

SettingValue = str | int | list[str]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((INSIDE, 0))
        return int(sock.getsockname()[1])


_BLACKHOLE: socket.socket | None = None


def blackhole_port() -> int:
    """A port of 127.0.0.1 that refuses every connection, for as long as the tests run.

    The socket is bound but never listens, so nothing else can take the port.
    Every next hop of the e2e gateways points here (transport rows, relayhost,
    the DNS servers): their queue managers try, are refused at once, and defer.
    No test ever sends a packet beyond loopback.
    """
    global _BLACKHOLE
    if _BLACKHOLE is None:
        _BLACKHOLE = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _BLACKHOLE.bind((INSIDE, 0))
    return int(_BLACKHOLE.getsockname()[1])


def toml_line(name: str, value: SettingValue) -> str:
    if isinstance(value, list):
        return f"{name} = [{', '.join(toml_string(item) for item in value)}]"
    if isinstance(value, int):
        return f"{name} = {value}"
    return f"{name} = {toml_string(value)}"


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def child_environment() -> dict[str, str]:
    """Our environment without MXGATE_* variables: the gateway reads only its file.

    (The test runner's own MXGATE_TEST_* switches, for one, are no settings.)
    """
    return {name: value for name, value in os.environ.items() if not name.startswith("MXGATE_")}


class Gateway:
    """One ``mxgate serve`` under ``root`` (settings file, spool, state, log)."""

    def __init__(
        self,
        root: Path,
        database_url: str,
        *,
        workers: int = 1,
        **settings: SettingValue,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.spool_dir = root / "spool"
        self.state_dir = root / "state"
        self.config_path = root / "mxgate.toml"
        self.log_path = root / "mxgate.log"
        self.settings: dict[str, SettingValue] = {
            "listen": [f"{INSIDE}:{self.port}"],
            "mynetworks": [f"{INSIDE}/32"],
            "database_url": database_url,
            "spool_dir": str(self.spool_dir),
            "state_dir": str(self.state_dir),
            "myhostname": HOSTNAME,
            "postmaster": POSTMASTER,
            "workers": workers,
            "relayhost": f"[{INSIDE}]:{blackhole_port()}",
            "dns_nameservers": [f"{INSIDE}:{blackhole_port()}"],
        }
        self.settings.update(settings)
        self.process: subprocess.Popen[bytes] | None = None
        self.environment: dict[str, str] = {}  # added to the master's environment
        self.command_prefix: list[str] = []  # runs serve, e.g. setpriv ... as another user
        self.python = sys.executable
        self.write_config()

    # -- settings ----------------------------------------------------------
    def write_config(self, **changes: SettingValue) -> None:
        """Rewrite the settings file with ``changes`` applied."""
        self.settings.update(changes)
        text = "".join(toml_line(k, v) + "\n" for k, v in self.settings.items())
        self.config_path.write_text(text)

    # -- life cycle ----------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.process is not None, "the gateway is not running"
        return self.process.pid

    def start(self, timeout: float = 30.0, *, log_lines: bool = True) -> None:
        """Start the master and wait until every worker listens and the port
        greets (``log_lines=False``: the mail log is not in a file here, so
        only until the port greets)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        mark = self.log_size()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.command_prefix,
                    *(self.python, "-m", "mxgate", "serve", "--config", str(self.config_path)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**child_environment(), **self.environment},
                cwd=self.root,
            )
        deadline = time.monotonic() + timeout
        workers = self.settings["workers"]
        assert isinstance(workers, int)
        while True:
            code = self.process.poll()
            if code is not None:
                raise AssertionError(
                    f"mxgate serve exited with {code}:\n{self.log(mark)}{self.stderr()}"
                )
            listening = not log_lines or self.log(mark).count("listening on") >= workers
            if listening and self._greets():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"mxgate serve did not start:\n{self.log(mark)}")
            time.sleep(0.05)

    def _greets(self) -> bool:
        try:
            with socket.create_connection((INSIDE, self.port), timeout=5) as sock:
                greeting = sock.recv(1024)
                sock.sendall(b"QUIT\r\n")
                with suppress(OSError):
                    sock.recv(1024)
        except OSError:
            return False
        return greeting.startswith(b"220 ")

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM to the master; assert a clean exit of the master and its workers."""
        workers = self.child_processes()
        self.terminate()
        self.wait_exit(workers, timeout)

    def terminate(self) -> None:
        """kill -TERM the master (and nothing else)."""
        assert self.process is not None, "the gateway is not running"
        self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, workers: list[psutil.Process], timeout: float = 60.0) -> None:
        """Wait for the master to exit after a SIGTERM; assert it exited 0, that
        ``workers`` (taken before the signal) are gone, and no traceback was logged."""
        process = self.process
        assert process is not None, "the gateway was never started"
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"mxgate serve did not exit after SIGTERM:\n{self.log()}"
            ) from None
        alive = wait_gone(workers, 10)
        for worker in alive:
            worker.kill()
        assert code == 0, f"mxgate serve exited with {code}:\n{self.log()}"
        assert not alive, f"workers outlived the master: {alive}"
        assert "Traceback" not in self.log() + self.stderr(), self.log() + self.stderr()

    def kill(self) -> None:
        """kill -9 the workers and the master (only those: found by the master's PID)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        workers = self.child_processes()
        process.kill()  # first the master, so that it cannot restart a worker
        for worker in workers:
            with suppress(psutil.NoSuchProcess):
                worker.kill()
        process.wait(10)
        wait_gone(workers, 10)
        # A killed process shows as a zombie as soon as its main thread is gone,
        # but its files (the spool's flock) stay open until its last thread has
        # left the kernel (one may be inside an fdatasync): wait for that too.
        assert wait_unlocked(self.spool_dir / "lock", 30), "the spool lock outlived kill -9"

    def close(self) -> None:
        """Make sure nothing of ours keeps running (teardown after a failure)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        workers = self.child_processes()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        for worker in wait_gone(workers, 10):
            worker.kill()

    def child_processes(self) -> list[psutil.Process]:
        """The master's child processes (exited ones not reaped yet aside)."""
        try:
            return [child for child in psutil.Process(self.pid).children() if _running(child)]
        except psutil.NoSuchProcess:
            return []

    def worker_processes(self) -> list[psutil.Process]:
        """The SMTP workers: the master's children but the remover helper."""
        return [child for child in self.child_processes() if not _is_helper(child)]

    def helper_processes(self) -> list[psutil.Process]:
        """The queue manager's remover helper (mxgate.delivery.unlinker)."""
        return [child for child in self.child_processes() if _is_helper(child)]

    def worker_pids(self) -> set[int]:
        return {worker.pid for worker in self.worker_processes()}

    def reload(self) -> None:
        """kill -HUP the master."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    # -- the mail log --------------------------------------------------------
    @property
    def mail_log_path(self) -> Path:
        """Where the mail log goes: ``maillog_file``, else stderr's file."""
        value = self.settings.get("maillog_file")
        return Path(value) if isinstance(value, str) and value else self.log_path

    def stderr(self) -> str:
        """What serve wrote on stderr when that is not the mail log ("" else)."""
        if self.mail_log_path == self.log_path or not self.log_path.exists():
            return ""
        return self.log_path.read_text("utf-8", "replace")

    def log_size(self) -> int:
        try:
            return self.mail_log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log(self, since: int = 0) -> str:
        """The mail log, from byte offset ``since`` (a ``log_size()`` taken earlier)."""
        try:
            with self.mail_log_path.open("rb") as handle:
                handle.seek(since)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, since: int = 0, timeout: float = 10.0) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in the log."""
        compiled = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.log(since))
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the log:\n{self.log(since)}")
            time.sleep(0.05)

    # -- the spool -------------------------------------------------------------
    def messages(self) -> dict[str, QueuedMessage]:
        """Every readable message in the spool (read-only; safe while running:
        an open Spool holds the spool lock shared, as the workers do)."""
        with Spool(self.spool_dir) as spool:
            return {
                entry.queue_id: entry.message
                for entry in spool.list_all()
                if entry.message is not None
            }

    def body(self, queue_id: str) -> bytes:
        with Spool(self.spool_dir) as spool, spool.open_body(queue_id) as body:
            return body.read()

    # -- clients ------------------------------------------------------------------
    def smtp(self, source: str = INSIDE, timeout: float = 20.0) -> smtplib.SMTP:
        """An smtplib client connected from ``source`` (greeting read)."""
        return smtplib.SMTP(INSIDE, self.port, source_address=(source, 0), timeout=timeout)

    def raw(self, source: str = INSIDE, timeout: float = 20.0) -> RawClient:
        """A raw socket client connected from ``source`` (greeting not read)."""
        sock = socket.create_connection(
            (INSIDE, self.port), timeout=timeout, source_address=(source, 0)
        )
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return RawClient(sock)


def run_swaks(swaks: str, gateway: Gateway, source: str, *args: str) -> str:
    """swaks against ``gateway`` from ``source`` with ``args``: its transcript
    (what it sent and read, and its complaints)."""
    result = subprocess.run(
        [swaks, "--server", f"{INSIDE}:{gateway.port}", "--local-interface", source, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout + result.stderr


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until ``processes`` have exited; those still running after ``timeout``.

    A zombie counts as exited: a worker whose master is gone is reaped by
    whoever adopts it, whenever that gets round to it.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [process for process in processes if _running(process)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.02)


def wait_unlocked(lock: Path, timeout: float) -> bool:
    """Wait until nobody holds the flock on ``lock``; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
            else:
                return True
    finally:
        os.close(fd)  # also lets go of the lock


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_helper(process: psutil.Process) -> bool:
    try:
        return "mxgate.delivery.unlinker" in process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


@contextmanager
def running_gateway(
    root: Path, database_url: str, *, workers: int = 1, **settings: SettingValue
) -> Iterator[Gateway]:
    """A started gateway, stopped (clean exit asserted) at the end of the block."""
    gateway = Gateway(root, database_url, workers=workers, **settings)
    try:
        gateway.start()
        yield gateway
        gateway.stop()
    finally:
        gateway.close()


# -- the queue tools and waiting ----------------------------------------------


def queue_cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    """``mxgate queue ARGS --config`` of ``gateway``, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mxgate", "queue", *args, "--config", str(gateway.config_path)],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=60,
        check=False,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# -- replies ----------------------------------------------------------------


class Reply:
    """One SMTP reply as read off the wire: code and its lines' texts."""

    def __init__(self, code: int, lines: list[str]) -> None:
        self.code = code
        self.lines = lines

    @property
    def text(self) -> str:
        """The text of a one-line reply (all lines joined by newlines)."""
        return "\n".join(self.lines)

    def __repr__(self) -> str:
        return f"Reply({self.code}, {self.lines!r})"

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def split_reply(data: bytes) -> tuple[Reply, bytes] | None:
    """The first complete reply in ``data`` and the rest, None if incomplete."""
    lines: list[str] = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        line = data[pos:end].decode("utf-8", "replace")
        pos = end + 2
        if len(line) < 3 or not line[:3].isdigit():
            raise AssertionError(f"not an SMTP reply line: {line!r}")
        lines.append(line[4:])
        if line[3:4] != "-":
            return Reply(int(line[:3]), lines), data[pos:]


class RawClient:
    """A socket speaking SMTP by hand: send exact bytes, read whole replies."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock = sock
        self.pending = b""

    def send(self, data: bytes) -> None:
        """Send ``data`` in one write (one segment, when small: pipelining)."""
        self.sock.sendall(data)

    def reply(self) -> Reply:
        """The next reply; AssertionError if the server closes first."""
        while True:
            found = split_reply(self.pending)
            if found is not None:
                reply, self.pending = found
                return reply
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; unparsed {self.pending!r}")
            self.pending += chunk

    def command(self, line: str | bytes) -> Reply:
        data = line.encode() if isinstance(line, str) else line
        self.send(data + b"\r\n")
        return self.reply()

    def replies_until_close(self) -> list[Reply]:
        """Every reply until the server closes the connection."""
        result: list[Reply] = []
        while True:
            found = split_reply(self.pending)
            if found is not None:
                reply, self.pending = found
                result.append(reply)
                continue
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert not self.pending, f"unparsed at close: {self.pending!r}"
                return result
            self.pending += chunk

    def start_tls(self, context: ssl.SSLContext) -> None:
        assert not self.pending, f"bytes read before the handshake: {self.pending!r}"
        self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_tls_context() -> ssl.SSLContext:
    """TLS for a client that does not check the (self-signed) certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- an asyncio client, for many connections at once -----------------------------


class AsyncClient:
    """A minimal SMTP client on asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, source: str = INSIDE) -> AsyncClient:
        reader, writer = await asyncio.open_connection(INSIDE, port, local_addr=(source, 0))
        return cls(reader, writer)

    async def reply(self) -> Reply:
        lines: list[str] = []
        while True:
            raw = await self.reader.readuntil(b"\r\n")
            line = raw[:-2].decode("utf-8", "replace")
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), lines)

    async def command(self, line: str) -> Reply:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def send_message(self, sender: str, recipients: list[str], message: bytes) -> Reply:
        """MAIL, RCPT..., DATA (``message`` must end in CRLF, no line starting with
        a dot); the reply to the end of data, or the first refusal."""
        reply = await self.command(f"MAIL FROM:<{sender}>")
        if reply.code != 250:
            return reply
        for recipient in recipients:
            reply = await self.command(f"RCPT TO:<{recipient}>")
            if reply.code != 250:
                return reply
        reply = await self.command("DATA")
        if reply.code != 354:
            return reply
        self.writer.write(message + b".\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


# -- what the spool should hold -----------------------------------------------------

RECEIVED = re.compile(
    rb"Received: from (?P<helo>\S+) \(unknown \[(?P<ip>[0-9.]+)\]\)\r\n"
    rb"\tby " + re.escape(HOSTNAME.encode()) + rb" \(mxgate\) with (?P<proto>\w+) "
    rb"id (?P<id>\w+)(?:\r\n\tfor <(?P<rcpt>[^>]*)>)?; [^\r\n]+\r\n"
)


def split_received(body: bytes) -> tuple[re.Match[bytes], bytes]:
    """Our Received: header at the start of a spooled body, and what follows it."""
    match = RECEIVED.match(body)
    assert match is not None, f"no Received: header of ours at the start: {body[:300]!r}"
    return match, body[match.end() :]


def final_recipients(message: QueuedMessage) -> list[str]:
    return [recipient.address for recipient in message.envelope.recipients]


def new_messages(before: Mapping[str, QueuedMessage], gateway: Gateway) -> dict[str, QueuedMessage]:
    """The messages in the spool that were not in ``before``."""
    return {qid: msg for qid, msg in gateway.messages().items() if qid not in before}


# -- a database that stops answering ---------------------------------------------------


class StallingProxy:
    """A TCP proxy in front of PostgreSQL on 127.0.0.1 that can stop answering.

    ``stall()``: new connections are accepted and then left unanswered (a
    hung server, or a network that drops packets), so a client waits for its
    own timeout; connections made before keep working.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server((INSIDE, 0))
        self.port = int(self.listener.getsockname()[1])
        self.stalled = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled = True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.stalled:
                continue  # never read, never answered
            server = socket.create_connection(self.upstream)
            self.sockets.append(server)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, target), daemon=True).start()

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with suppress(OSError):
        target.shutdown(socket.SHUT_WR)
