"""The floor: the least a durable SMTP receiver in Python can do per message.

A bare uvloop ``asyncio.Protocol`` that answers every command with a fixed
reply (no parsing beyond finding line ends, no routing, no logging, no queue
manager) and, with ``--sync fdatasync``, writes each message into a
pre-zeroed file and fdatasyncs it before the 250 (one message per fdatasync:
with one client at a time there is nothing to group). It is not a mail
server: it shows what any Python gateway that fsyncs before 250 cannot beat
on this machine, so that a target can be checked against physics.

    python bench/floor.py --port 2998 [--sync none|fdatasync] [--dir DIR] &
    smtp-source -s 1 -m 5000 -l 3900 -f a@b.example -t c@d.example 127.0.0.1:2998
    (stop it with SIGTERM, by its PID)

Loopback only. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
from pathlib import Path
from typing import cast

import uvloop

AREA = 256 * 1024 * 1024  # pre-zeroed, written round-robin


class Journal:
    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix="floor-", dir=directory)
        os.unlink(name)  # nothing to keep
        zeros = bytes(1024 * 1024)
        for _ in range(AREA // len(zeros)):
            os.write(fd, zeros)
        os.fsync(fd)
        self.fd, self.offset = fd, 0

    def commit(self, body: bytes) -> None:
        if self.offset + len(body) > AREA:
            self.offset = 0
        os.pwrite(self.fd, body, self.offset)
        self.offset += len(body)
        os.fdatasync(self.fd)


class Floor(asyncio.Protocol):
    journal: Journal | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = b""
        self.in_data = False
        self.transport.write(b"220 floor ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out: list[bytes] = []
        while True:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                body, self.buffer = self.buffer[:end], self.buffer[end + 5 :]
                self.in_data = False
                if self.journal is not None:
                    self.journal.commit(body)
                out.append(b"250 2.0.0 Ok\r\n")
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            verb = self.buffer[:4].upper()
            self.buffer = self.buffer[end + 2 :]
            if verb == b"EHLO":
                out.append(b"250-floor\r\n250 PIPELINING\r\n")
            elif verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"250 2.0.0 Ok\r\n")
        if out:
            self.transport.write(b"".join(out))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    server = await loop.create_server(Floor, "127.0.0.1", port, backlog=1024)
    await stop.wait()
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=2998)
    p.add_argument("--sync", choices=("none", "fdatasync"), default="fdatasync")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = p.parse_args()
    if args.sync == "fdatasync":
        Floor.journal = Journal(args.dir)
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
