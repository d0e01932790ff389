"""Incremental decoder of the DATA section (RFC 5321 4.1.1.4, 4.5.2).

Owns: finding the end of the message, dot-unstuffing, counting its size
against ``message_size_limit`` and noticing bare CR / bare LF.

Rules it keeps, whatever the input and however it is split into pieces:

* The message ends ONLY at ``<CRLF>.<CRLF>`` (the CRLF that ends the DATA
  command counts as the first one, so ``.<CRLF>`` at once is an empty
  message). ``<LF>.<LF>``, ``<LF>.<CRLF>``, ``<CR>.<CR>``, ``<CRLF>.<LF>``
  and the like are ordinary body bytes: nothing after them is ever read as a
  command (SMTP smuggling).
* A message holding a bare CR or a bare LF is read to the real terminator and
  then refused with 550 5.5.2. Relaying it unchanged would let a next hop
  that is lax about line endings end the message early and run what follows
  as commands; rewriting it would change what the sender signed (DKIM).
  Postfix's ``smtpd_forbid_bare_newline=yes`` refuses too (it also
  disconnects; we need not, because the rest of the stream is still read
  as body).
* A body over the limit is drained to the real terminator and refused with
  552 5.3.4, never truncated and accepted. The caller gets at most the
  first ``limit`` octets as chunks (so it never stores more than that).
* Lines longer than the 998+2 octets of RFC 5322 2.1.1 are passed on as
  they are (Postfix accepts them too); the next hop may refuse them.
* Streaming: every call returns what could be decided so far; at most four
  octets (a possible start of ``<CRLF>.<CRLF>``) are held back. The hot path
  is ``bytes.find`` and ``bytes.count``, never a Python loop over bytes; a
  loop turn happens only per line that starts with a dot.

Never buffers a message, never does I/O, never decides on the message's
content beyond the three rules above.
"""

from __future__ import annotations

from mxgate.core.reply import Reply

from . import replies

_DOT = 0x2E
_CR = 0x0D


class DataDecoder:
    """Decodes one message body from a growing buffer.

    ``decode(buf, pos)`` consumes from ``buf[pos:]`` and returns
    ``(body, new_pos, finished)``: dot-unstuffed body octets (possibly empty),
    where the unconsumed input starts, and whether the terminator was seen
    (then ``buf[new_pos:]`` is the command stream again)."""

    __slots__ = ("_at_start", "bare_cr", "bare_lf", "dotted", "finished", "limit", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit  # 0: no limit (Postfix's message_size_limit = 0)
        self.size = 0  # octets of the body so far, after unstuffing (RFC 1870)
        self.bare_cr = False
        self.bare_lf = False
        # A line started with a dot (one was removed): the body may hold lines
        # that start with one, to be stuffed again on the way out.
        self.dotted = False
        self.finished = False
        self._at_start = True  # nothing decoded yet: a line starts at pos

    @property
    def oversized(self) -> bool:
        return 0 < self.limit < self.size

    def rejection(self) -> Reply | None:
        """Why the finished message must be refused, or None to let the
        caller decide. Too big wins: retrying will not help either way."""
        if self.oversized:
            return replies.MESSAGE_TOO_BIG
        if self.bare_lf:
            return replies.BARE_LF_IN_DATA
        if self.bare_cr:
            return replies.BARE_CR_IN_DATA
        return None

    def decode(self, buf: bytes, pos: int) -> tuple[bytes, int, bool]:
        end = len(buf)
        if self._at_start:
            # The DATA command's own CRLF precedes this line.
            if pos >= end:
                return b"", pos, False
            if buf[pos] == _DOT:
                if buf.startswith(b".\r\n", pos):
                    self._at_start = False
                    self.finished = True
                    return b"", pos + 3, True
                if end - pos < 3 and buf[pos + 1 : end] in (b"", b"\r"):
                    return b"", pos, False  # could still become ".\r\n"
                pos += 1  # a stuffed dot
                self.dotted = True
            self._at_start = False
        parts: list[bytes] = []
        start = pos
        finished = False
        while True:
            j = buf.find(b"\r\n.", pos)
            if j < 0:
                # Hold back a trailing CR or CRLF: it may begin "\r\n.\r\n".
                cut = end
                if end - start >= 2 and buf[end - 2] == _CR and buf[end - 1] == 0x0A:
                    cut = end - 2
                elif end > start and buf[end - 1] == _CR:
                    cut = end - 1
                parts.append(buf[start:cut])
                pos = cut
                break
            k = j + 3  # just after the dot
            if end - k < 2 and (k == end or buf[k] == _CR):
                parts.append(buf[start:j])  # undecided yet: keep "\r\n." ...
                pos = j
                break
            parts.append(buf[start : j + 2])  # the line before keeps its CRLF
            if buf[k] == _CR and buf[k + 1] == 0x0A:
                pos = k + 2
                finished = True
                break
            start = pos = k  # drop the stuffed dot
            self.dotted = True
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self.finished = finished
        return self._account(body), pos, finished

    def _account(self, body: bytes) -> bytes:
        """Size and bare-newline bookkeeping; returns what the caller gets.

        Counting per returned piece is exact: a piece never ends between the
        CR and the LF of a CRLF (a trailing CR is held back, or is followed
        by another CR), so a pair is never split across pieces."""
        if not body:
            return body
        before = self.size
        self.size = before + len(body)
        if self.limit and self.size > self.limit:
            # Hand over exactly the first `limit` octets however the input
            # was split; the rest is only counted.
            return body[: max(self.limit - before, 0)]
        crlf = body.count(b"\r\n")
        if not self.bare_lf and body.count(b"\n") != crlf:
            self.bare_lf = True
        if not self.bare_cr and body.count(b"\r") != crlf:
            self.bare_cr = True
        return body
