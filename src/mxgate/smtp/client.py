"""Sans-IO SMTP and LMTP client (after h11): commands out as bytes, replies in as events.

Owns the outbound conversation of one connection: the greeting, EHLO/LHLO
with HELO fallback, STARTTLS (RFC 3207), and mail transactions: MAIL, RCPT
and DATA, pipelined when the server advertised PIPELINING (RFC 2920), the
body dot-stuffed as it streams, and the final replies, one for all accepted
recipients with SMTP and one per accepted recipient with LMTP (RFC 2033 4.2).
The sequencing of a transaction lives here, so that it can be checked with
transcripts and no I/O; ``mxgate.delivery`` only moves bytes and clocks.

Why our own client and not aiosmtplib: aiosmtplib has no LMTP (no LHLO and
no per-recipient replies after the final dot), and LMTP to the mailbox
servers is half of what a gateway does. A sans-IO core also keeps the
protocol testable without sockets, like the server side.

Usage: call a method (``hello``, ``starttls``, ``begin``, ``send_body``,
``end_body``, ``rset``, ``quit``), write ``data_to_send()``, feed what the
server says to ``receive_data()`` (``b""`` at EOF), and take events from
``next_event()`` until it returns ``NEED_DATA``; the connection may queue
follow-up commands by itself (HELO after a refused EHLO, the next RCPT
without PIPELINING, DATA once a recipient is accepted), so write
``data_to_send()`` after every event too.

Never does I/O, never reads a clock, never decides what a reply means for
the message (4xx versus 5xx is the courier's business); a caller that
breaks the sequence gets ``LocalProtocolError``, a server that breaks the
framing ``RemoteProtocolError``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from mxgate.core.reply import Reply

from .client_events import (
    ClientEvent,
    ClientState,
    Command,
    ConnectionClosed,
    RecipientReply,
    Response,
    SendBody,
    TransactionDone,
)
from .encode import BodyEncoder, MailRequest, RcptRequest, mail_line, rcpt_line, simple_line
from .errors import LocalProtocolError
from .events import NEED_DATA, _NeedData
from .reader import NO_CAPABILITIES, Capabilities, ReplyReader, make_reply, parse_ehlo

__all__ = [
    "NEED_DATA",
    "Capabilities",
    "ClientConnection",
    "ClientEvent",
    "ClientState",
    "Command",
    "ConnectionClosed",
    "MailRequest",
    "RcptRequest",
    "RecipientReply",
    "Response",
    "SendBody",
    "TransactionDone",
]


# RFC 2920 3.1: these may only end a pipelined group. Tuples, not sets: a set
# lookup hashes the member through Enum.__hash__, interpreted (mxgate.native).
_GROUP_ENDERS: tuple[Command, ...] = (Command.EHLO, Command.LHLO, Command.HELO, Command.DATA)
_GROUP_ENDERS += (Command.QUIT, Command.NOOP, Command.STARTTLS, Command.GREETING, Command.DOT)


_HELLO = (Command.GREETING, Command.EHLO, Command.LHLO, Command.HELO)


class ClientConnection:
    """One client connection's protocol state. ``lmtp=True`` speaks LMTP."""

    def __init__(self, *, lmtp: bool = False) -> None:
        self.lmtp = lmtp
        self.state = ClientState.GREETING
        self.capabilities = NO_CAPABILITIES
        self._reader = ReplyReader()
        self._out: list[bytes] = []
        self._eof = False
        # (command, index of the recipient for RCPT / LMTP end of data)
        self._pending: deque[tuple[Command, int]] = deque([(Command.GREETING, -1)])
        self._hello_name = ""
        self._mail: MailRequest | None = None
        self._rcpts: list[RcptRequest] = []
        self._results: list[RecipientReply | None] = []
        self._mail_reply: Reply | None = None
        self._accepted: list[int] = []
        self._next_rcpt = 0
        self._body: BodyEncoder | None = None
        self._aborting = False

    # --- I/O seam --------------------------------------------------------

    def data_to_send(self) -> bytes:
        out, self._out = self._out, []
        return out[0] if len(out) == 1 else b"".join(out)

    def receive_data(self, data: bytes) -> None:
        if data:
            self._reader.feed(data)
        else:
            self._eof = True

    @property
    def awaiting(self) -> Command | None:
        """The command whose reply is awaited, BODY while the body streams."""
        if self.state is ClientState.BODY:
            return Command.BODY
        return self._pending[0][0] if self._pending else None

    def next_event(self) -> ClientEvent | _NeedData:
        """The next event, or ``NEED_DATA``. Raises ``RemoteProtocolError``
        for a malformed reply (the connection is then CLOSED). Once CLOSED,
        always ``ConnectionClosed``."""
        while True:
            if self.state is ClientState.CLOSED:
                return ConnectionClosed(None)
            if self._pending:
                try:
                    raw = self._reader.next_reply()
                except Exception:
                    self.state = ClientState.CLOSED
                    raise
                if raw is not None:
                    command, index = self._pending.popleft()
                    # RFC 2034: codes once ENHANCEDSTATUSCODES is advertised;
                    # before the EHLO answer nothing can be, and a code that is
                    # plainly there is taken, as Postfix does ("554 5.7.1 ...").
                    enhanced = self.capabilities.enhanced_status_codes or command in _HELLO
                    event = self._on_reply(command, index, raw[1], make_reply(*raw, enhanced))
                    if event is not None:
                        return event
                    continue
            if self._eof:
                return self._lost()
            return NEED_DATA

    # --- session commands ------------------------------------------------

    def hello(self, name: str) -> None:
        """EHLO (LHLO for LMTP); for SMTP, HELO follows by itself if EHLO is
        refused with 5xx (RFC 5321 4.1.4 / 3.2)."""
        self._expect(ClientState.CONNECTED)
        self._hello_name = name
        command = Command.LHLO if self.lmtp else Command.EHLO
        self._send(command, simple_line(command._value_, name))
        self.state = ClientState.HELLO

    def starttls(self) -> None:
        self._expect(ClientState.READY)
        if not self.capabilities.starttls:
            raise LocalProtocolError("STARTTLS was not advertised")
        self._send(Command.STARTTLS, simple_line("STARTTLS"))
        self.state = ClientState.BUSY

    def tls_started(self) -> None:
        """The caller completed the TLS handshake: forget everything learned
        in plaintext and say EHLO again (RFC 3207 4.2)."""
        self._expect(ClientState.TLS)
        self._reader.clear()
        self.capabilities = NO_CAPABILITIES
        self.state = ClientState.CONNECTED

    def rset(self) -> None:
        self._expect(ClientState.READY)
        self._send(Command.RSET, simple_line("RSET"))
        self.state = ClientState.BUSY

    def noop(self) -> None:
        self._expect(ClientState.READY)
        self._send(Command.NOOP, simple_line("NOOP"))
        self.state = ClientState.BUSY

    def quit(self) -> None:
        """QUIT, in any state until the server closed its side: it ends
        whatever is going on (RFC 5321 3.1: also after a 554 greeting)."""
        if self._eof:
            raise LocalProtocolError("QUIT after the server closed the connection")
        self._pending.clear()
        self._out.append(simple_line("QUIT"))
        self._pending.append((Command.QUIT, -1))
        self.state = ClientState.BUSY

    # --- mail transaction -----------------------------------------------

    def begin(self, mail: MailRequest, rcpts: Sequence[RcptRequest]) -> None:
        """Start MAIL .. DATA for ``rcpts``. With PIPELINING, MAIL, every
        RCPT and DATA go out in one group (RFC 2920 3.1); without, one
        command at a time as replies arrive."""
        self._expect(ClientState.READY)
        if not rcpts:
            raise LocalProtocolError("a transaction needs a recipient")
        self._mail, self._rcpts = mail, list(rcpts)
        self._results = [None] * len(rcpts)
        self._mail_reply, self._accepted, self._next_rcpt = None, [], 0
        self._body, self._aborting = None, False
        self.state = ClientState.TRANSACTION
        self._send(Command.MAIL, mail_line(mail, self.capabilities))
        if self.capabilities.pipelining:
            while self._next_rcpt < len(self._rcpts):
                self._send_next_rcpt()
            self._send(Command.DATA, simple_line("DATA"))

    def send_body(self, chunk: bytes) -> None:
        """Queue one chunk of the message as stored (any line ends)."""
        if self.state is not ClientState.BODY or self._body is None:
            raise LocalProtocolError(f"send_body in state {self.state.name}")
        data = self._body.encode(chunk)
        if data:
            self._out.append(data)

    def end_body(self) -> None:
        """End the body with CRLF.CRLF; the final replies follow."""
        if self.state is not ClientState.BODY or self._body is None:
            raise LocalProtocolError(f"end_body in state {self.state.name}")
        self._out.append(self._body.finish())
        self._body = None
        if self.lmtp:  # RFC 2033 4.2: one reply per accepted RCPT, in order
            self._pending.extend((Command.DOT, i) for i in self._accepted)
        else:
            self._pending.append((Command.DOT, -1))
        self.state = ClientState.TRANSACTION

    def abort(self) -> TransactionDone | None:
        """The conversation broke (timeout, I/O error): CLOSED, and the
        transaction's results so far, or None outside a transaction."""
        stage = self.awaiting
        in_transaction = self.state in (ClientState.TRANSACTION, ClientState.BODY)
        self.state = ClientState.CLOSED
        self._pending.clear()
        return self._done(stage) if in_transaction else None

    # --- internals -------------------------------------------------------

    def _expect(self, state: ClientState) -> None:
        if self.state is not state:
            raise LocalProtocolError(f"expected state {state.name}, in {self.state.name}")

    def _send(self, command: Command, line: bytes) -> None:
        if self._pending and self._pending[-1][0] in _GROUP_ENDERS:
            raise LocalProtocolError(f"{command.value} after {self._pending[-1][0].value}")
        self._out.append(line)
        self._pending.append((command, -1))

    def _send_next_rcpt(self) -> None:
        i = self._next_rcpt
        self._next_rcpt += 1
        self._out.append(rcpt_line(self._rcpts[i], self.capabilities))
        self._pending.append((Command.RCPT, i))

    def _lost(self) -> ClientEvent:
        stage = self.awaiting
        done = self.abort()
        return done if done is not None else ConnectionClosed(stage)

    def _done(self, lost: Command | None = None) -> TransactionDone:
        results = tuple(r for r in self._results if r is not None)
        self._mail, self._rcpts, self._results, self._accepted = None, [], [], []
        if self.state is not ClientState.CLOSED:
            # RFC 5321 3.8: 421 means the server is closing the connection.
            closing = any(r.reply.code == 421 for r in results)
            self.state = ClientState.CLOSED if closing else ClientState.READY
        return TransactionDone(results, lost)

    def _on_reply(
        self, command: Command, index: int, lines: list[str], reply: Reply
    ) -> ClientEvent | None:
        if command in (Command.MAIL, Command.RCPT, Command.DATA, Command.DOT):
            return self._on_transaction_reply(command, index, reply)
        if command is Command.QUIT:
            self.state = ClientState.CLOSED
        elif command is Command.GREETING:
            self.state = ClientState.CONNECTED if reply.code == 220 else ClientState.CLOSED
        elif command in (Command.EHLO, Command.LHLO, Command.HELO):
            if reply.code == 250:
                self.capabilities = (
                    parse_ehlo(lines) if command is not Command.HELO else NO_CAPABILITIES
                )
                self.state = ClientState.READY
            elif command is Command.EHLO and reply.is_permanent:
                self.state = ClientState.CONNECTED  # RFC 5321 3.2: fall back to HELO
                self._send(Command.HELO, simple_line("HELO", self._hello_name))
                self.state = ClientState.HELLO
                return None
            else:
                self.state = ClientState.CLOSED
        elif command is Command.STARTTLS:
            self.state = ClientState.TLS if reply.code == 220 else ClientState.READY
        else:  # RSET, NOOP
            self.state = ClientState.READY if reply.code == 250 else ClientState.CLOSED
        if reply.code == 421:  # RFC 5321 3.8: the server is closing
            self.state = ClientState.CLOSED
        return Response(command, reply)

    def _on_transaction_reply(
        self, command: Command, index: int, reply: Reply
    ) -> ClientEvent | None:
        if command is Command.MAIL:
            self._mail_reply = reply
            if not reply.is_positive:
                self._results = [RecipientReply(r.address, reply, command) for r in self._rcpts]
                # Pipelined RCPTs and DATA still get (503) replies: drain them.
                return self._done() if not self._pending else None
            if not self.capabilities.pipelining:
                self._send_next_rcpt()
            return None
        mail_ok = self._mail_reply is not None and self._mail_reply.is_positive
        if command is Command.RCPT:
            if mail_ok:
                address = self._rcpts[index].address
                if reply.is_positive:
                    self._accepted.append(index)
                else:
                    self._results[index] = RecipientReply(address, reply, command)
                if not self.capabilities.pipelining:
                    if self._next_rcpt < len(self._rcpts):
                        self._send_next_rcpt()
                    elif self._accepted:
                        self._send(Command.DATA, simple_line("DATA"))
                    else:
                        return self._done()
            return None
        if command is Command.DATA:
            if reply.code == 354 and (self._aborting or not (mail_ok and self._accepted)):
                # RFC 2920 3.1: 354 with nobody accepted; end the empty
                # message at once, and ignore its reply.
                self._aborting = True
                self._out.append(b".\r\n")
                self._pending.append((Command.DOT, -1))
                return None
            if reply.code == 354:
                self._body = BodyEncoder(self._mail is not None and self._mail.plain_body)
                self.state = ClientState.BODY
                return SendBody()
            if mail_ok:
                if reply.is_positive:
                    # RFC 5321 4.3.2: only 354 may answer DATA. A 2xx (or
                    # another 3xx) here would read as "delivered" for a body
                    # that never went; a transient failure (as for a reply we
                    # cannot read) keeps the message and tries again.
                    reply = Reply(
                        451, "4.5.0", f"unexpected reply to DATA, 354 expected: {reply.line()}"
                    )
                for i in self._accepted:
                    self._results[i] = RecipientReply(self._rcpts[i].address, reply, command)
            return self._done()
        # end of DATA
        if not self._aborting:
            targets = [index] if self.lmtp else self._accepted
            for i in targets:
                self._results[i] = RecipientReply(self._rcpts[i].address, reply, command)
        return self._done() if not self._pending else None
