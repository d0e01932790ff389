"""One inbound SMTP connection: bytes between the socket and the sans-IO protocol.

Owns the glue of a session: feeding ``smtp.ServerConnection``, answering its
questions (MAIL, RCPT, end of DATA) from the routing core and the spool, TLS
hand-off, the idle timer, shutting down, and the mail log lines of the session.

Shutting down (``closing`` resolved by the listener): a session waiting for a
command between transactions answers ``421 4.3.2`` and hangs up at once; one in
the middle of a transaction finishes it first (RFC 5321 3.8), so a message
already being sent is still taken.

Never parses SMTP itself (``mxgate.smtp`` does), never decides routing
(``mxgate.core`` does) and never says 250 after DATA before the spool's commit
returned: the message is on stable storage when the client hears "queued".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from mxgate.core.address import AddressError, parse_path
from mxgate.core.decision import RecipientDecision, plan_message
from mxgate.core.envelope import BodyType, DsnRet, Envelope, Notify
from mxgate.core.policy import decide_recipient
from mxgate.core.reply import Reply
from mxgate.core.routing import RoutingPolicy
from mxgate.core.snapshot import RoutingData
from mxgate.core.srs_keys import SrsContext
from mxgate.maillog import MailLog, client_label
from mxgate.server.headers import HeaderScanner, received_header
from mxgate.server.recipients import envelope_recipients
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
)
from mxgate.spool import Spool, SpoolError, SpoolFullError, SpoolWriter

READ_SIZE = 65536

OK_SENDER = Reply(250, "2.1.0", "Ok")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Error: too many hops (mail loop)")
SPOOL_FULL = Reply(452, "4.3.1", "Insufficient system storage")
SPOOL_FAILED = Reply(451, "4.3.0", "Error: queue file write error")


def shutting_down(hostname: str) -> Reply:
    return Reply(421, "4.3.2", f"{hostname} Service shutting down, try again later")


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session needs from the settings (built once in app.py)."""

    hostname: str
    banner: str
    message_size_limit: int
    smtpd_timeout: float
    hard_error_limit: int
    hopcount_limit: int
    policy: RoutingPolicy
    tls: ssl.SSLContext | None = None


@dataclass(slots=True)
class Transaction:
    """What one MAIL ... DATA transaction collected so far."""

    mail: MailFrom
    accepted: list[tuple[RcptTo, RecipientDecision]] = field(default_factory=list)
    queue_id: str | None = None
    writer: SpoolWriter | None = None
    failure: Reply | None = None
    headers: HeaderScanner = field(default_factory=HeaderScanner)


class Session:
    """Drives one connection from greeting to close."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: SessionSettings,
        snapshot: Callable[[], RoutingData | None],
        spool: Spool,
        log: MailLog,
        closing: asyncio.Future[None] | None = None,
        srs: Callable[[], SrsContext | None] | None = None,
    ) -> None:
        self.srs = srs  # SRS settings, keys and time for one RCPT; None: SRS off
        self.reader = reader
        self.writer = writer
        self.settings = settings
        self.snapshot = snapshot
        self.spool = spool
        self.log = log
        self.closing = closing
        peer = writer.get_extra_info("peername") or ("unknown", 0)
        self.client_ip = str(peer[0])
        self.client = client_label(None, self.client_ip)
        self.helo = ""
        self.esmtp = False
        self.counts: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()  # refused commands, per verb
        self.tx: Transaction | None = None
        self._outgoing = bytearray()
        self.conn = ServerConnection(
            settings.hostname,
            banner=settings.banner,
            message_size_limit=settings.message_size_limit,
            tls_available=settings.tls is not None,
            timeout=settings.smtpd_timeout,
            hard_error_limit=settings.hard_error_limit,
        )

    # -- the loop ---------------------------------------------------------
    async def run(self) -> None:
        self.log.connect(self.client)
        try:
            await self._loop()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            self.log.line("smtpd", f"lost connection from {self.client}")
        except asyncio.CancelledError:
            # Cut at the end of the shutdown grace period: say so if we can.
            self.conn.close(shutting_down(self.settings.hostname))
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                self._write(self.conn.data_to_send())
                self.writer.write(bytes(self._outgoing))
            raise
        finally:
            self._drop_transaction()
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
                await self.writer.wait_closed()

    async def _loop(self) -> None:
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                await self._flush()
                await self._receive()
                continue
            if isinstance(event, RcptTo):
                self._write(conn.send(self._on_rcpt(event)))
            elif isinstance(event, DataChunk):
                self._on_chunk(event.data)
            elif isinstance(event, MailFrom):
                self._write(conn.send(self._on_mail(event)))
            elif isinstance(event, DataStart):
                self._on_data_start()
            elif isinstance(event, DataEnd):
                reply = await self._on_data_end(event)
                self._write(conn.send(reply))
            elif isinstance(event, Helo):
                self.counts["ehlo" if event.extended else "helo"] += 1
                self.helo = _printable(event.name)
                self.esmtp = self.esmtp or event.extended
                self._drop_transaction()
            elif isinstance(event, DataRejected | Rset):
                self.counts["rset" if isinstance(event, Rset) else "data"] += 1
                if isinstance(event, DataRejected):
                    self._log_reject("END-OF-MESSAGE", event.reply)
                self._drop_transaction()
            elif isinstance(event, StartTls):
                self.counts["starttls"] += 1
                await self._start_tls()
            elif isinstance(event, ProtocolViolation):
                verb = event.command.lower() or "unknown"
                self.counts[verb] += 1
                self.failed[verb] += 1
            elif isinstance(event, Quit):
                self.counts["quit"] += 1
            elif isinstance(event, ConnectionClosed):
                await self._flush()
                self._log_close(event)
                return
            else:
                self.counts[type(event).__name__.lower()] += 1

    async def _receive(self) -> None:
        timeout = self.conn.want_timer
        closing = self.closing
        if closing is not None and self.tx is None:
            # Between transactions: a shutdown ends the session now.
            if not closing.done():
                read = asyncio.ensure_future(self.reader.read(READ_SIZE))
                await asyncio.wait(
                    (read, closing), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if read.done():
                    self.conn.receive_data(read.result())
                    return
                read.cancel()  # what the client sent meanwhile stays in the reader
            if closing.done():
                self.conn.close(shutting_down(self.settings.hostname))
            else:
                self.conn.timed_out()
            return
        try:
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout)
        except TimeoutError:
            self.conn.timed_out()
            return
        self.conn.receive_data(data)

    def _write(self, data: bytes) -> None:
        # Replies are collected and sent by _flush, once per read: a pipelined
        # batch of commands costs one send(), not one per reply (RFC 2920).
        if data:
            self._outgoing += data

    async def _flush(self) -> None:
        self._write(self.conn.data_to_send())
        if self._outgoing:
            self.writer.write(bytes(self._outgoing))
            self._outgoing.clear()
        await self.writer.drain()

    # -- MAIL and RCPT ----------------------------------------------------
    def _on_mail(self, event: MailFrom) -> Reply:
        self.counts["mail"] += 1
        if event.address:
            parsed = parse_path(event.address, smtputf8=event.smtputf8)
            if isinstance(parsed, AddressError):
                self._log_reject("MAIL", BAD_SENDER, sender=event.address)
                return BAD_SENDER
        self.tx = Transaction(mail=event)
        return OK_SENDER

    def _on_rcpt(self, event: RcptTo) -> Reply:
        self.counts["rcpt"] += 1
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
            protocol=_protocol(self.esmtp, self.conn.tls_active, tx.mail.smtputf8),
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

    async def _on_data_end(self, event: DataEnd) -> Reply:
        self.counts["data"] += 1
        tx = self.tx
        assert tx is not None and tx.queue_id is not None
        if tx.failure is None and tx.headers.received > self.settings.hopcount_limit:
            tx.failure = TOO_MANY_HOPS
        if tx.failure is not None or tx.writer is None:
            reply = tx.failure or SPOOL_FAILED
            self._log_reject("END-OF-MESSAGE", reply, queue_id=tx.queue_id)
            self._drop_transaction()
            return reply
        # Postfix logs the queue file's message size: our Received: line included.
        envelope = self._envelope(tx, tx.writer.size)
        try:
            await tx.writer.commit(envelope)
        except SpoolFullError:
            reply = SPOOL_FULL
        except SpoolError:
            reply = SPOOL_FAILED
        else:
            if tx.headers.message_id:
                self.log.message_id(tx.queue_id, _printable(tx.headers.message_id))
            self.log.queued(tx.queue_id, tx.mail.address, envelope.size, len(envelope.recipients))
            tx.writer = None
            self.tx = None
            return Reply(250, "2.0.0", f"Ok: queued as {tx.queue_id}")
        self._log_reject("END-OF-MESSAGE", reply, queue_id=tx.queue_id)
        self._drop_transaction()
        return reply

    def _envelope(self, tx: Transaction, size: int) -> Envelope:
        mail = tx.mail
        plan = plan_message(decision for _rcpt, decision in tx.accepted)
        by_original = {decision.recipient: rcpt for rcpt, decision in tx.accepted}
        now = time.time()
        return Envelope(
            queue_id=tx.queue_id or "",
            sender=mail.address,
            arrival=now,
            client_address=self.client_ip,
            client_helo=self.helo,
            client_hostname="unknown",
            size=size,
            body_type=_body_type(mail),
            smtputf8=mail.smtputf8,
            ret=_ret(mail),
            envid=mail.envid,
            recipients=envelope_recipients(plan, by_original, _notify, now),
        )

    def _drop_transaction(self) -> None:
        tx, self.tx = self.tx, None
        if tx is not None and tx.writer is not None:
            tx.writer.abort()

    # -- TLS --------------------------------------------------------------
    async def _start_tls(self) -> None:
        await self._flush()
        context = self.settings.tls
        assert context is not None, "STARTTLS is only offered with a certificate"
        # Plaintext pipelined after STARTTLS sits in the reader's buffer: drop it
        # (RFC 3207 section 4.2; CVE-2011-0411, the command injection attack).
        buffered = len(self.reader._buffer)  # type: ignore[attr-defined]
        if buffered:
            await self.reader.readexactly(buffered)
        try:
            await self.writer.start_tls(context)
        except (ssl.SSLError, ConnectionError, OSError) as exc:
            self.log.line("smtpd", f"SSL_accept error from {self.client}: {exc}")
            raise ConnectionError("TLS handshake failed") from exc
        self.conn.tls_established()

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
        verb = _REJECT_VERBS.get(stage)
        if verb is not None:
            self.failed[verb] += 1
        if sender is None and self.tx is not None:
            sender = self.tx.mail.address
        self.log.reject(
            stage,
            self.client,
            f"{reply.code} {reply.enhanced} {reply.text}",
            _printable(sender) if sender is not None else None,
            _printable(recipient) if recipient is not None else None,
            "ESMTP" if self.esmtp else "SMTP",
            self.helo or None,
            queue_id=queue_id,
        )

    def _log_close(self, event: ConnectionClosed) -> None:
        if event.reason == "timeout":
            self.log.timeout(self.client, event.after)
        elif event.reason == "errors":
            self.log.too_many_errors(self.client, event.after)
        elif event.reason == "lost":
            self.log.line("smtpd", f"lost connection after {event.after} from {self.client}")
        counts = dict(self.counts)
        counts["commands"] = sum(self.counts.values())
        failed = dict(self.failed)
        failed["commands"] = sum(self.failed.values())
        self.log.disconnect(self.client, counts, failed)


# The command a reject line's stage refers to, for the disconnect line's counts.
_REJECT_VERBS = {"MAIL": "mail", "RCPT": "rcpt", "END-OF-MESSAGE": "data"}


def _printable(text: str) -> str:
    """Client-chosen text made safe for one log line."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:300]


def _protocol(esmtp: bool, tls: bool, smtputf8: bool) -> str:
    # RFC 3848 / RFC 6531 "with" keywords for the Received: header.
    name = "UTF8SMTP" if smtputf8 else "ESMTP" if esmtp else "SMTP"
    return name + ("S" if tls else "")


def _body_type(mail: MailFrom) -> BodyType:
    # No BODY= parameter: RFC 6152 says treat it as 7BIT.
    return BodyType(mail.body) if mail.body is not None else BodyType.SEVENBIT


def _ret(mail: MailFrom) -> DsnRet | None:
    return DsnRet(mail.ret) if mail.ret is not None else None


def _notify(rcpt: RcptTo) -> frozenset[Notify]:
    return frozenset(Notify(word) for word in rcpt.notify or ())
