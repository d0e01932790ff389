"""Replies as the SMTP client reads them: multi-line framing and status codes.

Owns the client side of RFC 5321 4.2: cutting the server's bytes into
complete replies (``250-first`` ... ``250 last``), checking that every line of
one reply carries the same code, and splitting the RFC 2034 / RFC 3463
enhanced status code off the text when the server advertised
ENHANCEDSTATUSCODES. Also the EHLO/LHLO answer as ``Capabilities``
(RFC 5321 4.1.1.1: one keyword per line after the first).

Lenient where Postfix is lenient (a bare LF ends a line, a code with no text
is a reply) and strict where leniency would let a server confuse us (mixed
codes in one reply, a line that does not start with three digits, or a reply
larger than ``MAX_REPLY``: a ``RemoteProtocolError``).

Never does I/O and never decides what a reply means for a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from mxgate.core.reply import Reply

from .errors import RemoteProtocolError

# RFC 5321 4.5.3.1.5 sets 512 octets per reply line; real servers exceed it a
# little, so we allow more, but bound both a line and a whole reply so that a
# hostile server cannot make us buffer without end.
MAX_LINE = 4096
MAX_REPLY = 65536

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)")


def malformed(detail: str) -> RemoteProtocolError:
    """The error for a reply we cannot read: a transient 4.5.0 (the next
    attempt may meet a saner server), the text saying what was wrong."""
    return RemoteProtocolError(Reply(451, "4.5.0", f"malformed server reply: {detail}"))


class ReplyReader:
    """Incremental reply framing: ``feed(bytes)``, then ``next_reply()``
    until it returns None."""

    __slots__ = ("_buf", "_code", "_lines", "_size")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._code = b""
        self._lines: list[str] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        """Drop everything unread (RFC 3207 4.2: nothing read before the TLS
        handshake may be trusted after it)."""
        self._buf.clear()
        self._code, self._lines, self._size = b"", [], 0

    @property
    def pending(self) -> bool:
        """Unread bytes, or a reply begun but not finished."""
        return bool(self._buf or self._lines)

    def next_reply(self) -> tuple[int, list[str]] | None:
        """The next complete reply as (code, text lines without the code), or
        None until one is complete."""
        buf = self._buf
        while True:
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_LINE:
                    raise malformed("line too long")
                return None
            raw = bytes(buf[:end]).rstrip(b"\r")
            del buf[: end + 1]
            self._size += end + 1
            if end > MAX_LINE or self._size > MAX_REPLY:
                raise malformed("reply too long")
            # Three digits, the first 2 to 5, then " " (last line), "-" (more
            # follow) or nothing. Compared by hand: the regex this replaces
            # was a third of the queue manager's reply handling.
            size = len(raw)
            if (
                size < 3
                or not 0x32 <= raw[0] <= 0x35
                or not 0x30 <= raw[1] <= 0x39
                or not 0x30 <= raw[2] <= 0x39
                or (size > 3 and raw[3] != 0x20 and raw[3] != 0x2D)
            ):
                raise malformed(repr(raw[:60]))
            code = raw[:3]
            if self._lines and code != self._code:
                raise malformed(f"code changed from {self._code.decode()} to {code.decode()}")
            self._code = code
            self._lines.append(raw[4:].decode("utf-8", "replace"))
            if size == 3 or raw[3] == 0x20:
                lines, self._lines, self._code, self._size = self._lines, [], b"", 0
                return int(code), lines


def make_reply(code: int, lines: list[str], enhanced: bool) -> Reply:
    """A ``Reply`` from framed lines. With ``enhanced`` (the server advertised
    ENHANCEDSTATUSCODES) a leading ``x.y.z`` whose class matches the code is
    split off the first line and, where repeated, off the others (RFC 2034 3).
    Lines are joined with ``\\n``, as ``Reply.lines()`` expects."""
    first = lines[0]
    if enhanced and first and ord(first[0]) - 0x30 == code // 100:
        # The cache holds only what the pattern matched, so a first word found
        # there is the whole code and the pattern need not run: four replies
        # per relayed message, nearly always from a handful of codes.
        space = first.find(" ")
        written = first if space < 0 else first[:space]
        status = _STATUS.get(written)
        if status is None:
            m = _ENHANCED.match(first)
            if m is not None:
                written = m.group(0).rstrip(" ")
                status = f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
                if len(_STATUS) < _STATUS_CACHE:
                    _STATUS[written] = status
        if status is not None:
            if len(lines) == 1:
                return Reply(code, status, first[len(written) :].lstrip(" "))
            return Reply(code, status, "\n".join([_strip_status(line, written) for line in lines]))
    return Reply(code, "", first if len(lines) == 1 else "\n".join(lines))


_STATUS: dict[str, str] = {}
"""Enhanced status codes as servers write them -> as we keep them ("2.01.0"
-> "2.1.0"): a few dozen in practice, bounded by ``_STATUS_CACHE``."""
_STATUS_CACHE = 256


def _strip_status(line: str, prefix: str) -> str:
    if line == prefix:
        return ""
    if line.startswith(prefix + " "):
        return line[len(prefix) :].lstrip(" ")
    return line


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an EHLO/LHLO answer advertised (all False after HELO).

    size_limit: the SIZE value (RFC 1870): None when SIZE was not advertised,
    0 when advertised without a limit. ``keywords`` maps every upper-cased
    keyword to its parameter text, for logs and extensions we do not model.
    """

    esmtp: bool = False
    pipelining: bool = False
    size_limit: int | None = None
    eightbitmime: bool = False
    smtputf8: bool = False
    dsn: bool = False
    starttls: bool = False
    enhanced_status_codes: bool = False
    keywords: Mapping[str, str] = field(default_factory=dict)


NO_CAPABILITIES = Capabilities()


def parse_ehlo(lines: list[str]) -> Capabilities:
    """Capabilities from the text lines of a 250 answer to EHLO/LHLO. The
    first line is the server's name and greeting; keywords are
    case-insensitive (RFC 5321 4.1.1.1)."""
    keywords: dict[str, str] = {}
    for line in lines[1:]:
        word, _, param = line.strip().partition(" ")
        if word:
            keywords[word.upper()] = param.strip()
    size: int | None = None
    if "SIZE" in keywords:
        value = keywords["SIZE"]
        size = int(value) if value.isascii() and value.isdigit() else 0
    return Capabilities(
        esmtp=True,
        pipelining="PIPELINING" in keywords,
        size_limit=size,
        eightbitmime="8BITMIME" in keywords,
        smtputf8="SMTPUTF8" in keywords,
        dsn="DSN" in keywords,
        starttls="STARTTLS" in keywords,
        enhanced_status_codes="ENHANCEDSTATUSCODES" in keywords,
        keywords=keywords,
    )
