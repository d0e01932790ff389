"""The envelope of a queued message: who sent it, to whom, and how far each recipient got.

Owns the vocabulary shared by the SMTP session (which builds an ``Envelope`` at
end of DATA), the spool (which stores it next to the body) and the queue manager
(which records each recipient's outcome): frozen dataclasses and enums, and small
pure helpers to derive updated copies.

Never does I/O and never asks for the time: arrival and next-attempt times are
plain ``float`` Unix timestamps passed in by the caller. Per-recipient state is
changed by building a new ``Envelope`` (``with_recipient``); the spool then
rewrites the record atomically, the body is never touched.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

JsonValue = str | int | float | bool | None | list["JsonValue"] | dict[str, "JsonValue"]
"""What a route may hold: the spool stores it as JSON and gives it back unchanged."""


class RecipientState(enum.Enum):
    """Where one recipient stands (Postfix: every recipient ends sent, deferred or bounced)."""

    PENDING = "PENDING"  # not tried yet (or returned to the queue after a crash)
    DELIVERED = "DELIVERED"  # the next hop answered 2xx; final
    DEFERRED = "DEFERRED"  # a temporary failure; retried at next_attempt
    BOUNCED = "BOUNCED"  # a permanent failure or too long in the queue; final

    @property
    def is_final(self) -> bool:
        return self in (RecipientState.DELIVERED, RecipientState.BOUNCED)


class BodyType(enum.Enum):
    """The MAIL FROM BODY= parameter (RFC 6152)."""

    SEVENBIT = "7BIT"
    EIGHTBITMIME = "8BITMIME"


class DsnRet(enum.Enum):
    """The MAIL FROM RET= parameter (RFC 3461 section 4.3): what a bounce returns."""

    FULL = "FULL"
    HDRS = "HDRS"


class Notify(enum.Enum):
    """The RCPT TO NOTIFY= keywords (RFC 3461 section 4.1)."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


@dataclass(frozen=True, slots=True, init=False)
class Recipient:
    """One final recipient of a message, after alias expansion.

    address:      the final address the message is relayed to
    original:     the address as the client gave it at RCPT TO (Postfix orig_to=)
    orcpt:        the RCPT TO ORCPT= parameter as given ("rfc822;user@example.com"),
                  None when absent (RFC 3461 section 4.2)
    notify:       the NOTIFY= keywords; empty when the client gave none, which
                  RFC 3461 section 4.1 reads as FAILURE and DELAY
    route:        how to reach the next hop, opaque to the spool (transport kind,
                  host, port, mx flag...) as JSON-able values
    state:        see ``RecipientState``
    attempts:     delivery attempts made so far
    next_attempt: Unix time of the next attempt (DEFERRED), else None
    last_reply:   the last reply or reason, for logs, queue listings and DSNs
    """

    address: str
    original: str
    orcpt: str | None = None
    notify: frozenset[Notify] = frozenset()
    route: Mapping[str, JsonValue] = field(default_factory=dict)
    state: RecipientState = RecipientState.PENDING
    attempts: int = 0
    next_attempt: float | None = None
    last_reply: str = ""

    def __init__(
        self,
        address: str,
        original: str,
        orcpt: str | None = None,
        notify: frozenset[Notify] = frozenset(),
        route: Mapping[str, JsonValue] | None = None,
        state: RecipientState = RecipientState.PENDING,
        attempts: int = 0,
        next_attempt: float | None = None,
        last_reply: str = "",
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "original", original)
        object.__setattr__(self, "orcpt", orcpt)
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "route", {} if route is None else route)
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "attempts", attempts)
        object.__setattr__(self, "next_attempt", next_attempt)
        object.__setattr__(self, "last_reply", last_reply)


@dataclass(frozen=True, slots=True, init=False)
class Envelope:
    """Everything known about a queued message except its content.

    queue_id:        the spool's id (uppercase letters and digits)
    sender:          MAIL FROM address, '' for the null sender <>
    arrival:         Unix time the message was accepted
    client_address:  the client's IP address (for logs and Received:)
    client_helo:     the HELO/EHLO argument
    client_hostname: the client's verified reverse name, 'unknown' when none
    size:            message size in octets, as logged (Postfix size=)
    body_type:       BODY= of MAIL FROM
    smtputf8:        the client used SMTPUTF8 (RFC 6531)
    ret, envid:      DSN RET= and ENVID= of MAIL FROM (RFC 3461), None when absent
    recipients:      the final recipients, one per final address
    delay_warned:    the delay warning (delay_warning_time) is behind us: sent,
                     or found not wanted; never sent twice
    plain_body:      every line of the stored body ends in CRLF and none starts
                     with '.': it goes to a next hop as it is, unscanned (what
                     our SMTP server stores unless the client stuffed a dot)
    """

    queue_id: str
    sender: str
    arrival: float
    client_address: str
    client_helo: str
    client_hostname: str
    size: int
    recipients: tuple[Recipient, ...]
    body_type: BodyType = BodyType.SEVENBIT
    smtputf8: bool = False
    ret: DsnRet | None = None
    envid: str | None = None
    delay_warned: bool = False
    plain_body: bool = False

    def __init__(
        self,
        queue_id: str,
        sender: str,
        arrival: float,
        client_address: str,
        client_helo: str,
        client_hostname: str,
        size: int,
        recipients: tuple[Recipient, ...],
        body_type: BodyType = BodyType.SEVENBIT,
        smtputf8: bool = False,
        ret: DsnRet | None = None,
        envid: str | None = None,
        delay_warned: bool = False,
        plain_body: bool = False,
    ) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        # Final recipients are de-duplicated per message (SPEC section 4), and
        # with_recipients relies on it.
        if len(recipients) > 1 and len({r.address for r in recipients}) != len(recipients):
            raise ValueError(f"{queue_id}: a final recipient appears twice")
        if size < 0:
            raise ValueError(f"{queue_id}: negative size")
        object.__setattr__(self, "queue_id", queue_id)
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "arrival", arrival)
        object.__setattr__(self, "client_address", client_address)
        object.__setattr__(self, "client_helo", client_helo)
        object.__setattr__(self, "client_hostname", client_hostname)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "body_type", body_type)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "envid", envid)
        object.__setattr__(self, "delay_warned", delay_warned)
        object.__setattr__(self, "plain_body", plain_body)

    @property
    def is_done(self) -> bool:
        """Every recipient is delivered or bounced: the message can leave the queue."""
        return all(r.state.is_final for r in self.recipients)

    @property
    def next_attempt(self) -> float | None:
        """The earliest next attempt among unfinished recipients (None: none scheduled)."""
        times = [
            r.next_attempt
            for r in self.recipients
            if not r.state.is_final and r.next_attempt is not None
        ]
        return min(times) if times else None

    def unfinished(self) -> tuple[Recipient, ...]:
        """Recipients still to be delivered (PENDING or DEFERRED)."""
        return tuple(r for r in self.recipients if not r.state.is_final)

    def with_recipient(self, updated: Recipient) -> Envelope:
        """A copy with the recipient of the same final address replaced by ``updated``."""
        return self.with_recipients((updated,))

    def with_recipients(self, updated: Iterable[Recipient]) -> Envelope:
        """A copy with each recipient replaced by the one of the same final address.

        Raises KeyError for an address that is not a recipient of this message.
        """
        by_address = {r.address: r for r in updated}
        unknown = by_address.keys() - {r.address for r in self.recipients}
        if unknown:
            raise KeyError(f"{self.queue_id}: not a recipient: {', '.join(sorted(unknown))}")
        recipients = tuple(by_address.get(r.address, r) for r in self.recipients)
        # Not dataclasses.replace, which runs interpreted: once per delivery
        # (mxgate.native). tests/core/test_envelope.py checks every field is kept.
        return Envelope(
            self.queue_id,
            self.sender,
            self.arrival,
            self.client_address,
            self.client_helo,
            self.client_hostname,
            self.size,
            recipients,
            self.body_type,
            self.smtputf8,
            self.ret,
            self.envid,
            self.delay_warned,
            self.plain_body,
        )
