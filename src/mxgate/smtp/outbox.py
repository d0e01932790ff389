"""The outbox: replies queued for the peer, in order, and the error accounting
that decides when a misbehaving client is cut off.

Owns Postfix's two counters: ``smtpd_hard_error_limit`` (every 4xx/5xx
reply is a client error; at the limit ``421 4.7.0 <host> Error: too many
errors`` follows and the connection closes) and ``smtpd_junk_command_limit``
(NOOP/RSET/VRFY/HELP beyond the limit count as errors, so a client cannot
idle forever without sending mail). Both are forgiven when a message is
accepted, as Postfix does.

Never decides what to answer and never does I/O: it only queues bytes and
tells the connection when it must hang up.
"""

from __future__ import annotations

from typing import Literal

from mxgate.core.reply import Reply

from . import replies

Hangup = Literal["reply", "errors"] | None
"""Why the connection must close after a reply: the reply itself closes it
(421, 521), or it was the error that reached the hard limit."""


class Outbox:
    __slots__ = ("_chunks", "_errors", "_hard_limit", "_hostname", "_junk", "_junk_limit")

    def __init__(self, hostname: str, hard_error_limit: int, junk_command_limit: int) -> None:
        self._hostname = hostname
        self._hard_limit = hard_error_limit  # 0: no limit
        self._junk_limit = junk_command_limit
        self._chunks: list[bytes] = []
        self._errors = 0
        self._junk = 0

    @property
    def errors(self) -> int:
        return self._errors

    def put(self, reply: Reply, *, count: bool = True) -> Hangup:
        """Queue ``reply``; say whether the connection must close now."""
        self._chunks.append(replies.render(reply))
        code = reply.code
        if code == 421 or code == 521:  # RFC 5321 3.8, RFC 7504: we hang up
            return "reply"
        # 452 is flow control, not a client error: RFC 5321 4.5.3.1.10 tells
        # a client that got "too many recipients" to send the rest in a later
        # transaction, and Postfix forgives that overshoot too.
        if count and code >= 400 and code != 452:
            return self._error()
        return None

    def junk_command(self) -> Hangup:
        self._junk += 1
        return self._error() if self._junk > self._junk_limit else None

    def forgive(self) -> None:
        """A message was accepted: past errors no longer count."""
        self._errors = self._junk = 0

    def drain(self) -> bytes:
        chunks = self._chunks
        if not chunks:
            return b""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        return data

    def _error(self) -> Hangup:
        self._errors += 1
        if 0 < self._hard_limit <= self._errors:
            self._chunks.append(replies.render(replies.too_many_errors(self._hostname)))
            return "errors"
        return None
