"""The courier against Postfix's own test server, smtp-sink(1): a peer we did
not write (its EHLO even ends with an empty "250 " line)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mxgate.core.envelope import Notify
from mxgate.delivery import Courier, StaticResolver, Status

from .util import Results, body, config, envelope, recipients, route, run

SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if os.path.exists("/usr/sbin/smtp-sink") else None
)

pytestmark = pytest.mark.skipif(
    SMTP_SINK is None and not os.environ.get("MXGATE_REQUIRE_TOOLS"),
    reason="smtp-sink (Postfix) is not installed",
)

BODY = b"Subject: sink\r\n\r\n.starts with a dot\r\n..two dots\r\nend\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def smtp_sink(tmp_path: Path, *options: str, unix: bool = False) -> Iterator[tuple[str, Path]]:
    """Run smtp-sink with ``options``; yields (address, dump directory).
    Started and stopped by its own PID."""
    assert SMTP_SINK is not None, "smtp-sink is required (MXGATE_REQUIRE_TOOLS is set)"
    # Run as root, smtp-sink drops privileges to nobody, who must reach the
    # dump directory: pytest's tmp_path (under a 0700 directory) will not do.
    dumps = Path(tempfile.mkdtemp(prefix="mxgate-sink-"))
    dumps.chmod(0o777)
    if unix:
        sock = tmp_path / f"{dumps.name}.sock"
        listen, address = f"unix:{sock}", str(sock)
    else:
        port = free_port()
        listen, address = f"127.0.0.1:{port}", str(port)
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    argv = [SMTP_SINK, *user, "-d", f"{dumps}/%H%M%S.", *options, listen, "10"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(proc, listen)
        yield address, dumps
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(dumps, ignore_errors=True)


def _wait_listening(proc: subprocess.Popen[bytes], listen: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"smtp-sink exited: {proc.stderr.read() if proc.stderr else ''!r}")
        family = socket.AF_UNIX if listen.startswith("unix:") else socket.AF_INET
        target: str | tuple[str, int] = (
            listen[5:] if family == socket.AF_UNIX else ("127.0.0.1", int(listen.split(":")[1]))
        )
        with socket.socket(family) as s:
            try:
                s.connect(target)
                return
            except OSError:
                time.sleep(0.02)
    raise RuntimeError("smtp-sink did not start listening")


def deliver(transport: str, *addresses: str, notify: frozenset[Notify] = frozenset()) -> Results:
    rcpts = recipients(*addresses, notify=notify)

    async def scenario() -> Results:
        courier = Courier(config(), StaticResolver())
        try:
            return await courier.deliver(route(transport), envelope(rcpts), rcpts, body(BODY))
        finally:
            await courier.close()

    return run(scenario())


def dumps_of(directory: Path) -> list[str]:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        files = sorted(directory.iterdir())
        if files:
            return [f.read_text() for f in files]
        time.sleep(0.02)
    return []


def test_delivery_to_smtp_sink(tmp_path: Path) -> None:
    with smtp_sink(tmp_path) as (port, dumps):
        results = deliver(
            f"smtp:[127.0.0.1]:{port}", "a@d.test", "b@d.test", notify=frozenset({Notify.FAILURE})
        )
        assert {r.status for r in results.values()} == {Status.DELIVERED}
        assert results["a@d.test"].dsn  # smtp-sink advertises DSN
        [dump] = dumps_of(dumps)
    assert "X-Rcpt-Args: <a@d.test> NOTIFY=FAILURE ORCPT=rfc822;a@d.test" in dump
    assert "X-Rcpt-Args: <b@d.test> NOTIFY=FAILURE ORCPT=rfc822;b@d.test" in dump
    # smtp-sink un-stuffs the dots and stores LF line ends.
    assert "\nSubject: sink\n\n.starts with a dot\n..two dots\nend\n" in dump


def test_soft_and_hard_rcpt_rejections_without_pipelining(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-r", "RCPT") as (port, _):
        soft = deliver(f"smtp:[127.0.0.1]:{port}", "a@d.test")["a@d.test"]
    with smtp_sink(tmp_path, "-f", "RCPT") as (port, _):
        hard = deliver(f"smtp:[127.0.0.1]:{port}", "a@d.test")["a@d.test"]
    assert soft.status is Status.DEFERRED and soft.reply.line() == "450 4.3.0 Error: command failed"
    assert hard.status is Status.BOUNCED and hard.reply.line() == "500 5.3.0 Error: command failed"
    assert hard.text.endswith("(in reply to RCPT TO command)")


def test_421_after_data_defers(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-Q", "DATA") as (port, _):
        result = deliver(f"smtp:[127.0.0.1]:{port}", "a@d.test")["a@d.test"]
    assert result.status is Status.DEFERRED and result.reply.code == 421


def test_lmtp_over_a_unix_socket_to_smtp_sink(tmp_path: Path) -> None:
    with smtp_sink(tmp_path, "-L", unix=True) as (path, dumps):
        results = deliver(f"lmtp:unix:{path}", "a@d.test", "b@d.test", "c@d.test")
        assert len(dumps_of(dumps)) == 1
    assert {r.status for r in results.values()} == {Status.DELIVERED}
    assert results["a@d.test"].relay_text == f"localhost[{path}]"
