"""What one delivery attempt says about one recipient, and where it happened.

Owns ``DeliveryResult``: the ``core.outcome`` verdict (Delivered, Deferred or
Bounced, with the next hop as ``Remote`` when it said it) plus what the
logs need and the outcome does not carry: the server used (Postfix
``relay=``), the setup and transmission seconds (``delays=../../c/d``),
whether TLS was on, and whether the next hop took the DSN parameters.
Also the mapping of a client ``Command`` to the outcome's ``Stage``, and the
few verdicts the courier makes up that ``core.outcome`` has no constructor
for (a greeting other than 220, a malformed reply, an unreadable queue file,
a message too big for the server, SMTPUTF8 not offered).

Never does I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxgate.core.outcome import Bounced, Deferred, Delivered, Outcome, Remote, Stage, describe
from mxgate.core.reply import Reply
from mxgate.smtp.client import Command


class Status(enum.Enum):
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


@dataclass(frozen=True, slots=True)
class Relay:
    """The server used, for ``relay=``: ``host[ip]:port``, or
    ``host[/path]`` for a UNIX socket (as Postfix's lmtp logs it)."""

    hostname: str
    ip: str = ""
    port: int = 0
    unix_path: str = ""

    @property
    def address(self) -> str:
        """The IP address, or the socket path: what goes in ``host[...]``."""
        return self.unix_path or self.ip

    def remote(self, command: Command) -> Remote:
        return Remote(self.hostname, self.address, command._value_)  # not .value: see native

    def __str__(self) -> str:
        if self.unix_path:
            return f"{self.hostname}[{self.unix_path}]"
        return f"{self.hostname}[{self.ip}]:{self.port}"


@dataclass(frozen=True, slots=True, init=False)
class Timing:
    """Seconds, as Postfix's delays=a/b/c/d splits them: ``setup`` (c: DNS,
    connect, greeting, EHLO, TLS, waiting for a slot) and ``transmission``
    (d: MAIL to the final reply)."""

    setup: float = 0.0
    transmission: float = 0.0

    def __init__(self, setup: float = 0.0, transmission: float = 0.0) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "setup", setup)
        object.__setattr__(self, "transmission", transmission)


NO_TIMING = Timing()


@dataclass(frozen=True, slots=True, init=False)
class DeliveryResult:
    """One recipient after one attempt.

    outcome: the verdict for the queue (``core.outcome``)
    relay:   the server used, None when none was reached
    timing:  setup and transmission seconds
    tls:     the session was encrypted
    dsn:     the next hop took the DSN parameters (NOTIFY/ORCPT/RET/ENVID);
             when it did not, Postfix sends a "relayed" notice for
             NOTIFY=SUCCESS
    """

    outcome: Outcome
    relay: Relay | None = None
    timing: Timing = NO_TIMING
    tls: bool = False
    dsn: bool = False

    def __init__(
        self,
        outcome: Outcome,
        relay: Relay | None = None,
        timing: Timing = NO_TIMING,
        tls: bool = False,
        dsn: bool = False,
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "relay", relay)
        object.__setattr__(self, "timing", timing)
        object.__setattr__(self, "tls", tls)
        object.__setattr__(self, "dsn", dsn)

    @property
    def status(self) -> Status:
        if isinstance(self.outcome, Delivered):
            return Status.DELIVERED
        return Status.DEFERRED if isinstance(self.outcome, Deferred) else Status.BOUNCED

    @property
    def reply(self) -> Reply:
        return self.outcome.reply

    @property
    def text(self) -> str:
        """The ``status=... (text)`` of the log line, ``Recipient.last_reply``."""
        return describe(self.outcome)

    @property
    def relay_text(self) -> str:
        return str(self.relay) if self.relay is not None else "none"


_STAGES = {
    Command.GREETING: Stage.GREETING,
    Command.EHLO: Stage.EHLO,
    Command.LHLO: Stage.EHLO,
    Command.HELO: Stage.EHLO,
    Command.STARTTLS: Stage.STARTTLS,
    Command.MAIL: Stage.MAIL,
    Command.RCPT: Stage.RCPT,
    Command.DATA: Stage.DATA,
    Command.BODY: Stage.BODY,
    Command.DOT: Stage.END_OF_DATA,
}


def stage_of(command: Command | None) -> Stage:
    """The outcome's stage for what the client awaited; commands outside
    the table (RSET, NOOP) come right before MAIL FROM."""
    return _STAGES.get(command, Stage.MAIL) if command is not None else Stage.GREETING


def _said(reply: Reply) -> str:
    return " ".join(reply.line().split("\n"))


def refused_to_talk(relay: Relay, reply: Reply) -> Deferred:
    """A greeting other than 220: the server is skipped, as Postfix does with
    smtp_skip_5xx_greeting (its default), so never worse than a deferral."""
    status = reply.enhanced or f"{reply.code // 100}.0.0"
    return Deferred(
        Reply(
            451,
            "4" + status[1:],
            f"host {relay.hostname}[{relay.address}] refused to talk to me: {_said(reply)}",
        )
    )


def malformed_reply(relay: Relay, stage: Stage, detail: str) -> Deferred:
    return Deferred(
        Reply(451, "4.5.0", f"{detail} from {relay.hostname}[{relay.address}] while {stage}")
    )


def queue_file_error(detail: str) -> Deferred:
    return Deferred(Reply(451, "4.3.0", f"error reading queue file: {detail}"))


def too_big(size: int, limit: int, relay: Relay) -> Bounced:
    """Postfix checks the server's SIZE before MAIL FROM (RFC 1870 6)."""
    return Bounced(
        Reply(
            552,
            "5.3.4",
            f"message size {size} exceeds size limit {limit} of server "
            f"{relay.hostname}[{relay.address}]",
        )
    )


def smtputf8_not_offered(relay: Relay) -> Bounced:
    """RFC 6531 3.4: non-ASCII addresses need a server that offers SMTPUTF8."""
    return Bounced(
        Reply(
            550,
            "5.6.7",
            f"SMTPUTF8 is required, but was not offered by host {relay.hostname}[{relay.address}]",
        )
    )
