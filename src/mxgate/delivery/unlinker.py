"""Removing delivered messages from active/ in a helper process.

Why a process: unlinking an fsynced file waits for the disk (on ext4 mounted
with ``discard`` the discard is issued synchronously, ~0.2 ms per file), so
it cannot run on the queue manager's event loop. On a worker thread it cost
the master more CPU than the unlinks themselves: every unlink hands the GIL
back and forth with the loop (futex calls, context switches, about a third of
the master's CPU under load). The helper has no GIL to share; the master
writes one line per message and reads the answers a batch per pipe read.

Protocol, one line each way per message: the master sends ``QUEUEID``; the
helper answers ``QUEUEID`` once the record and the body are gone,
``QUEUEID - reason`` when the record was not in active/, and
``QUEUEID ! reason`` when it could not be removed. Like ``Spool.remove``:
the record first (the message is gone), then the body, quietly.

``Unlinker`` is the master's side; ``main`` the helper (``python -m
mxgate.delivery.unlinker SPOOL_DIR``). The helper ends at EOF on its input,
so it never outlives the master.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from mxgate.spool import MessageNotFoundError, SpoolError
from mxgate.spool.layout import Layout, Queue, is_queue_id

Answer = Callable[[str, Exception | None], None]
"""Called once per message answered: its queue id and None, or why it is not removed."""
Lost = Callable[[list[str]], None]
"""Called once if the helper goes away, with the ids it did not answer."""


def _remover(layout: Layout) -> Callable[[str], bytes]:
    # Plain strings and os calls: pathlib would cost more than the syscalls.
    active = f"{layout.queue_dir(Queue.ACTIVE)}/"
    data = f"{layout.data}/"

    def remove(queue_id: str) -> bytes:
        if not is_queue_id(queue_id):
            return f"{queue_id} ! not a queue id\n".encode()
        try:
            os.unlink(active + queue_id)
        except FileNotFoundError:
            return f"{queue_id} - not in active/\n".encode()
        except OSError as err:
            return f"{queue_id} ! {err.strerror or err}\n".encode()
        with contextlib.suppress(OSError):
            os.unlink(data + queue_id)
        return f"{queue_id}\n".encode()

    return remove


def main(argv: list[str] | None = None) -> int:
    """The helper: remove the messages named on stdin, answer on stdout."""
    [root] = argv if argv is not None else sys.argv[1:]
    # Ctrl-C reaches the whole process group; we end when the master closes
    # our stdin (it may still have messages to remove while it stops).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    remove = _remover(Layout(root))
    rest = b""
    while True:
        data = os.read(0, 65536)
        if not data:
            return 0
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        out = b"".join([remove(line.decode("ascii", "replace")) for line in lines])
        # Two statements, not ``view = view[os.write(1, view):]``: compiled by
        # mypyc 2.4.1 that form runs the write twice (see maillog.py).
        view = memoryview(out)
        while view:
            written = os.write(1, view)
            view = view[written:]


class _Answers(asyncio.Protocol):
    def __init__(self, unlinker: Unlinker) -> None:
        self.unlinker = unlinker
        self.rest = b""

    def data_received(self, data: bytes) -> None:
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            self.unlinker._answered(line.decode("ascii", "replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.unlinker._lost()


class Unlinker:
    """The master's side of the helper. ``send`` names messages to remove;
    ``answer`` hears about each once, unless the helper goes away first:
    then ``alive`` turns False and ``lost`` gets the ids not answered."""

    def __init__(self, spool_dir: str | os.PathLike[str], answer: Answer, lost: Lost) -> None:
        self.root = os.fspath(spool_dir)
        self.answer, self.lost = answer, lost
        self.alive = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._sent: dict[str, None] = {}  # unanswered ids, in order
        self._closed: asyncio.Future[None] | None = None

    @staticmethod
    def command(root: str) -> list[str]:
        return [sys.executable, "-m", "mxgate.delivery.unlinker", root]

    async def start(self) -> None:
        """Start the helper; OSError if it cannot be started."""
        loop = asyncio.get_running_loop()
        self._proc = subprocess.Popen(
            self.command(self.root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._closed = loop.create_future()
        self._writer, _ = await loop.connect_write_pipe(asyncio.Protocol, self._proc.stdin)
        await loop.connect_read_pipe(lambda: _Answers(self), self._proc.stdout)
        self.alive = True

    def send(self, queue_ids: list[str]) -> None:
        """Ask for ``queue_ids`` to be removed, in one write."""
        if not self.alive or self._writer is None or self._writer.is_closing():
            self.lost(queue_ids)
            return
        self._sent.update(dict.fromkeys(queue_ids))
        self._writer.write("".join(f"{queue_id}\n" for queue_id in queue_ids).encode("ascii"))

    @property
    def outstanding(self) -> int:
        return len(self._sent)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _answered(self, line: str) -> None:
        queue_id, _, rest = line.partition(" ")
        if queue_id not in self._sent:
            return
        del self._sent[queue_id]
        error: Exception | None = None
        if rest.startswith("- "):
            error = MessageNotFoundError(f"{queue_id}: {rest[2:]}")
        elif rest:
            error = SpoolError(f"{queue_id}: remove: {rest[2:]}")
        self.answer(queue_id, error)

    def _lost(self) -> None:
        self.alive = False
        unanswered, self._sent = list(self._sent), {}
        if unanswered:
            self.lost(unanswered)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def close(self) -> None:
        """Let the helper answer what it was sent, and wait for it to exit."""
        if self._writer is not None:
            self._writer.close()  # EOF: the helper finishes its input and exits
        if self._closed is not None and self.alive:
            await self._closed
        if self._proc is not None:
            await asyncio.to_thread(self._proc.wait)
            self._proc = None


if __name__ == "__main__":
    sys.exit(main())
