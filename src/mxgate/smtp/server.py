"""``ServerConnection``: one inbound SMTP conversation as a sans-IO object.

Owns the conversation from greeting to close: cutting the input into command
lines or DATA chunks, applying the transition table (``state.py``), answering
whatever the protocol answers by itself (EHLO, syntax and sequencing errors,
NOOP, RSET, VRFY, QUIT, STARTTLS, refused bodies, too many errors) and
queuing every reply, in command order, for ``data_to_send()``.

h11's API: ``receive_data(bytes)`` (b"" = end of stream), ``next_event()``
(an event or NEED_DATA), ``send(reply)``. ``MailFrom``, ``RcptTo`` and
``DataEnd`` are questions: until ``send()`` answers, ``next_event()`` raises
``LocalProtocolError`` (the caller cannot forget), and ``send()`` without a
question raises too (it cannot answer twice). PIPELINING (RFC 2920) needs
nothing more: commands are taken one at a time, replies queue up in order.
Timeouts are requested (``want_timer``), never scheduled.

Never does I/O, reads a clock or decides policy (who may send to whom, where
mail goes, whether it is stored). Never raises on anything the peer sends:
hostile input becomes replies and ``ProtocolViolation`` events.
"""

from __future__ import annotations

from collections.abc import Callable

from mxgate.core.reply import NEED_SMTPUTF8, Reply

from . import replies
from .buffer import ReceiveBuffer
from .data import DataDecoder
from .errors import LocalProtocolError, RemoteProtocolError
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
    _NeedData,
)
from .outbox import Hangup, Outbox
from .parse import (
    COMMAND_LINE_LIMIT,
    PARAMETER_LINE_LIMIT,
    Command,
    Verb,
    check_arguments,
    parse_command,
    parse_mail,
    parse_rcpt,
)
from .state import COMMAND_STATES, TRANSITIONS, Internal, State, Step
from .xclient import parse_xclient

Question = MailFrom | RcptTo | DataEnd
_Handler = Callable[["ServerConnection", Command, Step], Event | None]


class ServerConnection:
    """One inbound SMTP conversation. See the module docstring for the API."""

    def __init__(
        self,
        hostname: str,
        *,
        banner: str = "ESMTP mxgate",
        message_size_limit: int = 30_720_000,
        tls_available: bool = False,
        timeout: float = 300.0,
        hard_error_limit: int = 20,
        junk_command_limit: int = 100,
        max_line: int = COMMAND_LINE_LIMIT,
        max_parameter_line: int = PARAMETER_LINE_LIMIT,
    ) -> None:
        """``message_size_limit`` 0 means unlimited (Postfix);
        ``hard_error_limit`` 0 disables the limit; ``timeout`` is Postfix's
        ``smtpd_timeout``, only reported through ``want_timer``."""
        self.hostname = hostname
        self._size_limit = message_size_limit
        self._tls_available = tls_available
        self._timeout = timeout
        self._max_line = max_line
        self._max_parameter_line = max(max_parameter_line, max_line)
        self._state = State.GREETED
        self._in = ReceiveBuffer()
        self._out = Outbox(hostname, hard_error_limit, junk_command_limit)
        self._banner = banner
        self._xclient = False  # the caller allows this client XCLIENT
        self._out.put(replies.greeting(hostname, banner))
        self._question: Question | None = None
        self._step: Step | None = None
        self._decoder: DataDecoder | None = None
        self._tls_active = False
        self._smtputf8 = False  # the current transaction's MAIL had SMTPUTF8
        self._closed: ConnectionClosed | None = None
        self._after = "CONNECT"

    @property
    def state(self) -> State:
        return self._state

    @property
    def awaiting(self) -> Question | None:
        """The event that ``send()`` must answer next, if any."""
        return self._question

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def errors(self) -> int:
        """Client errors so far (forgiven when a message is accepted): what
        Postfix's smtpd_soft_error_limit and smtpd_hard_error_limit count."""
        return self._out.errors

    @property
    def want_timer(self) -> float | None:
        """Seconds of peer silence before ``timed_out()``; None: no timer."""
        if self._state is State.CLOSED or self._question is not None:
            return None
        return self._timeout

    @property
    def timeout_reply(self) -> Reply:
        return replies.timeout(self.hostname)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed its side.
        Dropped unread: bytes after the conversation ended, and bytes fed
        between ``StartTls`` and ``tls_established()`` (plaintext the client
        pipelined after STARTTLS, RFC 3207 4.2)."""
        if not data:
            self._in.eof = True
        elif self._in.eof:
            raise LocalProtocolError("receive_data() after the end of the stream")
        elif self._state is not State.CLOSED and self._state is not State.TLS:
            self._in.append(data)

    def next_event(self) -> Event | _NeedData:
        """The next event or ``NEED_DATA``; ``ConnectionClosed`` is final."""
        if self._question is not None:
            raise LocalProtocolError(f"answer {type(self._question).__name__} first")
        while True:
            state = self._state
            if state in COMMAND_STATES:
                event = self._next_command()
            elif state is State.DATA:
                event = self._next_data()
            elif state is State.CLOSED:
                assert self._closed is not None
                return self._closed
            elif self._in.eof:  # State.TLS: the peer left during the hand-off
                self._close("lost")
                continue
            else:
                raise LocalProtocolError("run the TLS handshake, then tls_established()")
            if event is not None:
                return event

    def send(self, reply: Reply) -> bytes:
        """Answer the pending ``MailFrom``/``RcptTo``/``DataEnd`` with a 2xx,
        4xx or 5xx reply. Returns (and drains) every byte now owed to the
        peer, in order: replies the connection queued earlier come first.
        A 2xx moves the transaction on; 421 (or 521) also closes the
        connection after the reply."""
        question = self._question
        if question is None:
            raise LocalProtocolError("send(): no command is waiting for an answer")
        code = reply.code
        if not 200 <= code < 600 or 300 <= code < 400:
            raise LocalProtocolError(f"{code} is no answer to {type(question).__name__}")
        step = self._step
        assert step is not None
        self._question = self._step = None
        positive = code < 300
        self._state = step.accepted if positive else step.refused
        if positive and isinstance(question, DataEnd):
            self._out.forgive()
        self._reply(reply)
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        """Drain the bytes queued for the peer (possibly b"")."""
        return self._out.drain()

    def tls_established(self) -> None:
        """The TLS handshake after ``StartTls`` succeeded: the session starts
        over (RFC 3207 4.2: forget the EHLO; the client must send it again).
        No new greeting is sent."""
        if self._state is not State.TLS:
            raise LocalProtocolError("tls_established() without an accepted STARTTLS")
        self._state = _internal(State.TLS, Internal.TLS_ESTABLISHED).accepted
        self._tls_active = True
        self._in.clear()

    def allow_xclient(self) -> None:
        """This client may send XCLIENT (Postfix's smtpd_authorized_xclient_hosts:
        the caller decides); EHLO then offers it."""
        self._xclient = True

    def timed_out(self) -> None:
        """The peer stayed silent longer than ``want_timer``: queue
        ``421 4.4.2 <hostname> Error: timeout exceeded`` and close."""
        self._shutdown(self.timeout_reply, "timeout")

    def close(self, reply: Reply | None = None) -> None:
        """Close from our side (e.g. shutdown with ``421 4.3.2 ...``). A pending
        question counts as answered by ``reply``. Idempotent."""
        self._shutdown(reply, "server")

    def _next_command(self) -> Event | _NeedData | None:
        name = ""
        try:
            line = self._in.next_line(self._max_parameter_line)
            if line is None:
                return self._need_data()
            cmd = parse_command(line, self._max_line)
            name = self._after = cmd.name
            rule = TRANSITIONS[self._state][cmd.verb]
            if cmd.verb is Verb.STARTTLS and (self._tls_active or not self._tls_available):
                rule = replies.TLS_ALREADY_ACTIVE if self._tls_active else replies.NOT_IMPLEMENTED
            if isinstance(rule, Reply):
                raise RemoteProtocolError(rule)  # out of sequence (Postfix checks this first)
            check_arguments(cmd)
        except RemoteProtocolError as error:
            return self._refuse(name, error.reply)
        return _HANDLERS[cmd.verb](self, cmd, rule)

    def _on_helo(self, cmd: Command, step: Step) -> Event | None:
        extended = cmd.verb is Verb.EHLO
        self._state = step.accepted
        if extended:
            starttls = self._tls_available and not self._tls_active
            self._reply(
                replies.ehlo(
                    self.hostname,
                    size_limit=self._size_limit,
                    starttls=starttls,
                    xclient=self._xclient,
                )
            )
        else:
            self._reply(replies.helo(self.hostname))
        return Helo(cmd.arg, extended)

    def _on_mail(self, cmd: Command, step: Step) -> Event | None:
        try:
            event = parse_mail(cmd, self._max_line)
        except RemoteProtocolError as error:
            return self._refuse(cmd.name, error.reply)
        if self._size_limit and event.size is not None and event.size > self._size_limit:
            return self._refuse(cmd.name, replies.SIZE_EXCEEDS_LIMIT)  # RFC 1870 6.1
        if not event.smtputf8 and not event.address.isascii():
            return self._refuse(cmd.name, NEED_SMTPUTF8)  # RFC 6531 3.4
        # RCPT comes only after a MAIL that was accepted, so the last one
        # parsed is the transaction's.
        self._smtputf8 = event.smtputf8
        return self._ask(event, step)

    def _on_rcpt(self, cmd: Command, step: Step) -> Event | None:
        # Whether a non-ASCII recipient needs SMTPUTF8 is the routing core's
        # call (SPEC section 3 lists it among the RCPT decisions).
        try:
            return self._ask(parse_rcpt(cmd, self._max_line, smtputf8=self._smtputf8), step)
        except RemoteProtocolError as error:
            return self._refuse(cmd.name, error.reply)

    def _on_data(self, cmd: Command, step: Step) -> Event | None:
        self._state = step.accepted
        self._decoder = DataDecoder(self._size_limit)
        self._reply(replies.GO_AHEAD)
        return DataStart()

    def _on_rset(self, cmd: Command, step: Step) -> Event | None:
        self._state = step.accepted
        self._reply(replies.OK)
        self._junk_command()
        return Rset()

    def _on_noop(self, cmd: Command, step: Step) -> Event | None:
        self._reply(replies.OK)  # RFC 5321 4.1.1.9: an argument is ignored
        self._junk_command()
        return Noop()

    def _on_help(self, cmd: Command, step: Step) -> Event | None:
        self._reply(replies.HELP)
        self._junk_command()
        return None

    def _on_vrfy(self, cmd: Command, step: Step) -> Event | None:
        self._reply(replies.VRFY_UNSURE)
        self._junk_command()
        return Vrfy(cmd.arg)

    def _on_starttls(self, cmd: Command, step: Step) -> Event | None:
        self._state = step.accepted
        self._reply(replies.READY_FOR_TLS)
        # RFC 3207 4.2 (and CVE-2011-0411): whatever the client pipelined
        # after STARTTLS was sent in plaintext; it must never be executed.
        self._in.clear()
        return StartTls()

    def _on_xclient(self, cmd: Command, step: Step) -> Event | None:
        if not self._xclient:
            return self._refuse(cmd.name, replies.XCLIENT_DENIED)
        attributes = parse_xclient(cmd.arg)
        if isinstance(attributes, Reply):
            return self._refuse(cmd.name, attributes)
        # As after STARTTLS, the session starts over; unlike it, with a new
        # greeting (Postfix's behaviour, which XCLIENT clients expect).
        self._state = step.accepted
        self._smtputf8 = False
        self._reply(replies.greeting(self.hostname, self._banner))
        return Xclient(attributes)

    def _on_quit(self, cmd: Command, step: Step) -> Event | None:
        self._reply(replies.BYE)
        self._close("quit")
        return Quit()

    def _on_forbidden(self, cmd: Command, step: Step) -> Event | None:
        self._reply(replies.FORBIDDEN, "forbidden")
        return ProtocolViolation(cmd.name, replies.FORBIDDEN)

    def _on_refused(self, cmd: Command, step: Step) -> Event | None:
        return self._refuse(cmd.name, _REFUSALS[cmd.verb])

    def _next_data(self) -> Event | _NeedData | None:
        decoder = self._decoder
        assert decoder is not None
        if not decoder.finished:
            body, self._in.pos, finished = decoder.decode(self._in.data, self._in.pos)
            if body:
                return DataChunk(body)  # the end (if seen) comes on the next call
            if not finished:
                return self._need_data()
        self._decoder = None
        self._after = "END-OF-MESSAGE"
        step = _internal(State.DATA, Internal.END_OF_DATA)
        refusal = decoder.rejection()
        if refusal is None:
            return self._ask(DataEnd(decoder.size, not decoder.dotted), step)
        self._state = step.refused
        self._reply(refusal)
        return DataRejected(decoder.size, refusal)

    def _need_data(self) -> _NeedData | None:
        if self._in.eof:  # whatever is left is an incomplete line or message
            self._close("lost")
            return None
        return NEED_DATA

    def _ask(self, question: Question, step: Step) -> Question:
        self._question, self._step = question, step
        return question

    def _refuse(self, command: str, reply: Reply) -> ProtocolViolation:
        self._reply(reply)
        return ProtocolViolation(command, reply)

    def _reply(self, reply: Reply, reason: CloseReason = "server") -> None:
        self._hangup(self._out.put(reply), reason)

    def _junk_command(self) -> None:
        self._hangup(self._out.junk_command(), "server")

    def _hangup(self, why: Hangup, reason: CloseReason) -> None:
        if why is not None:
            self._close("errors" if why == "errors" else reason)

    def _shutdown(self, reply: Reply | None, reason: CloseReason) -> None:
        if self._state is State.CLOSED:
            return
        self._question = self._step = None  # the reply answers it
        if reply is not None:
            self._out.put(reply, count=False)
        self._close(reason)

    def _close(self, reason: CloseReason) -> None:
        if self._state is State.CLOSED:
            return
        self._state = State.CLOSED
        self._closed = ConnectionClosed(reason, self._after)
        # Commands after QUIT (or after the 421) are never read.
        self._in.clear()
        self._decoder = None


def _internal(state: State, trigger: Internal) -> Step:
    step = TRANSITIONS[state][trigger]
    assert isinstance(step, Step)
    return step


_HANDLERS: dict[Verb, _Handler] = {
    Verb.HELO: ServerConnection._on_helo,
    Verb.EHLO: ServerConnection._on_helo,
    Verb.MAIL: ServerConnection._on_mail,
    Verb.RCPT: ServerConnection._on_rcpt,
    Verb.DATA: ServerConnection._on_data,
    Verb.RSET: ServerConnection._on_rset,
    Verb.NOOP: ServerConnection._on_noop,
    Verb.QUIT: ServerConnection._on_quit,
    Verb.VRFY: ServerConnection._on_vrfy,
    Verb.EXPN: ServerConnection._on_refused,
    Verb.HELP: ServerConnection._on_help,
    Verb.STARTTLS: ServerConnection._on_starttls,
    Verb.AUTH: ServerConnection._on_refused,
    Verb.XCLIENT: ServerConnection._on_xclient,
    Verb.FORBIDDEN: ServerConnection._on_forbidden,
    Verb.UNKNOWN: ServerConnection._on_refused,
}

# Commands refused the same way in every state.
_REFUSALS: dict[Verb, Reply] = {
    Verb.EXPN: replies.NOT_IMPLEMENTED,  # reveals nothing, like VRFY
    Verb.AUTH: replies.AUTH_DISABLED,  # no submission on an MX
    Verb.UNKNOWN: replies.UNRECOGNIZED,  # BDAT, ETRN... included
}
