"""The delivery agent: one message, one route, some recipients -> one result each.

Owns what Postfix's smtp(8)/lmtp(8) decide per attempt: the next hop
(``nexthop``), the order of servers and when to move on to the next one
(connection refused or timed out, a greeting other than 220, a 4xx before
any recipient could be accepted, a lost connection before the body was
sent: RFC 5321 5.1), STARTTLS by ``tls_security_level`` (none, may,
encrypt; ``may`` falls back to plaintext after a failed handshake, as
Postfix does; the certificate is never verified, as Postfix's default for
both levels), at most ``recipient_limit`` recipients per transaction (larger
lists are split), and one ``DeliveryResult`` per recipient: 2xx delivered,
4xx deferred, 5xx bounced; at RCPT per recipient; after DATA the one reply
for every accepted recipient (SMTP) or one reply each (LMTP, RFC 2033 4.2).
Sessions come from and go back to the ``ConnectionPool``.

The seam is ``deliver(route, envelope, recipients, open_body)``: every
recipient given comes back in the dict, whatever happens, keyed by its
final address. Never touches the queue (the scheduler records results),
never retries later (core.retry decides when), never raises for anything a
network or a next hop can do.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from mxgate.core.envelope import BodyType, Envelope, Recipient
from mxgate.core.outcome import Bounced, Deferred, Delivered, Outcome, classify, connection_lost
from mxgate.core.reply import Reply
from mxgate.core.transport import Endpoint, Route, RouteKind
from mxgate.smtp.client import Command, MailRequest, RcptRequest
from mxgate.smtp.encode import encode_utf8_addr_xtext
from mxgate.spool import SpoolError

from .nexthop import (
    MX_ADDRESS_LIMIT,
    AddressPreference,
    Candidate,
    NameResolver,
    resolve_nexthop,
)
from .pool import ConnectionPool, Lease, PoolConfig
from .result import (
    DeliveryResult,
    Relay,
    Timing,
    queue_file_error,
    smtputf8_not_offered,
    stage_of,
    too_big,
)
from .session import Session, SessionFailure, Timeouts, TlsLevel

OpenBody = Callable[[], BinaryIO]
_NO_SERVER = Deferred(Reply(451, "4.4.1", "no server to try"))


@dataclass(frozen=True, slots=True)
class CourierConfig:
    """helo_name: our name in EHLO/LHLO (myhostname). tls_context: None
    builds an unverifying client context (see ``session.client_tls_context``)."""

    helo_name: str = "localhost"
    smtp_tls_security_level: TlsLevel = "may"
    lmtp_tls_security_level: TlsLevel = "none"
    tls_context: ssl.SSLContext | None = None
    recipient_limit: int = 50
    timeouts: Timeouts = field(default_factory=Timeouts)
    mx_address_limit: int = MX_ADDRESS_LIMIT
    address_preference: AddressPreference = "any"
    pool: PoolConfig = field(default_factory=PoolConfig)
    myself: frozenset[Endpoint] = frozenset()
    """Where this gateway takes mail (``transport.own_endpoint``): an SMTP next
    hop among them is a mail loop."""


class Courier:
    """Delivers over SMTP and LMTP; ``rng`` orders equal-preference MX hosts."""

    def __init__(
        self,
        config: CourierConfig,
        resolver: NameResolver,
        *,
        rng: random.Random | None = None,
        pool: ConnectionPool | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        """``warn``: where a warning for the mail log goes (none: dropped)."""
        self.config = config
        self.resolver = resolver
        self.rng = rng or random.Random()
        self.pool = pool or ConnectionPool(config.pool)
        self.warn = warn

    def reconfigure(self, config: CourierConfig) -> None:
        """Settings read anew (SIGHUP): transactions from now on use them (a
        connection kept idle meanwhile may still be reused; the pool's limits
        apply to the next lease)."""
        self.config = config
        self.pool.config = config.pool

    async def close(self) -> None:
        """Close the idle connections (QUIT)."""
        await self.pool.close()

    async def deliver(
        self,
        route: Route,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        open_body: OpenBody,
    ) -> dict[str, DeliveryResult]:
        """One attempt for ``recipients`` of ``envelope`` over ``route``."""
        if route.kind in (RouteKind.ERROR, RouteKind.RETRY, RouteKind.DISCARD):
            return {r.address: _local_result(route) for r in recipients}
        groups: dict[str, list[Recipient]] = {}
        for rcpt in recipients:
            # An empty nexthop means each recipient's own domain (transport(5)),
            # which the routing core has usually filled in (Route.filled).
            domain = rcpt.address.rpartition("@")[2].lower()
            named = route.unix_path or (route.host and not route.filled)
            groups.setdefault("" if named else domain, []).append(rcpt)
        results: dict[str, DeliveryResult] = {}
        limit = max(1, self.config.recipient_limit)
        for domain, group in groups.items():
            for start in range(0, len(group), limit):
                chunk = group[start : start + limit]
                results.update(await self._transaction(route, domain, envelope, chunk, open_body))
        return results

    async def _transaction(
        self,
        route: Route,
        domain: str,
        envelope: Envelope,
        chunk: Sequence[Recipient],
        open_body: OpenBody,
    ) -> dict[str, DeliveryResult]:
        attempt = _Attempt(self, route, domain, envelope, chunk, open_body)
        key = (route.transport, route.for_domain(domain).nexthop)
        lease = await self.pool.acquire(key)
        try:
            await attempt.run(lease)
        finally:
            self.pool.release(lease)
        return attempt.results


class _Attempt:
    """The state of one transaction's attempt across servers."""

    def __init__(
        self,
        courier: Courier,
        route: Route,
        domain: str,
        envelope: Envelope,
        chunk: Sequence[Recipient],
        open_body: OpenBody,
    ) -> None:
        self.courier, self.config = courier, courier.config
        self.route, self.domain, self.envelope = route, domain, envelope
        self.pending = list(chunk)
        self.open_body = open_body
        self.lmtp = route.kind is RouteKind.LMTP
        self.results: dict[str, DeliveryResult] = {}
        self.started = time.monotonic()
        self.last_failure: Outcome | None = None
        self.last_relay: Candidate | None = None  # where last_failure happened

    async def run(self, lease: Lease) -> None:
        """Deliver ``pending`` over the leased session or new ones; whatever
        session is left (even when cancelled) goes back to the lease, and
        the pool keeps it only if it is still usable."""
        # A reused session goes straight on with MAIL, with no RSET to check it
        # first (Postfix sends one): it was idle for at most the pool's
        # idle_timeout, and a server that dropped it or answers 421 meanwhile
        # fails it before the body, which sends us to a new connection below,
        # as a failed RSET would. Under load that saves a round trip and a
        # fifth of the queue manager's writes per message.
        session = lease.session
        try:
            candidates: list[Candidate] | None = None
            index = 0
            while self.pending:
                if session is None:
                    if candidates is None:
                        resolved = await resolve_nexthop(
                            self.route,
                            self.domain,
                            self.courier.resolver,
                            self.courier.rng,
                            preference=self.config.address_preference,
                            limit=self.config.mx_address_limit,
                            myself=self.config.myself,
                        )
                        if isinstance(resolved, (Deferred, Bounced)):
                            self._finish_all(resolved)
                            break
                        candidates = resolved
                    if index >= len(candidates):
                        self._finish_all(self.last_failure or _NO_SERVER, relay=self.last_relay)
                        break
                    session = await self._open(candidates[index])
                    index += 1
                    if session is None:
                        continue
                # A reused session has no candidate list yet: if it fails
                # before the body, the resolved servers are tried next.
                more_servers = candidates is None or index < len(candidates)
                session = await self._transact(session, more_servers)
        finally:
            lease.session = session

    async def _open(self, candidate: Candidate) -> Session | None:
        level = (
            self.config.lmtp_tls_security_level
            if self.lmtp
            else self.config.smtp_tls_security_level
        )
        while True:
            try:
                session = await Session.open(
                    candidate,
                    lmtp=self.lmtp,
                    helo_name=self.config.helo_name,
                    tls_level=level,
                    tls_context=self.config.tls_context,
                    timeouts=self.config.timeouts,
                )
            except SessionFailure as failure:
                self.last_failure = failure.outcome
                self.last_relay = candidate if failure.connected else None
                if failure.plaintext_retry and level != "none":
                    level = "none"
                    continue
                if isinstance(failure.outcome, Bounced):  # 5xx to EHLO/HELO: a refusal
                    self._finish_all(failure.outcome, relay=candidate)
                return None
            # A server that greets with our own name is most likely this
            # gateway reached some way loop detection cannot see (a NAT not
            # in proxy_interfaces): said, as smtp(8) says it, and delivered on.
            if (
                not self.lmtp
                and self.courier.warn is not None
                and session.greeted_as.lower() == self.config.helo_name.lower()
            ):
                self.courier.warn(
                    f"host {candidate.label} greeted me with my own hostname {session.greeted_as}"
                )
            return session

    async def _transact(self, session: Session, more_servers: bool) -> Session | None:
        """One transaction on ``session``; returns the session if it can be
        kept (None: closed, go on with the next server if needed)."""
        caps = session.conn.capabilities
        setup_done = time.monotonic()
        refusal = self._refusal(session)
        if refusal is not None:
            self._finish_all(refusal, relay=session.candidate, session=session)
            return session
        try:
            body = self.open_body()
        except (OSError, SpoolError) as err:
            self._finish_all(queue_file_error(str(err)))
            return session
        try:
            done = await session.transact(self._mail(), [_rcpt(r) for r in self.pending], body)
        finally:
            body.close()
        timing = Timing(setup_done - self.started, time.monotonic() - setup_done)
        by_address = {r.address: r for r in done.results}
        retry_here: list[Recipient] = []
        for rcpt in self.pending:
            answer = by_address.get(rcpt.address)
            outcome: Outcome
            if answer is not None:
                outcome = classify(answer.reply, session.relay.remote(answer.command))
            else:
                outcome = session.broken or connection_lost(
                    session.host, session.address, stage_of(done.lost)
                )
            # A server that failed us before the body went out: the next one
            # may do better (RFC 5321 5.1); a RCPT verdict is the recipient's.
            before_body = (answer is None and done.lost not in (Command.DOT, Command.BODY)) or (
                answer is not None and answer.command in (Command.MAIL, Command.DATA)
            )
            if isinstance(outcome, Deferred) and before_body and more_servers:
                retry_here.append(rcpt)
                self.last_failure, self.last_relay = outcome, session.candidate
                continue
            self.results[rcpt.address] = DeliveryResult(
                outcome, session.relay, timing, session.tls, caps.dsn
            )
        self.pending = retry_here
        if session.usable and not retry_here:
            return session
        await session.close()
        return None

    def _refusal(self, session: Session) -> Bounced | None:
        """What this server cannot take, found before MAIL FROM."""
        caps, env = session.conn.capabilities, self.envelope
        if caps.size_limit and env.size > caps.size_limit:
            return too_big(env.size, caps.size_limit, session.relay)
        addresses = [env.sender, *(r.address for r in self.pending)]
        if env.smtputf8 and not caps.smtputf8 and not all(a.isascii() for a in addresses):
            return smtputf8_not_offered(session.relay)
        return None

    def _mail(self) -> MailRequest:
        env = self.envelope
        return MailRequest(
            env.sender,
            size=env.size,
            body="8BITMIME" if env.body_type is BodyType.EIGHTBITMIME else None,
            smtputf8=env.smtputf8,
            ret=env.ret.value if env.ret is not None else None,
            envid=env.envid,
            plain_body=env.plain_body,
        )

    def _finish_all(
        self,
        outcome: Outcome,
        *,
        relay: Candidate | None = None,
        session: Session | None = None,
    ) -> None:
        where = None
        if relay is not None:
            where = Relay(relay.hostname, relay.ip, relay.port, relay.unix_path)
        timing = Timing(time.monotonic() - self.started, 0.0)
        tls = session.tls if session is not None else False
        for rcpt in self.pending:
            self.results[rcpt.address] = DeliveryResult(outcome, where, timing, tls)
        self.pending = []


def _rcpt(rcpt: Recipient) -> RcptRequest:
    orcpt = rcpt.orcpt
    if orcpt is None and rcpt.original:
        original = rcpt.original
        # RFC 6533 3: a non-ASCII address is not an rfc822 one; its type is utf-8.
        orcpt = (
            f"rfc822;{original}"
            if original.isascii()
            else f"utf-8;{encode_utf8_addr_xtext(original)}"
        )
    return RcptRequest(rcpt.address, tuple(n.value for n in rcpt.notify), orcpt)


def _local_result(route: Route) -> DeliveryResult:
    """error:, retry: and discard: routes, decided without a connection."""
    if route.kind is RouteKind.ERROR:
        return DeliveryResult(Bounced(Reply(550, route.enhanced or "5.0.0", route.text)))
    if route.kind is RouteKind.RETRY:
        return DeliveryResult(Deferred(Reply(450, route.enhanced or "4.0.0", route.text)))
    return DeliveryResult(Delivered(Reply(250, "2.0.0", route.text or "discarded")))
