"""What one SMTP session costs mxgate's worker, without the network or the clock's noise.

Runs N sessions in this process through the worker's own ``Session`` (the
protocol, the routing decision, the Received: header, the journal commit with
its fdatasync, the mail log), each as a c=1 client would: connect, EHLO,
MAIL, one RCPT to a relay recipient of the tutorial's data, DATA with a
4 KiB body, QUIT. The transport is an in-memory stand-in, so no socket, no
scheduler placement and no other process is measured: only the worker's own
work on the serial path of one session.

    python bench/session_cost.py [-n 3000]          # microseconds per step
    python bench/session_cost.py --callgrind [-n 300]

``--callgrind`` runs itself twice under ``valgrind --tool=callgrind`` (n and
2n sessions, counting only inside the event loop) and prints the difference
divided by n: instructions per session, which do not depend on what else the
machine is doing (the same count twice on a busy shared VM). Compare trees
with it where a throughput A/B drowns in noise. Uses the compiled modules
when they are built (scripts/build-native). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import uvloop
from instructions import per_unit

from mxgate.core.snapshot import RoutingData
from mxgate.maillog import open_mail_log
from mxgate.server.recording import RecordingTransport, loopback_settings
from mxgate.server.session import Session
from mxgate.spool import Spool

BODY = b"Subject: cost\r\n\r\n" + (b"x" * 76 + b"\r\n") * 52 + b".\r\n"
COMMANDS = (
    b"EHLO client.example\r\n",
    b"MAIL FROM:<s@bench.example>\r\n",
    b"RCPT TO:<david@server1.example.com>\r\n",
    b"DATA\r\n",
    BODY,
    b"QUIT\r\n",
)
STEPS = ("connect", "EHLO", "MAIL", "RCPT", "DATA", "body + dot", "QUIT")


def routing_data() -> RoutingData:
    """The tutorial's example rows (SPEC section 2), as the loader stores them."""
    data = RoutingData()
    data.domains = {"server1.example.com": "", "other.example.com": ""}
    data.mailboxes = {"james@server1.example.com": ""}
    data.relays = {"david@server1.example.com": "", "@other.example.com": ""}
    data.forwards = {"@server1.example.com": ("james@example.com",)}
    data.transports = {"server1.example.com": {"": "smtp:[10.0.0.2]"}}
    return data


async def run(count: int, workdir: Path) -> list[float]:
    log, _ = open_mail_log("mx.bench.example", str(workdir / "maillog"), None, "")
    settings = loopback_settings("mx.bench.example", "postmaster@bench.example")
    snapshot = routing_data()
    # One client at a time: the journal's fdatasync runs inline, as in serve.
    spool = Spool(workdir / "spool", journal=True, quiet=lambda: True)
    spool.prepare_journal()
    totals = [0] * len(STEPS)
    try:
        for _ in range(count):
            transport = RecordingTransport()
            session = Session(settings, lambda: snapshot, spool, log)
            start = time.perf_counter_ns()
            session.connection_made(transport)  # type: ignore[arg-type]
            totals[0] += time.perf_counter_ns() - start
            for step, data in enumerate(COMMANDS, start=1):
                replies = len(transport.written)
                start = time.perf_counter_ns()
                session.data_received(data)
                if data is COMMANDS[-1]:
                    session.connection_lost(None)
                else:
                    while len(transport.written) == replies:  # the commit's reply
                        await asyncio.sleep(0)
                totals[step] += time.perf_counter_ns() - start
            if not b"".join(transport.written).endswith(b"221 2.0.0 Bye\r\n"):
                raise SystemExit(f"unexpected replies: {b''.join(transport.written)!r}")
    finally:
        spool.close()
        log.flush()
    return [total / count / 1000 for total in totals]


def callgrind(count: int) -> None:
    per_session = per_unit(__file__, count)
    print(f"{per_session:,.0f} instructions per session ({count} and {2 * count} sessions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=None, help="sessions (3000; 300 with --callgrind)")
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    args = parser.parse_args()
    if args.callgrind:
        callgrind(args.n or 300)
        return
    with tempfile.TemporaryDirectory(prefix="mxgate-cost-") as tmp:
        steps = uvloop.run(run(args.n or 3000, Path(tmp)))
    print(", ".join(f"{name} {us:.1f}" for name, us in zip(STEPS, steps, strict=True)), end="")
    print(f"; total {sum(steps):.1f} µs per session (pid {os.getpid()})")


if __name__ == "__main__":
    main()
