"""One outbound SMTP/LMTP connection: sockets and clocks around ``ClientConnection``.

Owns the I/O of a session: connecting (TCP or UNIX socket) within the
connect timeout, reading replies within the stage's timeout (greeting,
command, or data for the body and the final replies), STARTTLS with the
configured security level, streaming the body from the spool in chunks, and
a polite close (QUIT, then the socket). Everything that goes wrong becomes
a ``core.outcome`` verdict worded as Postfix words it
(``SessionFailure`` while setting up; ``broken`` after a transaction that
broke off, with ``TransactionDone.lost`` saying where).

Never parses SMTP (``mxgate.smtp.client`` does), never decides what a reply
means for a recipient (``courier``), never keeps a connection for later
(``pool``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal, cast

from mxgate.core.outcome import (
    Deferred,
    Outcome,
    classify,
    connection_failed,
    connection_lost,
    conversation_timed_out,
    tls_handshake_failed,
    tls_not_offered,
    tls_refused,
)
from mxgate.core.reply import Reply
from mxgate.smtp.client import (
    NEED_DATA,
    ClientConnection,
    ClientState,
    Command,
    ConnectionClosed,
    MailRequest,
    RcptRequest,
    Response,
    SendBody,
    TransactionDone,
)
from mxgate.smtp.errors import RemoteProtocolError
from mxgate.spool import SpoolError

from .nexthop import Candidate
from .result import Relay, malformed_reply, queue_file_error, refused_to_talk, stage_of
from .wakeup import wake

TlsLevel = Literal["none", "may", "encrypt"]
BODY_CHUNK = 65536
CLOSE_TIMEOUT = 2.0  # for QUIT's reply and the TLS close: never worth waiting longer


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds per stage (Postfix: smtp_connect_timeout, smtp_helo_timeout,
    smtp_mail/rcpt_timeout, smtp_data_done_timeout); each read or write is
    bounded, not the stage as a whole."""

    connect: float = 30.0
    greeting: float = 300.0
    command: float = 300.0
    data: float = 600.0


class SessionFailure(Exception):
    """Setting up the session failed. ``outcome`` is the verdict (Deferred:
    try the next server; Bounced: the server refused us with 5xx at EHLO);
    ``plaintext_retry`` asks for a new connection without STARTTLS (``may``)."""

    def __init__(self, outcome: Outcome, *, plaintext_retry: bool = False) -> None:
        super().__init__(outcome.reply.line())
        self.outcome, self.plaintext_retry = outcome, plaintext_retry
        self.connected = True  # False: the connection itself failed (relay=none)


class _BodyError(Exception):
    pass


class _Channel(asyncio.Protocol):
    """The socket side of a session: what arrives goes straight into the
    ``ClientConnection`` (no stream buffer in between) and wakes the one
    coroutine waiting for it. A delivery awaits a reply three or four times
    per message; a future per wait costs a fraction of what a StreamReader
    read under ``wait_for`` did (a task each).

    Timeouts: each wait moves ``deadline``; one timer per channel, re-armed
    only when it fires before the deadline of the wait then in progress, so
    a busy connection arms a timer every few minutes, not one per reply."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.eof = False  # no more data will come (EOF, error, or closed by us)
        self.error: Exception | None = None  # how the connection was lost, if not by EOF
        # Kept: asyncio.get_running_loop() costs a getpid() system call each time.
        self.loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self.loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport: no isinstance.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        wake(self._waiter)

    def eof_received(self) -> bool:
        self._end(None)
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._end(exc)
        if not self.closed.done():
            self.closed.set_result(None)
        wake(self._drained)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        wake(self._drained)

    # -- for the session -------------------------------------------------

    def _end(self, exc: Exception | None) -> None:
        if not self.eof:
            self.eof = True
            self.error = exc
            self.conn.receive_data(b"")
        wake(self._waiter)

    def send(self, data: bytes) -> bool:
        """Write ``data``; True when the caller must ``drain`` first before
        writing more (the transport's buffer is above its high-water mark)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("Connection lost")
        self.transport.write(data)
        return self._paused

    async def drain(self, timeout: float) -> None:
        while self._paused:
            if self.transport is None or self.transport.is_closing():
                raise ConnectionResetError("Connection lost")
            self._drained = self.loop.create_future()
            try:
                await self._bounded(self._drained, timeout)
            finally:
                self._drained = None

    async def wait_data(self, timeout: float) -> None:
        """Until more data (or EOF) arrived; TimeoutError after ``timeout``
        seconds, the OSError that broke the connection if one did."""
        if self.eof:
            if self.error is not None:
                raise self.error
            return
        self._waiter = self.loop.create_future()
        try:
            await self._bounded(self._waiter, timeout)
        finally:
            self._waiter = None
        if self.eof and self.error is not None:
            raise self.error

    async def _bounded(self, waiter: asyncio.Future[None], timeout: float) -> None:
        self._deadline = deadline = self.loop.time() + timeout
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._expire)
            self._timer_at = deadline
        await waiter

    def _expire(self) -> None:
        self._timer = None
        waiter = self._waiter if self._waiter is not None else self._drained
        if waiter is None or waiter.done():
            return  # nobody waits: the next wait arms the timer again
        if self.loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._timer = self.loop.call_at(self._deadline, self._expire)
            self._timer_at = self._deadline


def _connect_failed(candidate: Candidate, reason: str) -> Deferred:
    if candidate.unix_path:  # Postfix: "connect to /path: No such file or directory"
        return Deferred(Reply(451, "4.4.1", f"connect to {candidate.unix_path}: {reason}"))
    return connection_failed(candidate.hostname, candidate.ip, candidate.port, reason)


@functools.cache
def client_tls_context() -> ssl.SSLContext:
    """Opportunistic TLS as Postfix does it by default for ``may`` and
    ``encrypt``: encrypted, but the certificate is not verified (there is no
    authenticated name to check it against without DANE or MTA-STS), and no
    SNI is sent (Postfix's empty smtp_tls_servername). Built once: no CA
    store to load, since nothing is verified."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Session:
    """A greeted, EHLO'd (and maybe encrypted) connection to one server."""

    def __init__(
        self,
        candidate: Candidate,
        channel: _Channel,
        timeouts: Timeouts,
    ) -> None:
        self.candidate = candidate
        self.relay = Relay(candidate.hostname, candidate.ip, candidate.port, candidate.unix_path)
        self.host, self.address = self.relay.hostname, self.relay.address
        self.conn = channel.conn
        self.timeouts = timeouts
        self.tls = False
        self.transactions = 0
        self.created = time.monotonic()
        self.greeted_as = ""  # the first word of the greeting: the server's name
        self.broken: Outcome | None = None
        self._channel = channel

    # --- set-up ----------------------------------------------------------

    @classmethod
    async def open(
        cls,
        candidate: Candidate,
        *,
        lmtp: bool,
        helo_name: str,
        tls_level: TlsLevel,
        tls_context: ssl.SSLContext | None,
        timeouts: Timeouts,
    ) -> Session:
        """Connect, read the greeting, EHLO/LHLO, STARTTLS as ``tls_level``
        says; raises ``SessionFailure``."""
        conn = ClientConnection(lmtp=lmtp)
        loop = asyncio.get_running_loop()
        try:
            opening: Awaitable[tuple[asyncio.BaseTransport, _Channel]]
            if candidate.unix_path:
                opening = loop.create_unix_connection(lambda: _Channel(conn), candidate.unix_path)
            else:
                opening = loop.create_connection(
                    lambda: _Channel(conn), candidate.ip, candidate.port
                )
            _transport, channel = await asyncio.wait_for(opening, timeouts.connect)
        except (TimeoutError, OSError) as err:
            if isinstance(err, TimeoutError):
                reason = "Connection timed out"
            else:  # asyncio words it "Connect call failed (...)"; Postfix says strerror
                reason = os.strerror(err.errno) if err.errno else str(err) or type(err).__name__
            failure = SessionFailure(_connect_failed(candidate, reason))
            failure.connected = False
            raise failure from None
        session = cls(candidate, channel, timeouts)
        try:
            await session._setup(helo_name, tls_level, tls_context)
        except BaseException:
            await session.close(quit=False)
            raise
        return session

    async def _setup(
        self, helo_name: str, tls_level: TlsLevel, tls_context: ssl.SSLContext | None
    ) -> None:
        greeting = await self._response()
        if greeting.reply.code != 220:
            await self.close()
            raise SessionFailure(refused_to_talk(self.relay, greeting.reply))
        words = greeting.reply.text.split(None, 1)
        self.greeted_as = words[0] if words else ""
        await self._hello(helo_name)
        if tls_level == "none" or self.candidate.unix_path:
            return
        if not self.conn.capabilities.starttls:
            if tls_level == "encrypt":
                await self.close()
                raise SessionFailure(tls_not_offered(self.host, self.address))
            return
        self.conn.starttls()
        answer = await self._response()
        if answer.reply.code != 220:
            if tls_level == "encrypt":
                await self.close()
                raise SessionFailure(tls_refused(self.host, self.address, answer.reply))
            if self.conn.state is not ClientState.READY:  # 421: the server is leaving
                await self.close()
                raise SessionFailure(classify(answer.reply, self.relay.remote(answer.command)))
            return  # "may": carry on in plaintext on this connection
        channel = self._channel
        assert channel.transport is not None
        try:
            # No server_hostname: no SNI, as Postfix's empty smtp_tls_servername.
            transport = await channel.loop.start_tls(
                channel.transport,
                channel,
                tls_context or client_tls_context(),
                server_side=False,
                ssl_handshake_timeout=self.timeouts.command,
            )
        except (OSError, TimeoutError) as err:  # ssl.SSLError is an OSError
            await self.close(quit=False)
            reason = str(getattr(err, "reason", None) or type(err).__name__)
            failure = tls_handshake_failed(self.host, self.address, reason)
            # Postfix with "may" tries again in plaintext; "encrypt" defers.
            raise SessionFailure(failure, plaintext_retry=tls_level == "may") from None
        if transport is None:  # the connection went away during the handshake
            await self.close(quit=False)
            raise SessionFailure(
                tls_handshake_failed(self.host, self.address, "connection lost"),
                plaintext_retry=tls_level == "may",
            )
        channel.transport = transport
        self.tls = True
        self.conn.tls_started()
        await self._hello(helo_name)

    async def _hello(self, helo_name: str) -> None:
        self.conn.hello(helo_name)
        answer = await self._response()
        if answer.reply.code != 250:
            await self.close()
            raise SessionFailure(classify(answer.reply, self.relay.remote(answer.command)))

    async def _response(self) -> Response:
        """The next session-level reply, set-up failures as SessionFailure."""
        stage = stage_of(self.conn.awaiting)
        try:
            event = await self._next_event()
        except TimeoutError:
            await self.close(quit=False)
            raise SessionFailure(conversation_timed_out(self.host, self.address, stage)) from None
        except OSError:
            await self.close(quit=False)
            raise SessionFailure(connection_lost(self.host, self.address, stage)) from None
        except RemoteProtocolError as err:
            await self.close(quit=False)
            raise SessionFailure(malformed_reply(self.relay, stage, err.reply.text)) from None
        if isinstance(event, ConnectionClosed):
            await self.close(quit=False)
            raise SessionFailure(connection_lost(self.host, self.address, stage))
        assert isinstance(event, Response), event
        return event

    # --- the I/O loop ----------------------------------------------------

    def _timeout(self) -> float:
        stage = self.conn.awaiting
        if stage is Command.GREETING:
            return self.timeouts.greeting
        if stage in (Command.DOT, Command.BODY):
            return self.timeouts.data
        return self.timeouts.command

    async def _flush(self, timeout: float) -> None:
        out = self.conn.data_to_send()
        if out and self._channel.send(out):
            await self._channel.drain(timeout)

    async def _next_event(self) -> object:
        conn, channel = self.conn, self._channel
        while True:
            # Before and after every event: the connection may have queued a
            # command of its own (HELO fallback, next RCPT without PIPELINING).
            out = conn.data_to_send()
            if out and channel.send(out):
                await channel.drain(self._timeout())
            event = conn.next_event()
            out = conn.data_to_send()
            if out and channel.send(out):
                await channel.drain(self._timeout())
            if event is not NEED_DATA:
                return event
            await channel.wait_data(self._timeout())

    # --- transactions ----------------------------------------------------

    @property
    def usable(self) -> bool:
        """Ready for another transaction (nothing broke, still connected)."""
        channel = self._channel
        return (
            self.broken is None
            and self.conn.state is ClientState.READY
            and not channel.eof
            and channel.transport is not None
            and not channel.transport.is_closing()
        )

    async def transact(
        self, mail: MailRequest, rcpts: Sequence[RcptRequest], body: BinaryIO
    ) -> TransactionDone:
        """One MAIL .. end of DATA. Never raises for the peer's behaviour: a
        broken conversation gives ``TransactionDone.lost`` and ``broken``."""
        self.conn.begin(mail, rcpts)
        self.transactions += 1
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, SendBody):
                    await self._stream(body)
                elif isinstance(event, TransactionDone):
                    if event.lost is not None:
                        stage = stage_of(event.lost)
                        self.broken = connection_lost(self.host, self.address, stage)
                    return event
        except TimeoutError:
            stage = stage_of(self.conn.awaiting)
            self.broken = conversation_timed_out(self.host, self.address, stage)
        except OSError:
            self.broken = connection_lost(self.host, self.address, stage_of(self.conn.awaiting))
        except RemoteProtocolError as err:
            stage = stage_of(self.conn.awaiting)
            self.broken = malformed_reply(self.relay, stage, err.reply.text)
        except _BodyError as err:
            # The dot must never follow a partial body: drop the connection.
            self.broken = queue_file_error(str(err))
        done = self.conn.abort() or TransactionDone(())
        await self.close(quit=False)
        return done

    async def _stream(self, body: BinaryIO) -> None:
        # The last chunk goes out with the final dot in one write (most
        # bodies are one chunk): a chunk is written only once the next read
        # shows that more follows.
        chunk = self._read_body(body)
        while chunk:
            self.conn.send_body(chunk)
            chunk = self._read_body(body)
            if chunk:
                await self._flush(self.timeouts.data)
        self.conn.end_body()

    @staticmethod
    def _read_body(body: BinaryIO) -> bytes:
        try:
            # A local spool file: a 64 KiB read does not stall the loop
            # more than the socket write that follows it.
            return body.read(BODY_CHUNK)
        except (OSError, SpoolError) as err:
            raise _BodyError(str(err)) from None

    async def close(self, *, quit: bool = True) -> None:
        """QUIT (waiting briefly for its reply) and close the socket. No QUIT
        while a reply is outstanding: that conversation is broken anyway."""
        channel = self._channel
        idle = self.conn.awaiting is None
        if quit and idle and not channel.eof and self.usable_transport:
            with contextlib.suppress(Exception):
                self.conn.quit()
                await asyncio.wait_for(self._quit(), CLOSE_TIMEOUT)
        self.conn.abort()
        if channel.transport is not None:
            channel.transport.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(channel.closed), CLOSE_TIMEOUT)

    @property
    def usable_transport(self) -> bool:
        transport = self._channel.transport
        return transport is not None and not transport.is_closing()

    async def _quit(self) -> None:
        while True:
            await self._flush(CLOSE_TIMEOUT)
            event = self.conn.next_event()
            if event is not NEED_DATA:
                return
            await self._channel.wait_data(CLOSE_TIMEOUT)
