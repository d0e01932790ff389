"""The receive buffer: bytes from the peer, consumed front to back.

Owns the unconsumed input and the cutting of command lines out of it,
including the RFC 5321 4.5.3.1.4 rule that an over-long line is refused as a
whole: its bytes are drained up to its LF however it arrives, so one refusal
is sent for it and none of its tail is ever read as a command.

Cheap by design: consuming only moves an index, and the consumed prefix is
dropped when new bytes arrive, so a pipelined batch of N commands costs O(N)
copies, not O(N**2).

Never parses, never replies, never does I/O.
"""

from __future__ import annotations

from . import replies
from .errors import RemoteProtocolError


class ReceiveBuffer:
    __slots__ = ("_skipping", "data", "eof", "pos")

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0  # data[:pos] is consumed
        self.eof = False  # the peer closed its side
        self._skipping = False  # inside a line that was too long

    def append(self, data: bytes) -> None:
        if self.pos >= len(self.data):
            self.data = bytes(data)
        else:
            self.data = self.data[self.pos :] + data
        self.pos = 0

    def clear(self) -> None:
        """Drop everything unconsumed (STARTTLS, QUIT, close)."""
        self.data, self.pos, self._skipping = b"", 0, False

    def next_line(self, limit: int) -> bytes | None:
        """The next line up to and including its LF, or None until one is
        complete. A line over ``limit`` octets raises ``RemoteProtocolError``
        (500 5.5.2) once it has been drained completely."""
        data, pos = self.data, self.pos
        if not self._skipping:
            i = data.find(b"\n", pos, pos + limit)
            if i >= 0:
                self.pos = i + 1
                return data[pos : i + 1]
            if len(data) - pos < limit:
                return None
            self._skipping = True
        i = data.find(b"\n", pos)
        if i < 0:
            self.pos = len(data)
            return None
        self.pos = i + 1
        self._skipping = False
        raise RemoteProtocolError(replies.LINE_TOO_LONG)
