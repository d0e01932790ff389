"""The busy poller over the wire: a worker's listener and sessions on uvloop,
real clients in other processes. A client that answers at once (Postfix's
smtp-source on loopback) opens the window and its commands are caught by
polls; a client that takes milliseconds per command never opens it, so the
loop never spins for it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import uvloop

from mxgate.core.snapshot import RoutingData
from mxgate.maillog import MailLog
from mxgate.server.listener import Listener
from mxgate.server.recording import loopback_settings
from mxgate.server.session import Session
from mxgate.spool import Spool
from tests.e2e.gateway import INSIDE, free_port

LIMIT = 200e-6
SLOW_CLIENT = """
import smtplib, sys, time
port = int(sys.argv[1])
for _ in range(3):
    time.sleep(0.003)
    client = smtplib.SMTP("127.0.0.1", port)
    for command in ("EHLO slow.example", "MAIL FROM:<a@outside.example>",
                    "RCPT TO:<james@server1.example.com>", "RSET", "NOOP"):
        time.sleep(0.003)  # 3 ms per command: far beyond the 200 µs limit
        code, _ = client.docmd(command)
        assert code == 250, (command, code)
    time.sleep(0.003)
    client.quit()
"""


def routing_data() -> RoutingData:
    data = RoutingData()
    data.domains = {"server1.example.com": ""}
    data.mailboxes = {"james@server1.example.com": ""}
    data.transports = {"server1.example.com": {"": "smtp:[127.0.0.1]:9"}}
    return data


async def serve_while(tmp_path: Path, client: list[str], port: int) -> Listener:
    """Run a worker's listener with polling on until ``client`` exits (status 0)."""
    settings = loopback_settings("mx.test.example", "postmaster@server1.example.com")
    data = routing_data()
    log = MailLog("mx.test.example", (tmp_path / "maillog").open("a"))
    with Spool(tmp_path / "spool", journal=True, quiet=lambda: True) as spool:
        listener = Listener(
            [(INSIDE, port)],
            lambda: Session(settings, lambda: data, spool, log),
            hostname="mx.test.example",
            per_client_limit=0,
            log=log,
            busy_poll=LIMIT,
        )
        await listener.start()
        process = await asyncio.create_subprocess_exec(*client)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        await listener.shutdown(5)
    log.flush()
    return listener


def test_a_client_that_answers_at_once_is_polled_for(tmp_path: Path, smtp_source: str) -> None:
    port = free_port()
    client = [smtp_source, "-s", "1", "-m", "200", "-l", "2000"]
    client += ["-f", "a@outside.example", "-t", "james@server1.example.com", f"{INSIDE}:{port}"]
    listener = uvloop.run(serve_while(tmp_path, client, port))
    poller = listener.poller
    assert poller is not None
    # Seven waits per message; polls start once short waits opened the window,
    # and most end with the client's next command, not by running out.
    assert poller.polls > 200
    assert poller.caught > 100
    assert poller.caught + poller.expired <= poller.polls
    assert 0 < poller.polled < 0.5  # at most the 200 µs window per wait
    assert poller.window.seconds > 0
    assert (tmp_path / "maillog").read_text().count("status=") == 0  # no delivery here
    assert (tmp_path / "maillog").read_text().count(": client=") == 200


def test_a_client_milliseconds_away_never_opens_the_window(tmp_path: Path) -> None:
    port = free_port()
    client = [sys.executable, "-c", SLOW_CLIENT, str(port)]
    listener = uvloop.run(serve_while(tmp_path, client, port))
    poller = listener.poller
    assert poller is not None
    assert poller.polls == 0
    assert poller.polled == 0.0
    assert poller.window.seconds == 0.0
