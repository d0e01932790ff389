"""The events and states of the sans-IO SMTP/LMTP client (``client.py``).

Owns the vocabulary of an outbound conversation: what a reply answers
(``Command``), where the connection stands (``ClientState``) and the frozen
events ``ClientConnection.next_event()`` hands out. Never does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxgate.core.reply import Reply


class Command(enum.Enum):
    """What a reply answers; ``BODY`` is the stage of writing the body."""

    GREETING = "greeting"
    EHLO = "EHLO"
    LHLO = "LHLO"
    HELO = "HELO"
    STARTTLS = "STARTTLS"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    BODY = "message body"
    DOT = "end of DATA"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


class ClientState(enum.Enum):
    GREETING = "GREETING"  # waiting for the server's greeting
    CONNECTED = "CONNECTED"  # greeted (or TLS just started): say EHLO/LHLO
    HELLO = "HELLO"  # waiting for the EHLO/HELO/LHLO answer
    READY = "READY"  # may start a transaction, RSET, STARTTLS, QUIT
    BUSY = "BUSY"  # a reply to RSET/NOOP/STARTTLS is outstanding
    TLS = "TLS"  # 220 to STARTTLS: the caller does the handshake
    TRANSACTION = "TRANSACTION"  # MAIL .. DATA replies outstanding
    BODY = "BODY"  # 354 received: the caller streams the body
    CLOSED = "CLOSED"  # QUIT sent, EOF, or an error: nothing more


@dataclass(frozen=True, slots=True)
class Response:
    """The reply to a command outside a transaction (greeting, EHLO/HELO/LHLO,
    STARTTLS, RSET, NOOP, QUIT). For the hello, this is the final answer,
    after the HELO fallback; the capabilities are on the connection."""

    command: Command
    reply: Reply


@dataclass(frozen=True, slots=True)
class SendBody:
    """354 to DATA: stream the body with ``send_body`` and ``end_body``."""


@dataclass(frozen=True, slots=True, init=False)
class RecipientReply:
    """The reply that decides one recipient and the command it answered:
    RCPT TO (refused there), MAIL FROM (sender refused: all recipients),
    DATA (refused: all accepted recipients) or end of DATA."""

    address: str
    reply: Reply
    command: Command

    def __init__(self, address: str, reply: Reply, command: Command) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "reply", reply)
        object.__setattr__(self, "command", command)


@dataclass(frozen=True, slots=True, init=False)
class TransactionDone:
    """The transaction is over. ``results`` holds every recipient that has a
    reply, in the order given to ``begin``; ``lost`` is None when all have,
    else the stage at which the conversation broke off (timeout, EOF, bad
    reply): recipients without a reply were neither refused nor accepted."""

    results: tuple[RecipientReply, ...]
    lost: Command | None = None

    def __init__(self, results: tuple[RecipientReply, ...], lost: Command | None = None) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "results", results)
        object.__setattr__(self, "lost", lost)


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The server closed the connection outside a transaction."""

    awaiting: Command | None


ClientEvent = Response | SendBody | TransactionDone | ConnectionClosed
