"""What one message costs mxgate's queue manager, without the clock's noise.

The counterpart of session_cost.py for the master: N messages (4 KiB, one
recipient) are first written into a journal segment as a worker writes them
(not measured), then handed to the queue manager one at a time, as at c=1:
the journal tick, the scan and claim, the record's decoding, the route, the
SMTP transaction with the next hop (Postfix's ``smtp-sink`` on loopback,
one cached connection, as in the benchmark), the mail log line and the
removal from the journal. Each message is delivered before the next tick.

    python bench/delivery_cost.py [-n 2000]          # microseconds per message
    python bench/delivery_cost.py --callgrind [-n 200]

``--callgrind`` runs itself twice under ``valgrind --tool=callgrind`` (n and
2n messages, counting only inside uvloop's run, so not the journal writing
done before it under asyncio's own loop) and prints the difference divided
by n: instructions per message, the same count on a busy machine. The sink
is a separate process and is not counted. Uses the compiled modules when
they are built (scripts/build-native). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import uvloop
from instructions import per_unit

from mxgate.core.envelope import Envelope, Recipient
from mxgate.core.retry import RetryPolicy
from mxgate.core.routing import RoutingPolicy
from mxgate.core.snapshot import RoutingData
from mxgate.delivery import Courier, CourierConfig, StaticResolver
from mxgate.delivery.bounce import BounceSettings
from mxgate.delivery.scheduler import QueueManager, SchedulerSettings
from mxgate.maillog import MailLog
from mxgate.spool import Spool

BODY = b"Received: from client.example\r\nSubject: cost\r\n\r\n" + (b"x" * 76 + b"\r\n") * 52
Tick = tuple[str, int, bool]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def routing_data(port: int) -> RoutingData:
    data = RoutingData()
    data.domains = {"example.com": None}
    data.mailboxes = {"a@example.com": "n"}
    data.transports = {"example.com": {"": f"smtp:[127.0.0.1]:{port}"}}
    return data


async def write_journal(root: Path, count: int) -> list[Tick]:
    """The worker's part, one commit at a time: a tick per message."""
    ticks: list[Tick] = []
    with Spool(root, journal=True, notify=lambda *tick: ticks.append(tick)) as gateway:
        for _ in range(count):
            with gateway.begin() as writer:
                writer.write(BODY)
                await writer.commit(
                    Envelope(
                        queue_id=writer.queue_id,
                        sender="s@example.org",
                        arrival=time.time(),
                        client_address="192.0.2.7",
                        client_helo="client.example",
                        client_hostname="unknown",
                        size=len(BODY),
                        recipients=(Recipient("a@example.com", "a@example.com"),),
                        # As the worker stores it: CRLF only, no line with a dot.
                        plain_body=True,
                    )
                )
    # One per commit, and one more when the segment is sealed at close.
    return ticks


async def deliver(root: Path, ticks: list[Tick], port: int) -> tuple[float, float, int]:
    """The queue manager's part: seconds for all messages (wall, CPU of this
    process's threads), and how many were sent."""
    data = routing_data(port)
    log = io.StringIO()
    with Spool(root) as spool:
        manager = QueueManager(
            spool,
            lambda: data,
            RoutingPolicy(
                myhostname="mx.bench.example",
                mynetworks=(),
                local_addresses=(),
                postmaster="postmaster@example.com",
            ),
            Courier(CourierConfig(helo_name="mx.bench.example"), StaticResolver()),
            MailLog("mx.bench.example", log),
            SchedulerSettings(
                bounce=BounceSettings(
                    hostname="mx.bench.example", postmaster="postmaster@example.com"
                ),
                retry=RetryPolicy(),
            ),
        )
        stop = asyncio.Event()
        runner = asyncio.create_task(manager.run(stop))
        started = time.perf_counter()
        cpu = time.process_time()
        for segment, end, sealed in ticks:
            if spool.feed_journal(segment, end, sealed):
                manager.journal_news()
            # Its scan starts the delivery within a turn or two of the loop;
            # then wait for it without spinning (a busy wait would be counted).
            for _ in range(100):
                if manager.in_flight or not spool.journal_index.waiting:
                    break
                await asyncio.sleep(0)
            # Awaiting the task itself: asyncio.wait is interpreted Python
            # (a set, a future and a callback per call), which this count
            # would otherwise add to the queue manager's.
            while manager.in_flight:
                await next(iter(manager.in_flight.values()))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        stop.set()
        await runner
    sent = log.getvalue().count("status=sent")
    return elapsed, cpu, sent


def measure(count: int) -> tuple[float, float]:
    port = free_port()
    sink = subprocess.Popen(
        ["smtp-sink", "-u", os.environ.get("USER", "nobody"), "-c", f"127.0.0.1:{port}", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):  # until it listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        with tempfile.TemporaryDirectory(prefix="mxgate-dcost-") as tmp:
            root = Path(tmp) / "spool"
            ticks = asyncio.run(write_journal(root, count))
            elapsed, cpu, sent = uvloop.run(deliver(root, ticks, port))
            if sent != count:
                raise SystemExit(f"{sent} of {count} messages sent")
            return elapsed, cpu
    finally:
        sink.terminate()
        sink.wait()


def callgrind(count: int) -> None:
    per_message = per_unit(__file__, count)
    print(f"{per_message:,.0f} instructions per message ({count} and {2 * count} messages)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="messages (2000; 200 with --callgrind)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    args = parser.parse_args()
    if shutil.which("smtp-sink") is None:
        raise SystemExit("needs Postfix's smtp-sink (apt-get install postfix)")
    if args.callgrind:
        callgrind(args.n or 200)
        return
    count = args.n or 2000
    elapsed, cpu = measure(count)
    print(
        f"{elapsed / count * 1e6:.1f} µs per message, {cpu / count * 1e6:.1f} µs of CPU"
        f" (this process; the sink apart), {count} messages (pid {os.getpid()})"
    )


if __name__ == "__main__":
    main()
