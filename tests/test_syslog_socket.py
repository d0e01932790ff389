"""The mail log to the local syslog daemon: datagrams as syslog(3) writes them,
received on a real AF_UNIX socket, as rsyslog or journald receive them."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxgate.maillog import MailLog, MaillogFile
from mxgate.syslog_socket import SyslogSocket, facility_code

STAMP = "Dec  2 15:04:05"


class Daemon:
    """The syslog daemon's end: a bound datagram socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(5)

    def receive(self) -> str:
        return self.sock.recv(65536).decode()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    listening = Daemon(tmp_path / "log")
    yield listening
    listening.close()


def test_a_line_is_one_datagram_with_facility_severity_and_tag(daemon: Daemon) -> None:
    out = SyslogSocket(facility_code("mail"), str(daemon.path))
    assert out.send(STAMP, "mxgate/smtpd[42]", "connect from unknown[192.0.2.7]")
    assert daemon.receive() == f"<22>{STAMP} mxgate/smtpd[42]: connect from unknown[192.0.2.7]"
    # Postfix's warnings and fatal errors keep their severity.
    out.send(STAMP, "mxgate/smtpd[42]", "warning: hostname nonexistent.example does not resolve")
    assert daemon.receive().startswith("<20>")
    out.send(STAMP, "mxgate/master[1]", "fatal: cannot listen")
    assert daemon.receive().startswith("<18>")
    local3 = SyslogSocket(facility_code("LOCAL3"), str(daemon.path))
    local3.send(STAMP, "mxgate/qmgr[1]", "ABC: removed")
    assert daemon.receive().startswith("<158>")  # 19 * 8 + 6
    out.close()
    local3.close()


def test_no_daemon_drops_the_line_and_a_daemon_that_returns_is_found(tmp_path: Path) -> None:
    path = tmp_path / "log"
    out = SyslogSocket(2, str(path))
    assert not out.reachable()
    assert not out.send(STAMP, "mxgate/smtpd[1]", "lost")
    for text in ("found", "after the restart"):
        daemon = Daemon(path)
        try:
            assert out.send(STAMP, "mxgate/smtpd[1]", text)
            assert daemon.receive().endswith(f": {text}")
        finally:
            daemon.close()  # the second round: as a daemon that restarted
        # Gone (or restarting): the old socket is gone; a new one gets the same name.
        assert not out.send(STAMP, "mxgate/smtpd[1]", "while it is away")
    out.close()


def test_facility_names() -> None:
    assert facility_code("mail") == 2 and facility_code("local7") == 23
    with pytest.raises(ValueError, match="'mial' is not a syslog facility"):
        facility_code("mial")


def test_mail_log_to_syslog_alone_writes_nothing_on_stderr(
    daemon: Daemon, capsys: pytest.CaptureFixture[str]
) -> None:
    log = MailLog("mx.example.net", syslog=SyslogSocket(2, str(daemon.path)))
    log.connect("unknown[192.0.2.7]")
    log.queued("ABCDEF", "a@example.org", 1234, 1)
    first, second = daemon.receive(), daemon.receive()
    assert first.startswith("<22>") and first.endswith("connect from unknown[192.0.2.7]")
    assert "mxgate/smtpd[" in first and "mxgate/qmgr[" in second
    assert second.endswith("ABCDEF: from=<a@example.org>, size=1234, nrcpt=1 (queue active)")
    assert capsys.readouterr().err == ""


def test_mail_log_to_a_file_and_syslog(daemon: Daemon, tmp_path: Path) -> None:
    target = MaillogFile(str(tmp_path / "mail.log"))
    log = MailLog("mx.example.net", target, SyslogSocket(2, str(daemon.path)))
    log.removed("ABCDEF")
    target.close()
    line = daemon.receive()
    assert line.startswith("<22>") and "mxgate/qmgr[" in line and line.endswith(": ABCDEF: removed")
    assert (tmp_path / "mail.log").read_text().endswith(": ABCDEF: removed\n")


def test_stderr_stays_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    MailLog("mx.example.net").removed("ABCDEF")
    assert capsys.readouterr().err.endswith(": ABCDEF: removed\n")
    assert isinstance(MailLog("mx.example.net", io.StringIO()).stream, io.StringIO)
