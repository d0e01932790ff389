"""The events a ``ServerConnection`` hands to its caller (after h11's ``_events``).

Owns the vocabulary of the inbound SMTP conversation: one frozen, slotted
dataclass per thing that happened, plus the ``NEED_DATA`` sentinel.

Three events are *questions* that the caller must answer with
``ServerConnection.send(reply)`` before it may ask for the next event:
``MailFrom``, ``RcptTo`` and ``DataEnd`` (the policy lives outside the
protocol). Every other event is *news*: the connection has already queued its
reply, and the caller only logs or acts on it.

A mail transaction opens when the caller answers ``MailFrom`` with a 2xx, and
ends (the caller drops what it collected) at: the answer to ``DataEnd``,
``DataRejected``, ``Rset``, ``Helo`` (RFC 5321 4.1.4: HELO/EHLO reset it) and
``ConnectionClosed``.

Never does I/O; never holds a whole message (``DataChunk`` is one slice of it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from mxgate.core.reply import Reply

BodyType = Literal["7BIT", "8BITMIME"]
CloseReason = Literal["quit", "lost", "errors", "timeout", "forbidden", "server"]
"""Why a connection ended: the client sent QUIT; the client went away (EOF)
without QUIT; the hard error limit; the idle timer; a non-SMTP command (HTTP
``GET``/``POST``/``CONNECT``); or our own side closed it (``close()`` or a 421
answer)."""


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __str__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
"""Returned by ``next_event()`` when the buffered bytes hold no complete event:
flush ``data_to_send()``, read from the peer and call ``receive_data()``."""


@dataclass(frozen=True, slots=True, init=False)
class Helo:
    """HELO (``extended=False``) or EHLO (``extended=True``); already answered."""

    name: str
    extended: bool

    def __init__(self, name: str, extended: bool) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "extended", extended)


@dataclass(frozen=True, slots=True, init=False)
class MailFrom:
    """MAIL FROM, syntactically valid; **the caller must answer** (e.g. 250 2.1.0).

    ``address`` is the raw path text without the angle brackets ('' for the
    null sender ``<>``); a source route is left in place. ``params`` maps every
    ESMTP keyword (upper-cased) to its raw value (None when it had none); the
    fields after it are the decoded, validated known parameters: SIZE (RFC 1870),
    BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461, ENVID
    xtext-decoded).
    """

    address: str
    params: dict[str, str | None] = field(default_factory=dict)
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: Literal["FULL", "HDRS"] | None = None
    envid: str | None = None

    def __init__(
        self,
        address: str,
        params: dict[str, str | None] | None = None,
        size: int | None = None,
        body: BodyType | None = None,
        smtputf8: bool = False,
        ret: Literal["FULL", "HDRS"] | None = None,
        envid: str | None = None,
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "params", {} if params is None else params)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "envid", envid)


@dataclass(frozen=True, slots=True, init=False)
class RcptTo:
    """RCPT TO, syntactically valid; **the caller must answer** (e.g. 250 2.1.5).

    ``address`` is the raw path text without angle brackets (never ''). DSN
    (RFC 3461): ``notify`` is ``("NEVER",)`` or a tuple drawn from SUCCESS,
    FAILURE, DELAY; ``orcpt`` is ``"addr-type;address"`` with the address
    xtext-decoded (``"rfc822;user@example.com"``).
    """

    address: str
    params: dict[str, str | None] = field(default_factory=dict)
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None

    def __init__(
        self,
        address: str,
        params: dict[str, str | None] | None = None,
        notify: tuple[str, ...] | None = None,
        orcpt: str | None = None,
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "params", {} if params is None else params)
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "orcpt", orcpt)


@dataclass(frozen=True, slots=True)
class DataStart:
    """DATA was accepted and 354 queued; body chunks follow."""


@dataclass(frozen=True, slots=True, init=False)
class DataChunk:
    """A piece of the message body: dot-unstuffed, in arrival order.

    The concatenation of a message's chunks is exactly the message (every line
    ending in CRLF) when it ends with ``DataEnd``. Chunk boundaries carry no
    meaning and depend on how the bytes arrived."""

    data: bytes

    def __init__(self, data: bytes) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "data", data)


@dataclass(frozen=True, slots=True, init=False)
class DataEnd:
    """The real ``<CRLF>.<CRLF>`` arrived; **the caller must answer** (250 once
    the message is on stable storage, or 4xx/5xx). ``size`` is the body size in
    octets as RFC 1870 counts it (after dot-unstuffing); ``plain``: no line of
    the body starts with a dot (none was stuffed), and, as for every body that
    gets this far, every line ends in CRLF (Envelope.plain_body)."""

    size: int
    plain: bool = False

    def __init__(self, size: int, plain: bool = False) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "plain", plain)


@dataclass(frozen=True, slots=True)
class DataRejected:
    """The body ended but the protocol refused it on its own (over
    ``message_size_limit``, or bare CR/LF); ``reply`` is already queued. The
    caller discards whatever it stored for this message."""

    size: int
    reply: Reply


@dataclass(frozen=True, slots=True)
class Rset:
    """RSET; answered 250. Ends any open transaction."""


@dataclass(frozen=True, slots=True)
class Noop:
    """NOOP; answered 250."""


@dataclass(frozen=True, slots=True)
class Vrfy:
    """VRFY; answered 252 without revealing anything."""

    argument: str


@dataclass(frozen=True, slots=True)
class Xclient:
    """XCLIENT from a client allowed to send it, its attributes valid: a new
    greeting is queued and the session starts over (EHLO again). The caller
    takes the attributes as the client's own from now on.

    ``address``: the client's IP address; ``name``: its host name; both
    None for ``[UNAVAILABLE]``/``[TEMPUNAVAIL]``, and absent keys keep their
    values. ``helo`` and ``protocol`` ("SMTP" or "ESMTP") likewise."""

    attributes: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class StartTls:
    """STARTTLS accepted and ``220 2.0.0 Ready to start TLS`` queued.

    The caller writes ``data_to_send()``, runs the TLS handshake, then calls
    ``tls_established()``. Everything the client had pipelined after STARTTLS
    was discarded (RFC 3207 4.2, plaintext injection)."""


@dataclass(frozen=True, slots=True)
class Quit:
    """QUIT; ``221 2.0.0 Bye`` queued. ``ConnectionClosed`` follows."""


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The connection refused a command on its own (syntax, sequence, size,
    unknown verb...); ``reply`` is already queued. For logging only.
    ``command`` is the upper-cased verb ('' when there was none)."""

    command: str
    reply: Reply


@dataclass(frozen=True, slots=True, init=False)
class ConnectionClosed:
    """The conversation is over: write ``data_to_send()`` and close the socket.

    Returned again by every later ``next_event()``. ``after`` names the last
    command seen (``CONNECT``, ``EHLO``, ``RCPT``, ``DATA``,
    ``END-OF-MESSAGE``...), as Postfix logs "lost connection after RCPT"."""

    reason: CloseReason
    after: str

    def __init__(self, reason: CloseReason, after: str) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "reason", reason)
        object.__setattr__(self, "after", after)


Event = (
    Helo
    | MailFrom
    | RcptTo
    | DataStart
    | DataChunk
    | DataEnd
    | DataRejected
    | Rset
    | Xclient
    | Noop
    | Vrfy
    | StartTls
    | Quit
    | ProtocolViolation
    | ConnectionClosed
)
"""Everything ``next_event()`` can return besides ``NEED_DATA``."""
