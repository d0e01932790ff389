"""The training run of the profile-guided build (scripts/build_native.py).

Run once against the instrumented build, from the source tree: the compiled
modules count which branches and calls the usual work takes, and the final
build lays out and inlines the code by those counts. The usual work is what
the benchmark measures: SMTP sessions of one message each (EHLO, MAIL, one or
two RCPT, DATA, QUIT) through the worker's ``Session``, committed to the
journal, then the queue manager relaying them to a next hop on loopback, with
a share of refused recipients and a deferral so that those paths are not laid
out as never taken. Nothing is measured; it only has to run the code.

    python scripts/pgo_train.py [-n 1500]     (PYTHONPATH=src)

Loopback only; starts no process.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import tempfile
import time
from pathlib import Path
from typing import cast

import uvloop

from mxgate.core.retry import RetryPolicy
from mxgate.core.routing import RoutingPolicy
from mxgate.core.snapshot import RoutingData
from mxgate.delivery import Courier, CourierConfig, StaticResolver
from mxgate.delivery.bounce import BounceSettings
from mxgate.delivery.scheduler import QueueManager, SchedulerSettings
from mxgate.maillog import MailLog
from mxgate.server.recording import RecordingTransport, loopback_settings
from mxgate.server.session import Session
from mxgate.spool import Spool

BODY = b"Subject: training\r\n\r\n" + (b"x" * 76 + b"\r\n") * 52 + b".\r\n"


class Sink(asyncio.Protocol):
    """A next hop that takes everything (smtp-sink's part), but defers one
    recipient in forty so that the retry path runs too."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.in_data = False
        self.rcpts = 0  # every RCPT seen, for the deferrals
        self.accepted = 0  # in this transaction

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                self.buffer = self.buffer[end + 5 :]
                self.in_data = False
                out.append(b"250 2.0.0 Ok\r\n")
                continue
            line, found, rest = self.buffer.partition(b"\r\n")
            if not found:
                break
            self.buffer = rest
            verb = line[:4].upper()
            if verb == b"EHLO":
                out.append(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 DSN\r\n")
            elif verb in (b"MAIL", b"RSET"):
                self.accepted = 0
                out.append(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                self.rcpts += 1
                if self.rcpts % 40 == 0:
                    out.append(b"451 4.3.0 later\r\n")
                else:
                    self.accepted += 1
                    out.append(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA" and not self.accepted:
                out.append(b"554 5.5.1 no valid recipients\r\n")
            elif verb == b"DATA":
                self.in_data = True
                out.append(b"354 go on\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
            else:
                out.append(b"250 2.0.0 Ok\r\n")
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


def routing_data(port: int) -> RoutingData:
    data = RoutingData()
    data.domains = {"example.com": None}
    data.mailboxes = {"a@example.com": "n", "b@example.com": "n"}
    data.transports = {"example.com": {"": f"smtp:[127.0.0.1]:{port}"}}
    return data


async def receive(spool: Spool, data: RoutingData, log: MailLog, count: int) -> None:
    settings = loopback_settings("mx.train.example", "postmaster@example.com")
    for number in range(count):
        rcpts = [b"RCPT TO:<a@example.com>\r\n"]
        if number % 10 == 0:
            rcpts.append(b"RCPT TO:<nobody@example.com>\r\n")  # refused: unknown user
        if number % 4 == 0:
            rcpts.append(b"RCPT TO:<b@example.com>\r\n")
        commands = [
            b"EHLO client.example\r\n",
            b"MAIL FROM:<s@client.example> SIZE=4096\r\n",
            *rcpts,
            b"DATA\r\n",
            BODY,
            b"QUIT\r\n",
        ]
        transport = RecordingTransport()
        session = Session(settings, lambda: data, spool, log)
        session.connection_made(transport)  # type: ignore[arg-type]
        for chunk in commands:
            replies = len(transport.written)
            session.data_received(chunk)
            if chunk is BODY:
                while len(transport.written) == replies:  # the commit's reply
                    await asyncio.sleep(0)
        session.connection_lost(None)


async def train(count: int, workdir: Path) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Sink, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    data = routing_data(port)
    lines = io.StringIO()
    log = MailLog("mx.train.example", lines)
    ticks: list[tuple[str, int, bool]] = []
    spool = Spool(
        workdir / "spool",
        journal=True,
        notify=lambda *tick: ticks.append(tick),
        quiet=lambda: True,
    )
    spool.prepare_journal()
    try:
        await receive(spool, data, log, count)
        manager = QueueManager(
            spool,
            lambda: data,
            RoutingPolicy(
                myhostname="mx.train.example",
                mynetworks=(),
                local_addresses=(),
                postmaster="postmaster@example.com",
            ),
            Courier(CourierConfig(helo_name="mx.train.example"), StaticResolver()),
            log,
            SchedulerSettings(
                bounce=BounceSettings(
                    hostname="mx.train.example", postmaster="postmaster@example.com"
                ),
                retry=RetryPolicy(),
            ),
        )
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop))
        for segment, end, sealed in ticks:
            if spool.feed_journal(segment, end, sealed):
                manager.journal_news()
            await asyncio.sleep(0)
        deadline = time.monotonic() + 60
        while (manager.in_flight or spool.journal_index.waiting) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await runner
        log.flush()
        if "status=sent" not in lines.getvalue():
            raise SystemExit("pgo_train: nothing was delivered")
    finally:
        spool.close()
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1500, help="sessions")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mxgate-pgo-") as tmp:
        uvloop.run(train(args.n, Path(tmp)))


if __name__ == "__main__":
    main()
