"""sd_notify as systemd receives it: datagrams on a real AF_UNIX socket."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxgate import sdnotify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def test_one_datagram_with_every_assignment(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1", "STATUS=1 SMTP worker(s) listening")
    assert sock.recv(4096) == b"READY=1\nSTATUS=1 SMTP worker(s) listening"


def test_an_abstract_socket_named_with_at(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"mxgate-unit-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.reloading()
        fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0


def test_nowhere_to_send_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))  # the manager went away
    assert not sdnotify.notify("READY=1")


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("0", None, None),
        ("junk", None, None),
        ("1000000", None, 0.5),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),  # the watchdog is another process's
    ],
)
def test_watchdog_interval(
    usec: str | None,
    pid: str | None,
    expected: float | None,
    receiver: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", receiver[1])
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            own = str(os.getpid())
            monkeypatch.setenv(name, {"self": own, "other": own + "1"}.get(value, value))
    assert sdnotify.watchdog_interval() == expected


def test_no_watchdog_without_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert sdnotify.watchdog_interval() is None
