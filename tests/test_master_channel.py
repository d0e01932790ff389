"""The worker's end of the master channel: journal ticks reach the master as
whole lines, the latest per segment, even when the socket buffer is full."""

from __future__ import annotations

import asyncio
import os
import socket

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
