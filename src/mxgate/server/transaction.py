"""What one SMTP transaction collects, and the envelope it becomes.

Owns the session's settings record, the state of one MAIL ... DATA transaction,
the replies the session itself words (spool failures, loops, shutdown) and the
translation of a finished transaction into the spool's ``Envelope`` (DSN
parameters, expanded recipients). Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network

from mxgate.core.decision import RecipientDecision, plan_message
from mxgate.core.envelope import BodyType, DsnRet, Envelope, Notify
from mxgate.core.reply import Reply
from mxgate.core.routing import RoutingPolicy, in_networks
from mxgate.server.headers import HeaderScanner
from mxgate.server.recipients import envelope_recipients
from mxgate.smtp import MailFrom, RcptTo
from mxgate.spool import SpoolWriter

OK_SENDER = Reply(250, "2.1.0", "Ok")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Error: too many hops (mail loop)")
SPOOL_FULL = Reply(452, "4.3.1", "Insufficient system storage")
SPOOL_FAILED = Reply(451, "4.3.0", "Error: queue file write error")


def shutting_down(hostname: str) -> Reply:
    return Reply(421, "4.3.2", f"{hostname} Service shutting down, try again later")


@dataclass(frozen=True, slots=True)
class UpstreamProxy:
    """Postfix's ``smtpd_upstream_proxy_protocol = haproxy``: connections from
    ``hosts`` (every connection when empty, as with Postfix) must open with a
    PROXY header within ``timeout`` seconds, and the client is the one it
    names; connections from anywhere else are clients themselves."""

    timeout: float
    hosts: tuple[IPv4Network | IPv6Network, ...] = ()

    def expects_header(self, peer: str) -> bool:
        return not self.hosts or in_networks(peer, self.hosts)


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
    # Postfix's smtpd_soft_error_limit and smtpd_error_sleep_time: past that
    # many errors, each reply waits that long (a dictionary attack slows down).
    soft_error_limit: int = 10
    error_sleep_time: float = 1.0
    # A PROXY protocol header first (smtpd_upstream_proxy_protocol); None: off.
    proxy: UpstreamProxy | None = None
    # Postfix's smtpd_authorized_xclient_hosts: who may send XCLIENT.
    xclient_hosts: tuple[IPv4Network | IPv6Network, ...] = ()

    def may_xclient(self, client_ip: str) -> bool:
        return bool(self.xclient_hosts) and in_networks(client_ip, self.xclient_hosts)


@dataclass(slots=True, init=False)
class Transaction:
    """What one MAIL ... DATA transaction collected so far."""

    mail: MailFrom
    accepted: list[tuple[RcptTo, RecipientDecision]] = field(default_factory=list)
    queue_id: str | None = None
    writer: SpoolWriter | None = None
    failure: Reply | None = None
    headers: HeaderScanner = field(default_factory=HeaderScanner)

    def __init__(
        self,
        mail: MailFrom,
        accepted: list[tuple[RcptTo, RecipientDecision]] | None = None,
        queue_id: str | None = None,
        writer: SpoolWriter | None = None,
        failure: Reply | None = None,
        headers: HeaderScanner | None = None,
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        self.mail = mail
        self.accepted = [] if accepted is None else accepted
        self.queue_id = queue_id
        self.writer = writer
        self.failure = failure
        self.headers = HeaderScanner() if headers is None else headers


def build_envelope(
    tx: Transaction, client_ip: str, helo: str, size: int, now: float, *, plain_body: bool = False
) -> Envelope:
    """The envelope the spool stores for a transaction whose body is ``size``
    bytes; ``plain_body``: see Envelope."""
    mail = tx.mail
    plan = plan_message(decision for _rcpt, decision in tx.accepted)
    by_original = {decision.recipient: rcpt for rcpt, decision in tx.accepted}
    return Envelope(
        queue_id=tx.queue_id or "",
        sender=mail.address,
        arrival=now,
        client_address=client_ip,
        client_helo=helo,
        client_hostname="unknown",
        size=size,
        body_type=_body_type(mail),
        smtputf8=mail.smtputf8,
        ret=_ret(mail),
        envid=mail.envid,
        recipients=envelope_recipients(plan, by_original, _notify, now),
        plain_body=plain_body,
    )


def with_protocol(esmtp: bool, tls: bool, smtputf8: bool) -> str:
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
