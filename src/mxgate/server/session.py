"""One inbound SMTP connection: bytes between the socket and the sans-IO protocol.

Owns the glue of a session: feeding ``smtp.ServerConnection``, answering its
questions (MAIL, RCPT, end of DATA) from the routing core and the spool, TLS
hand-off, the idle timer, shutting down, and when the session's mail log lines
are written (what they say and count is ``session_log``'s).

Shutting down (the listener calls ``shutdown()``): a session waiting for a
command between transactions answers ``421 4.3.2`` and hangs up at once; one in
the middle of a transaction finishes it first (RFC 5321 3.8), so a message
already being sent is still taken.

Never parses SMTP itself (``mxgate.smtp`` does), never decides routing
(``mxgate.core`` does) and never says 250 after DATA before the spool's commit
returned: the message is on stable storage when the client hears "queued".
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

from mxgate.core.address import AddressError, parse_path
from mxgate.core.envelope import Envelope
from mxgate.core.policy import decide_recipient
from mxgate.core.reply import Reply, need_fqdn_sender
from mxgate.core.snapshot import RoutingData
from mxgate.core.srs_keys import SrsContext
from mxgate.maillog import MailLog, client_label
from mxgate.metrics.counts import SmtpCounts
from mxgate.server.busy_poll import BusyPoller
from mxgate.server.headers import received_header
from mxgate.server.session_log import bump, counted_verb, log_close, log_reject, printable
from mxgate.server.transaction import (
    BAD_SENDER,
    OK_SENDER,
    SPOOL_FAILED,
    SPOOL_FULL,
    TOO_MANY_HOPS,
    SessionSettings,
    Transaction,
    build_envelope,
    shutting_down,
    with_protocol,
)
from mxgate.smtp import (
    NEED_DATA,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataRejected,
    DataStart,
    Helo,
    MailFrom,
    ProtocolViolation,
    Quit,
    RcptTo,
    Rset,
    ServerConnection,
    StartTls,
    Xclient,
)
from mxgate.smtp.proxy import ProxyHeaderError, read_proxy_header
from mxgate.smtp.state import State
from mxgate.spool import Spool, SpoolError, SpoolFullError


class SessionRegistry(Protocol):
    """Where sessions sign in and out (the listener: per-client caps, shutdown)."""

    def track(self, session: Session) -> None: ...

    def admit(self, session: Session) -> bool: ...

    def forget(self, session: Session) -> None: ...


COMMITTING = object()
"""Session._busy while the journal commits a message (no task: a callback)."""

TARPIT = object()
"""Session._busy while replies wait out smtpd_error_sleep_time (a timer)."""


class Session(asyncio.Protocol):
    """One connection, from greeting to close, as an asyncio protocol.

    A protocol rather than streams: the events of one read are handled in the
    ``data_received`` call that brought them and their replies leave in one
    write, with no task, future or timer made per command (streams with
    ``wait_for`` cost several of each per read; on the hot path that was most
    of a worker's CPU). Only the end of DATA waits (for the spool's commit):
    reading pauses, and the rest of the pipeline is taken up once the reply
    is out.
    """

    def __init__(
        self,
        settings: SessionSettings,
        snapshot: Callable[[], RoutingData | None],
        spool: Spool,
        log: MailLog,
        srs: Callable[[], SrsContext | None] | None = None,
        registry: SessionRegistry | None = None,
        counts: SmtpCounts | None = None,
    ) -> None:
        self.srs = srs  # SRS settings, keys and time for one RCPT; None: SRS off
        self.settings = settings
        self.snapshot = snapshot
        self.spool = spool
        self.log = log
        self.registry = registry
        # The worker's busy poller (busy_poll.py), set by the listener; None: off.
        self.poller: BusyPoller | None = None
        self.counted_ip = ""  # the address the registry counts this connection under
        self.worker_counts = counts  # the worker's totals, for metrics
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.client_ip = "unknown"
        self.client_name: str | None = None  # its host name, when XCLIENT gave one
        self.client = client_label(None, self.client_ip)
        self.helo = ""
        self.esmtp = False
        # Plain dicts: a Counter's missing-key path is interpreted Python.
        self.counts: dict[str, int] = {}
        self.failed: dict[str, int] = {}  # refused commands, per verb
        self.tx: Transaction | None = None
        self.closing = False  # the worker shuts down: end between transactions
        self.done: asyncio.Future[None] = self.loop.create_future()
        # A commit or TLS hand-off in progress: its task, or COMMITTING for a
        # journal commit (a callback, no task).
        self._busy: asyncio.Task[None] | object | None = None
        self._paused: set[str] = set()  # why reading is paused: "busy", "write"
        self._reading = True  # the transport's reading, as last set here
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tarpit_timer: asyncio.TimerHandle | None = None
        # An event that ends a batch early (end of DATA, STARTTLS, the end of
        # the session), held back while the replies before it wait out the
        # error sleep; handled first once they are sent.
        self._held: DataEnd | StartTls | ConnectionClosed | None = None
        self._ended = False
        # While the PROXY header of a trusted proxy is awaited: what came so far.
        self._proxy_buffer: bytes | None = None
        self._proxy_timer: asyncio.TimerHandle | None = None
        self.conn = ServerConnection(
            settings.hostname,
            banner=settings.banner,
            message_size_limit=settings.message_size_limit,
            tls_available=settings.tls is not None,
            timeout=settings.smtpd_timeout,
            hard_error_limit=settings.hard_error_limit,
        )

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.poller is not None:
            self.poller.input()
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("unknown", 0)
        self.client_ip = str(peer[0])
        self.client = client_label(None, self.client_ip)
        # No TCP_NODELAY here: asyncio and uvloop set it on every TCP
        # transport (replies are batched per read anyway).
        proxy = self.settings.proxy
        if proxy is not None and proxy.expects_header(self.client_ip):
            # Who the client is comes first, then the greeting (proxy.py).
            self._proxy_buffer = b""
            self._proxy_timer = self.loop.call_later(
                proxy.timeout, self._proxy_failed, "timeout error"
            )
            if self.registry is not None:
                # Not counted yet (the client is not known), but a shutdown or
                # a reload waits for it like any session.
                self.registry.track(self)
            return
        self._greet()

    def _greet(self) -> None:
        """The session begins: sign in with the registry, log, greet."""
        if self.registry is not None and not self.registry.admit(self):
            self._ended = True
            return
        self.log.connect(self.client)
        if self.worker_counts is not None:
            self.worker_counts.connected()
        if self.settings.may_xclient(self.client_ip):
            self.conn.allow_xclient()
        if self.closing:
            self.conn.close(shutting_down(self.settings.hostname))
        self._process()

    def data_received(self, data: bytes) -> None:
        if self.poller is not None:
            self.poller.input()
        if self._ended:
            return
        if self._proxy_buffer is not None:
            self._proxy_data(data)
            return
        self.conn.receive_data(data)
        self._touch()
        if self._busy is None:
            self._process()
        elif self._reading:
            # Pipelined input during a journal commit: kept for later, and
            # reading stops until the reply (see _pause's ``lazy``).
            self._stop_reading()

    def eof_received(self) -> bool | None:
        if self._proxy_buffer is not None:
            self._proxy_failed("lost connection")
            return None
        if not self._ended:
            self.conn.receive_data(b"")
            if self._busy is None:
                self._process()
        # Keep our side open: a commit in flight still owes the client its reply;
        # the conversation's end closes the transport.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._proxy_buffer is not None:
            self._proxy_failed("lost connection")
        if not self._ended:
            # Reset or gone without a proper end: ServerConnection words it
            # ("lost connection after DATA from ..."). With a commit in flight,
            # _after_wait ends the session once the commit is decided.
            self.conn.receive_data(b"")
            if self._busy is None:
                self._process()
        self._cancel_timer()
        if self.registry is not None:
            self.registry.forget(self)
        if not self.done.done():
            self.done.set_result(None)

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its commands.
        self._pause("write")

    def resume_writing(self) -> None:
        self._resume("write")

    # -- the PROXY header of an upstream proxy ------------------------------
    def _proxy_data(self, data: bytes) -> None:
        assert self._proxy_buffer is not None
        buffer = self._proxy_buffer + data
        try:
            header = read_proxy_header(buffer)
        except ProxyHeaderError as error:
            self._proxy_failed(str(error))
            return
        if header is None:
            self._proxy_buffer = buffer  # read_proxy_header bounds its length
            return
        self._proxy_buffer = None
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None
        if not header.local:
            # No address (PROXY UNKNOWN, a family other than TCP): "unknown",
            # which no mynetworks entry matches, rather than the proxy's.
            self.client_ip = header.client[0] if header.client is not None else "unknown"
            self.client = client_label(None, self.client_ip)
        self._greet()
        rest = buffer[header.length :]
        if rest:
            self.data_received(rest)

    def _proxy_failed(self, reason: str) -> None:
        """No valid header from the proxy: say so in the log, and to whoever is
        there; the session never began (no "connect from" line)."""
        if self._proxy_buffer is None:
            return
        self._proxy_buffer = None
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None
        self.log.line("smtpd", f"warning: haproxy read: {reason} from {self.client}")
        if self.worker_counts is not None:
            self.worker_counts.turned_away("proxy_header")
        self._ended = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            reply = f"421 4.3.0 {self.settings.hostname} Error: no valid PROXY protocol header"
            transport.write(reply.encode() + b"\r\n")
            transport.close()

    def _proxy_cut(self) -> None:
        """The worker stops before the proxy sent the header: 421 to whoever
        is there, no log line (the session never began, as on a refusal)."""
        self._proxy_buffer = None
        if self._proxy_timer is not None:
            self._proxy_timer.cancel()
            self._proxy_timer = None
        self._ended = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(shutting_down(self.settings.hostname).line().encode() + b"\r\n")
            transport.close()

    # -- shutting down (called by the listener) -----------------------------
    def shutdown(self) -> None:
        """The worker stops: end now between transactions (421), else after
        the transaction in progress (RFC 5321 3.8)."""
        self.closing = True
        if self._proxy_buffer is not None:
            self._proxy_cut()
            return
        if self.transport is not None and self._busy is None and self.tx is None:
            self.conn.close(shutting_down(self.settings.hostname))
            self._process()

    def abort(self) -> None:
        """Cut the connection (end of the shutdown grace period), saying so."""
        if self._proxy_buffer is not None:
            self._proxy_cut()
            return
        if isinstance(self._busy, asyncio.Task):
            self._busy.cancel()
        self.conn.close(shutting_down(self.settings.hostname))
        self._send(self.conn.data_to_send())
        self._end()
        if self.transport is not None:
            self.transport.close()

    # -- the event loop of the conversation ---------------------------------
    def _process(self) -> None:
        """Handle every event the bytes so far allow; send the replies once."""
        conn = self.conn
        out: list[bytes] = []
        errors_before = conn.errors
        soft_limit = self.settings.soft_error_limit
        while True:
            event = conn.next_event() if self._held is None else self._take_held()
            if event is NEED_DATA:
                if self.closing and self.tx is None:
                    conn.close(shutting_down(self.settings.hostname))
                    continue
                break
            if isinstance(event, RcptTo):
                out.append(conn.send(self._on_rcpt(event)))
            elif isinstance(event, DataChunk):
                self._on_chunk(event.data)
            elif isinstance(event, MailFrom):
                out.append(conn.send(self._on_mail(event)))
            elif isinstance(event, DataStart):
                self._on_data_start()
            elif isinstance(event, DataEnd):
                if conn.errors > soft_limit and self._hold(event, out, errors_before):
                    return
                self._send(b"".join(out) + conn.data_to_send())
                out = []
                reply = self._on_data_end(event)
                if reply is None:
                    return  # committing; _committed goes on from here
                out.append(conn.send(reply))
            elif isinstance(event, Helo):
                bump(self.counts, "ehlo" if event.extended else "helo")
                self.helo = printable(event.name)
                self.esmtp = self.esmtp or event.extended
                self._drop_transaction()
            elif isinstance(event, DataRejected | Rset):
                bump(self.counts, "rset" if isinstance(event, Rset) else "data")
                if isinstance(event, DataRejected):
                    self._log_reject("END-OF-MESSAGE", event.reply)
                self._drop_transaction()
            elif isinstance(event, StartTls):
                if conn.errors > soft_limit and self._hold(event, out, errors_before):
                    return
                bump(self.counts, "starttls")
                self._send(b"".join(out) + conn.data_to_send())
                self._wait(self._start_tls())
                return
            elif isinstance(event, ProtocolViolation):
                verb = counted_verb(event.command)
                bump(self.counts, verb)
                bump(self.failed, verb)
            elif isinstance(event, Quit):
                bump(self.counts, "quit")
            elif isinstance(event, Xclient):
                bump(self.counts, "xclient")
                self._on_xclient(event)
            elif isinstance(event, ConnectionClosed):
                if conn.errors > soft_limit and self._hold(event, out, errors_before):
                    return
                self._send(b"".join(out) + conn.data_to_send())
                self._log_close(event)
                self._end()
                if self.transport is not None:
                    self.transport.close()
                if self.poller is not None:
                    self.poller.wait()  # for the client's next connection
                return
            else:
                bump(self.counts, type(event).__name__.lower())
        data = b"".join(out) + conn.data_to_send()
        if conn.errors > soft_limit:  # rare: checked inline
            delay = self._error_delay(errors_before)
            if delay and data:
                self._tarpit(data, delay)
                return
        self._send(data)
        self._arm_timer()
        if self.poller is not None:
            self.poller.wait()

    def _error_delay(self, errors_before: int) -> float:
        """Postfix's smtpd_error_sleep_time: a client past the soft error limit
        (and not yet cut off by the hard one) waits that long per error reply
        of this batch, so a dictionary attack gets a few answers a second
        instead of thousands, pipelined or not."""
        settings, errors = self.settings, self.conn.errors
        soft, hard = settings.soft_error_limit, settings.hard_error_limit
        if settings.error_sleep_time <= 0 or errors <= soft or (hard and errors >= hard):
            return 0.0
        return settings.error_sleep_time * max(1, errors - max(errors_before, soft))

    def _hold(
        self,
        event: DataEnd | StartTls | ConnectionClosed,
        out: list[bytes],
        errors_before: int,
    ) -> bool:
        """Before an event that sends the batch's replies at once: tarpit them
        as the end of the batch would (a QUIT, a message or a STARTTLS
        pipelined after the errors must not skip the wait), holding the event
        until they are out. False when there is nothing to wait for."""
        delay = self._error_delay(errors_before)
        if not delay:
            return False
        data = b"".join(out) + self.conn.data_to_send()
        if not data:
            # Nothing was taken, so nothing is lost. This is also where a
            # held event, handled again after the wait, goes on.
            return False
        self._held = event
        self._tarpit(data, delay)
        return True

    def _take_held(self) -> DataEnd | StartTls | ConnectionClosed:
        event, self._held = self._held, None
        assert event is not None
        return event

    def _tarpit(self, data: bytes, delay: float) -> None:
        # Reading pauses meanwhile: what the client pipelines waits its turn.
        self._pause("busy")
        self._cancel_timer()
        self._busy = TARPIT
        self._tarpit_timer = self.loop.call_later(delay, self._tarpit_done, data)

    def _tarpit_done(self, data: bytes) -> None:
        self._tarpit_timer = None
        self._busy = None
        self._send(data)
        if self.transport is None or self.transport.is_closing():
            # The client gave up meanwhile (they often do): log it the usual
            # way, "lost connection after RCPT from ...", then "disconnect".
            # A message held back is not taken: its client never heard 250
            # and will send it again.
            if not isinstance(self._held, ConnectionClosed):
                self._held = None
            self.conn.receive_data(b"")
            self._process()
            return
        self._go_on()

    def _wait(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` (commit, TLS hand-off) with reading paused, then go on."""
        self._pause("busy")
        self._cancel_timer()
        self._busy = self.loop.create_task(work)
        self._busy.add_done_callback(self._after_wait)

    def _after_wait(self, task: asyncio.Task[None]) -> None:
        self._busy = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            if not isinstance(error, ConnectionError | OSError | ssl.SSLError):
                self.log.line("smtpd", f"error: session with {self.client}: {error!r}")
            self._lost()
            if self.transport is not None:
                self.transport.abort()
            return
        self._go_on()

    def _go_on(self) -> None:
        """After a wait: read and handle what the client sent meanwhile."""
        if self.transport is None or self.transport.is_closing():
            self._lost()
            return
        self._resume("busy")
        self._touch()
        self._process()

    def _lost(self) -> None:
        """The connection is gone after a wait (a commit, a failed TLS
        hand-off): "lost connection after ..." and the "disconnect" line with
        the session's counts, as at every other end of a session."""
        if self._ended:
            return
        self._held = None
        if self.conn.state is State.TLS:
            # The protocol waits for the hand-off and takes no input meanwhile.
            bump(self.failed, "starttls")
            self._log_close(ConnectionClosed("lost", "STARTTLS"))
            self._end()
            return
        self.conn.receive_data(b"")
        self._process()
        self._end()  # in case the protocol had already ended the conversation

    def _send(self, data: bytes) -> None:
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._cancel_timer()
        if self._tarpit_timer is not None:
            self._tarpit_timer.cancel()
            self._tarpit_timer = None
            self._busy = None
        self._drop_transaction()

    # -- flow control and the idle timer -------------------------------------
    # try/except rather than contextlib.suppress: both run once per message,
    # and suppress is interpreted Python (three calls) even when compiled.
    def _pause(self, why: str, *, lazy: bool = False) -> None:
        """Stop reading for ``why``. ``lazy``: only once input arrives meanwhile
        (data_received). A journal commit is short and its client, unless it
        pipelines, sends nothing until the reply: stopping and restarting the
        read there cost two epoll changes per message for nothing."""
        self._paused.add(why)
        if not lazy:
            self._stop_reading()

    def _stop_reading(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            try:  # noqa: SIM105 (see above)
                self.transport.pause_reading()
            except (RuntimeError, AttributeError):
                pass

    def _resume(self, why: str) -> None:
        self._paused.discard(why)
        if self._paused or self._reading:
            return
        if self.transport is not None and not self.transport.is_closing():
            self._reading = True
            try:  # noqa: SIM105 (see above)
                self.transport.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    def _touch(self) -> None:
        timeout = self.conn.want_timer
        self._deadline = None if timeout is None else self.loop.time() + timeout

    def _arm_timer(self) -> None:
        # One timer per session, moved lazily: a read only updates the deadline,
        # the timer re-arms itself when it fires early.
        if self._deadline is None:
            self._touch()
        if self._timer is None and self._deadline is not None and not self._ended:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._ended or self._busy is not None or self._deadline is None:
            return
        if self.loop.time() < self._deadline:
            self._timer = self.loop.call_at(self._deadline, self._on_timer)
            return
        self.conn.timed_out()
        if "write" in self._paused and self.transport is not None:
            # A client that neither reads nor writes: nothing more can reach it.
            self._log_close_now()
            return
        self._process()

    def _log_close_now(self) -> None:
        event = self.conn.next_event()
        if isinstance(event, ConnectionClosed):
            self._log_close(event)
        self._end()
        if self.transport is not None:
            self.transport.abort()

    # -- MAIL and RCPT ----------------------------------------------------
    def _on_mail(self, event: MailFrom) -> Reply:
        bump(self.counts, "mail")
        if event.address:
            parsed = parse_path(event.address, smtputf8=event.smtputf8)
            if isinstance(parsed, AddressError):
                self._log_reject("MAIL", BAD_SENDER, sender=event.address)
                return BAD_SENDER
            if not parsed.is_qualified:
                refused = need_fqdn_sender(printable(event.address))
                self._log_reject("MAIL", refused, sender=event.address)
                return refused
            if parsed.has_source_route:
                # RFC 5321 3.3 and appendix C: the route is dropped, the
                # mailbox at its end is the sender (next hops need not
                # accept routes; bounces go to the mailbox).
                event = dataclasses.replace(event, address=str(parsed))
        self.tx = Transaction(mail=event)
        return OK_SENDER

    def _on_rcpt(self, event: RcptTo) -> Reply:
        bump(self.counts, "rcpt")
        tx = self.tx
        assert tx is not None, "the protocol asks RCPT only inside a transaction"
        decision = decide_recipient(
            self.snapshot(),
            self.settings.policy,
            event.address,
            client_ip=self.client_ip,
            sender=tx.mail.address,
            smtputf8=tx.mail.smtputf8,
            recipients_so_far=len(tx.accepted),
            srs=self.srs() if self.srs is not None else None,
        )
        if not decision.accepted:
            self._log_reject("RCPT", decision.reply, recipient=event.address)
            return decision.reply
        if tx.queue_id is None:
            tx.queue_id = self.spool.new_queue_id()
            self.log.accepted(tx.queue_id, self.client)
        tx.accepted.append((event, decision))
        return decision.reply

    def _on_xclient(self, event: Xclient) -> None:
        """A trusted front end says who the client is: from now on it is that
        client for everything (mynetworks, logs, Received:). The per-client
        cap keeps counting the connection under its real peer."""
        attributes = event.attributes
        if "ADDR" in attributes:
            self.client_ip = attributes["ADDR"] or "unknown"
        if "NAME" in attributes:
            self.client_name = attributes["NAME"]
        self.client = client_label(self.client_name, self.client_ip)
        if "HELO" in attributes:
            self.helo = printable(attributes["HELO"] or "")
        if "PROTO" in attributes:
            self.esmtp = attributes["PROTO"] == "ESMTP"
        self._drop_transaction()

    # -- DATA -------------------------------------------------------------
    def _on_data_start(self) -> None:
        tx = self.tx
        assert tx is not None and tx.queue_id is not None
        try:
            tx.writer = self.spool.begin(tx.queue_id)
            tx.writer.write(self._received(tx))
        except SpoolFullError:
            tx.failure = SPOOL_FULL
        except SpoolError:
            tx.failure = SPOOL_FAILED

    def _received(self, tx: Transaction) -> bytes:
        recipient = tx.accepted[0][1].recipient if len(tx.accepted) == 1 else None
        return received_header(
            helo=self.helo or "unknown",
            client=self.client,
            by=self.settings.hostname,
            protocol=with_protocol(self.esmtp, self.conn.tls_active, tx.mail.smtputf8),
            queue_id=tx.queue_id or "",
            recipient=recipient,
            now=time.time(),
        )

    def _on_chunk(self, data: bytes) -> None:
        tx = self.tx
        if tx is None or tx.failure is not None or tx.writer is None:
            return
        tx.headers.feed(data)
        try:
            tx.writer.write(data)
        except SpoolFullError:
            tx.failure = SPOOL_FULL
        except SpoolError:
            tx.failure = SPOOL_FAILED

    def _on_data_end(self, event: DataEnd) -> Reply | None:
        """The reply to the end of DATA, or None while the spool commits (the
        reply then comes from ``_committed`` or the commit task)."""
        bump(self.counts, "data")
        tx = self.tx
        assert tx is not None and tx.queue_id is not None
        if tx.failure is None and tx.headers.received > self.settings.hopcount_limit:
            tx.failure = TOO_MANY_HOPS
        writer = tx.writer
        if tx.failure is not None or writer is None:
            reply = tx.failure or SPOOL_FAILED
            self._log_reject("END-OF-MESSAGE", reply, queue_id=tx.queue_id)
            self._drop_transaction()
            return reply
        # Postfix logs the queue file's message size: our Received: line included.
        # (That line ends in CRLF and starts with a letter: the body stays plain.)
        envelope = build_envelope(
            tx, self.client_ip, self.helo, writer.size, time.time(), plain_body=event.plain
        )
        self._pause("busy", lazy=True)
        self._cancel_timer()
        try:
            submitted = writer.submit(envelope, lambda error: self._committed(tx, envelope, error))
        except SpoolError as error:
            self._resume("busy")
            return self._commit_reply(tx, envelope, error)
        if submitted:
            self._busy = COMMITTING
        else:
            self._stop_reading()
            self._wait(self._commit(tx, envelope))
        return None

    def _committed(self, tx: Transaction, envelope: Envelope, error: SpoolError | None) -> None:
        """A journal commit is decided: answer, then take up the pipeline."""
        self._busy = None
        if self._ended:
            return  # cut meanwhile (shutdown grace over): nobody to answer
        reply = self._commit_reply(tx, envelope, error)
        self._send(self.conn.send(reply))
        self._go_on()

    async def _commit(self, tx: Transaction, envelope: Envelope) -> None:
        """A commit that does not go through the journal (a big body)."""
        assert tx.writer is not None
        error: SpoolError | None = None
        try:
            await tx.writer.commit(envelope)
        except SpoolError as exc:
            error = exc
        self._send(self.conn.send(self._commit_reply(tx, envelope, error)))

    def _commit_reply(self, tx: Transaction, envelope: Envelope, error: SpoolError | None) -> Reply:
        assert tx.queue_id is not None
        if error is None:
            if tx.headers.message_id:
                self.log.message_id(tx.queue_id, printable(tx.headers.message_id))
            self.log.queued(tx.queue_id, tx.mail.address, envelope.size, len(envelope.recipients))
            if self.worker_counts is not None:
                self.worker_counts.accepted(envelope.size)
            tx.writer = None
            self.tx = None
            return Reply(250, "2.0.0", f"Ok: queued as {tx.queue_id}")
        reply = SPOOL_FULL if isinstance(error, SpoolFullError) else SPOOL_FAILED
        self._log_reject("END-OF-MESSAGE", reply, queue_id=tx.queue_id)
        self._drop_transaction()
        return reply

    def _drop_transaction(self) -> None:
        tx, self.tx = self.tx, None
        if tx is not None and tx.writer is not None:
            tx.writer.abort()

    # -- TLS --------------------------------------------------------------
    async def _start_tls(self) -> None:
        context = self.settings.tls
        transport = self.transport
        assert context is not None, "STARTTLS is only offered with a certificate"
        assert transport is not None
        # Plaintext the client pipelined after STARTTLS never reaches the
        # protocol: ServerConnection drops what it holds (RFC 3207 4.2;
        # CVE-2011-0411) and reading stays paused until the hand-off.
        try:
            tls = await self.loop.start_tls(transport, self, context, server_side=True)
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self.log.line("smtpd", f"SSL_accept error from {self.client}: {exc}")
            self._count_tls(False)
            raise ConnectionError("TLS handshake failed") from exc
        if tls is None:
            self._count_tls(False)
            raise ConnectionError("TLS handshake failed")
        self._count_tls(True)
        self.transport = tls
        self.conn.tls_established()

    def _count_tls(self, ok: bool) -> None:
        if self.worker_counts is not None:
            self.worker_counts.tls_handshake(ok)

    # -- logging ----------------------------------------------------------
    def _log_reject(
        self,
        stage: str,
        reply: Reply,
        *,
        sender: str | None = None,
        recipient: str | None = None,
        queue_id: str | None = None,
    ) -> None:
        if sender is None and self.tx is not None:
            sender = self.tx.mail.address
        log_reject(
            self.log,
            self.failed,
            stage,
            reply,
            self.client,
            sender=sender,
            recipient=recipient,
            esmtp=self.esmtp,
            helo=self.helo,
            queue_id=queue_id,
        )

    def _log_close(self, event: ConnectionClosed) -> None:
        log_close(self.log, self.worker_counts, self.client, self.counts, self.failed, event)
