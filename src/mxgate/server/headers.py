"""What the gateway reads and writes in a message's header section.

Owns the ``Received:`` line prepended to every accepted message (RFC 5321
4.4) and a streaming scanner that counts the message's own ``Received:``
headers (loop detection, Postfix's ``hopcount_limit``) and picks up its
Message-ID for the mail log. Pure: the time is an argument; the scanner never
holds more than one header line and stops at the end of the header section.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache

# A header line longer than this is not worth scanning further (RFC 5322's 998
# limit is routinely broken, but not by this much).
_MAX_LINE = 65536


def received_header(
    *,
    helo: str,
    client: str,
    by: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    now: float,
) -> bytes:
    """``Received: from HELO (host [ip]) by us (mxgate) with ESMTP id QID for <rcpt>; date``.

    ``client`` is Postfix's ``host[ip]`` label; the comment is written with a
    space, as Postfix does. ``for`` is given only for a single recipient, so
    the other recipients of a message are not disclosed.
    """
    host, _, ip = client.partition("[")
    stamp = _stamp(int(now))
    lines = [
        f"Received: from {helo} ({host} [{ip})",
        f"\tby {by} (mxgate) with {protocol} id {queue_id}",
    ]
    if recipient is not None:
        lines.append(f"\tfor <{recipient}>; {stamp}")
    else:
        lines[-1] += f"; {stamp}"
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


@lru_cache(maxsize=4)
def _stamp(second: int) -> str:
    # Every message of the same second shares it: formatting one costs as
    # much as the rest of the header.
    return format_datetime(datetime.fromtimestamp(second, UTC))


class HeaderScanner:
    """Counts ``Received:`` headers and finds ``Message-ID:`` while DATA streams by."""

    def __init__(self) -> None:
        self.received = 0
        self.message_id = ""
        self.done = False
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        if self.done:
            return
        data = self._partial + chunk if self._partial else chunk
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end]
            start = end + 1
            if line in (b"", b"\r"):
                self.done = True  # the empty line ends the header section
                self._partial = b""
                return
            self._line(line)
        rest = data[start:]
        self._partial = rest if len(rest) <= _MAX_LINE else b""

    def _line(self, line: bytes) -> None:
        head = line[:11].lower()
        if head.startswith(b"received:"):
            self.received += 1
        elif head.startswith(b"message-id:") and not self.message_id:
            self.message_id = line[11:].strip().decode("utf-8", "replace")
