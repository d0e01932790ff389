"""Sans-IO SMTP (after h11): bytes in, events out, replies as bytes.

Owns the SMTP wire protocol of the inbound server: ``ServerConnection``, its
events and errors, the command grammar and the DATA decoder. Stdlib only, plus
``mxgate.core.reply``; never touches sockets, asyncio, TLS objects, files,
clocks or the routing data (the transport in ``mxgate.server`` does that).
"""

from __future__ import annotations

from .errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from .events import (
    NEED_DATA,
    CloseReason,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataRejected,
    DataStart,
    Event,
    Helo,
    MailFrom,
    Noop,
    ProtocolViolation,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
    Xclient,
)
from .server import Question, ServerConnection
from .state import State

__all__ = [
    "NEED_DATA",
    "CloseReason",
    "ConnectionClosed",
    "DataChunk",
    "DataEnd",
    "DataRejected",
    "DataStart",
    "Event",
    "Helo",
    "LocalProtocolError",
    "MailFrom",
    "Noop",
    "ProtocolError",
    "ProtocolViolation",
    "Question",
    "Quit",
    "RcptTo",
    "RemoteProtocolError",
    "Rset",
    "ServerConnection",
    "StartTls",
    "State",
    "Vrfy",
    "Xclient",
]
