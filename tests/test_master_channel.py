"""The worker's end of the master channel: journal ticks reach the master as
whole lines, the latest per segment, even when the socket buffer is full."""

from __future__ import annotations

import asyncio
import os
import socket

from mxgate.supervisor import CHANNEL_READ, Supervisor
from mxgate.worker import MasterChannel


def test_ticks_wait_for_room_and_arrive_whole() -> None:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    received = bytearray()

    async def scenario() -> None:
        channel = MasterChannel(os.dup(ours.fileno()), on_gone=lambda: None)
        # Fill the worker's side until the kernel takes nothing more.
        filler = b"#" * 4096
        while True:
            try:
                channel.sock.send(filler)
            except BlockingIOError:
                break
        for n in range(50):
            channel.tick("SEGA", 100 * n, False)
            channel.tick(f"SEG{n % 3}", n, n == 49)
        # Room again: the master reads; the waiting ticks go out.
        for _ in range(200):
            await asyncio.sleep(0.005)
            try:
                while chunk := theirs.recv(65536):
                    received.extend(chunk)
            except BlockingIOError:
                pass
        channel.close()

    asyncio.run(scenario())
    try:
        while chunk := theirs.recv(65536):
            received.extend(chunk)
    except BlockingIOError:
        pass
    text = bytes(received).lstrip(b"#").decode()
    lines = text.splitlines()
    assert all(line.startswith("J ") and len(line.split()) == 4 for line in lines), lines
    latest = {line.split()[1]: line for line in lines}
    assert latest["SEGA"] == "J SEGA 4900 0"
    assert latest["SEG1"] == "J SEG1 49 1"
    ours.close()
    theirs.close()


class _CountingSocket(socket.socket):
    """A socket that counts its reads (the master's end of a channel)."""

    reads = 0

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.reads += 1
        return super().recv(bufsize, flags)


def test_the_master_reads_a_tick_in_one_call_and_still_sees_the_end() -> None:
    a, b = socket.socketpair()
    ours = _CountingSocket(fileno=os.dup(a.fileno()))
    a.close()
    ours.setblocking(False)
    try:
        b.sendall(b"J SEG 100 0\n")
        assert Supervisor._drain(ours) == (b"J SEG 100 0\n", False)
        assert ours.reads == 1  # not a second read that meets EAGAIN
        # More than one read's worth: all of it, over one call or more (a
        # full read reads on; the kernel may cut a read short between buffers).
        big = b"M " + b"x" * CHANNEL_READ + b"\n"
        b.sendall(big)
        got = bytearray()
        while len(got) < len(big):
            data, eof = Supervisor._drain(ours)
            assert data and not eof
            got += data
        assert got == big
        # Nothing waiting: EAGAIN, no end of file.
        assert Supervisor._drain(ours) == (b"", False)
        # The worker's last words and its end arrive together: the words first,
        # the end at the next readable callback.
        b.sendall(b"J SEG 200 1\n")
        b.close()
        assert Supervisor._drain(ours) == (b"J SEG 200 1\n", False)
        assert Supervisor._drain(ours) == (b"", True)
    finally:
        ours.close()
        b.close()
