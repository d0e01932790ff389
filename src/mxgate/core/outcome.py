"""What one delivery attempt meant for one recipient, as a value.

Owns ``Outcome = Delivered | Deferred | Bounced`` (STYLE pattern 7, in place of
chasquid's ``(error, permanent bool)``); ``classify`` of a next hop's reply;
the replies for failures that never got one (connect, TLS, DNS), with RFC 3463
statuses and Postfix's wording so that log greps keep matching; ``apply``,
which records an outcome on the spool ``Recipient``; ``account_for``, which
leaves no recipient of an attempt without an outcome (Postfix
``smtp_rcpt.c``); and ``diagnose``, which reads a recorded recipient back for
a DSN.

The record is the one-line ``Recipient.last_reply`` text (``describe``):

* a next hop's reply, as Postfix logs it:
  ``host mx.example[192.0.2.1] said: 550 5.1.1 <a@example>: User unknown
  (in reply to RCPT TO command)``
* anything we concluded ourselves: ``<status> <text>``, e.g.
  ``4.4.1 connect to mx.example[192.0.2.1]:25: Connection refused`` (the form
  server/recipients.py already stores for bounces decided at RCPT time)

Never does I/O and never asks for the time. A peer's odd reply is a value,
not an exception; ValueError is kept for caller bugs.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mxgate.core.envelope import Recipient, RecipientState
from mxgate.core.reply import Reply
from mxgate.core.retry import EXPIRED_STATUS, GiveUp, RetryAt, RetryDecision

__all__ = [
    "Bounced",
    "Deferred",
    "Delivered",
    "Diagnosis",
    "Outcome",
    "Remote",
    "Stage",
    "account_for",
    "apply",
    "classify",
    "connection_failed",
    "connection_lost",
    "connection_refused",
    "connection_timed_out",
    "conversation_timed_out",
    "describe",
    "diagnose",
    "dns_not_found",
    "dns_temporary_failure",
    "loops_back_to_myself",
    "no_mail_host",
    "null_mx",
    "status",
    "tls_handshake_failed",
    "tls_not_offered",
    "tls_refused",
]

# RFC 3463 section 2: class "." subject "." detail, 1 to 3 digits each.
_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Codes for the replies we make up ourselves: only their class matters (it
# picks the outcome); the status and the text carry the meaning.
_LOCAL_TRANSIENT = 451  # RFC 5321 4.2.3: local error in processing
_LOCAL_PERMANENT = 550


@dataclass(frozen=True, slots=True, init=False)
class Remote:
    """The next hop that gave a reply, and the command it answered.

    host:    its name as we looked it up (an IP literal's address when none)
    address: its IP address
    command: what it answered, in Postfix's words: "MAIL FROM", "RCPT TO",
             "DATA", "end of DATA" ('' when not known)
    """

    host: str
    address: str
    command: str = ""

    def __init__(self, host: str, address: str, command: str = "") -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "host", host)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "command", command)


@dataclass(frozen=True, slots=True, init=False)
class Delivered:
    """2xx: the next hop took responsibility; final."""

    reply: Reply
    remote: Remote | None = None

    def __init__(self, reply: Reply, remote: Remote | None = None) -> None:
        # Written out, as on every class built per message: see mxgate.native.
        object.__setattr__(self, "reply", reply)
        object.__setattr__(self, "remote", remote)


@dataclass(frozen=True, slots=True)
class Deferred:
    """A temporary failure: retried until the queue lifetime runs out."""

    reply: Reply
    remote: Remote | None = None


@dataclass(frozen=True, slots=True)
class Bounced:
    """A permanent failure: final, reported to the sender."""

    reply: Reply
    remote: Remote | None = None


Outcome = Delivered | Deferred | Bounced


def status(reply: Reply) -> str:
    """The RFC 3463 status a reply stands for, as Postfix reads it
    (``smtp_chat.c``, ``smtp_chat_resp``): its enhanced code when valid and of
    the reply's class, else ``X.0.0`` for a 2yz, 4yz or 5yz reply, and 5.5.0
    (a protocol error) for any other code."""
    if not 200 <= reply.code <= 599 or reply.code // 100 == 3:
        return "5.5.0"
    first = str(reply.code // 100)
    if _ENHANCED.fullmatch(reply.enhanced) and reply.enhanced[0] == first:
        return reply.enhanced
    return f"{first}.0.0"


def classify(reply: Reply, remote: Remote | None = None) -> Outcome:
    """The outcome of a final reply: 2xx delivered, 4xx deferred, 5xx bounced.

    A reply out of protocol (1yz, 3yz or no valid code where a final answer was
    due) bounces with 5.5.0, as in Postfix (``smtp_chat_resp`` gives it 5.5.0,
    ``smtp_rcpt_fail`` bounces on a 5 status). ``remote`` is who said it (None
    for a reply we made up)."""
    if 200 <= reply.code <= 299:
        return Delivered(reply, remote)
    if 400 <= reply.code <= 499:
        return Deferred(reply, remote)
    return Bounced(reply, remote)


# --- Failures without a reply (Postfix wording) ------------------------------


class Stage(enum.StrEnum):
    """What the SMTP client was doing, in the words of Postfix's
    "lost connection with X while <stage>" (``smtp_proto.c``)."""

    GREETING = "receiving the initial server greeting"
    EHLO = "performing the EHLO handshake"
    STARTTLS = "sending STARTTLS"
    MAIL = "sending MAIL FROM"
    RCPT = "sending RCPT TO"
    DATA = "sending DATA command"
    BODY = "sending message body"
    # The message may already be delivered: the next hop may have taken it
    # before the connection broke (RFC 1047), hence Postfix's warning.
    END_OF_DATA = "sending end of data -- message may be sent more than once"


def _peer(host: str, address: str) -> str:
    return f"{host}[{address}]"


def _soft(enhanced: str, text: str) -> Deferred:
    return Deferred(Reply(_LOCAL_TRANSIENT, enhanced, text))


def _hard(enhanced: str, text: str, code: int = _LOCAL_PERMANENT) -> Bounced:
    return Bounced(Reply(code, enhanced, text))


def connection_failed(host: str, address: str, port: int, reason: str) -> Deferred:
    """TCP connect failed (4.4.1, RFC 3463 "No answer from host"):
    ``connect to mx.example[192.0.2.1]:25: No route to host``."""
    return _soft("4.4.1", f"connect to {_peer(host, address)}:{port}: {reason}")


def connection_refused(host: str, address: str, port: int = 25) -> Deferred:
    return connection_failed(host, address, port, "Connection refused")


def connection_timed_out(host: str, address: str, port: int = 25) -> Deferred:
    return connection_failed(host, address, port, "Connection timed out")


def conversation_timed_out(host: str, address: str, stage: Stage) -> Deferred:
    """The next hop stopped answering (4.4.2, "Bad connection"; Postfix
    ``smtp_stream_except``):
    ``conversation with mx.example[192.0.2.1] timed out while sending RCPT TO``."""
    return _soft("4.4.2", f"conversation with {_peer(host, address)} timed out while {stage}")


def connection_lost(host: str, address: str, stage: Stage) -> Deferred:
    """The next hop closed the connection (4.4.2):
    ``lost connection with mx.example[192.0.2.1] while sending message body``."""
    return _soft("4.4.2", f"lost connection with {_peer(host, address)} while {stage}")


def tls_not_offered(host: str, address: str) -> Deferred:
    """TLS is required for this next hop but it offers no STARTTLS
    (4.7.4, "Security features not supported"; Postfix ``smtp_proto.c``)."""
    return _soft("4.7.4", f"TLS is required, but was not offered by host {_peer(host, address)}")


def tls_refused(host: str, address: str, reply: Reply) -> Deferred:
    """STARTTLS was answered with an error (4.7.4)."""
    return _soft(
        "4.7.4",
        f"TLS is required, but host {_peer(host, address)} refused to start TLS: "
        f"{_one_line(reply.line())}",
    )


def tls_handshake_failed(host: str, address: str, reason: str = "") -> Deferred:
    """The TLS handshake failed (4.7.5, "Cryptographic failure"); Postfix's
    "Cannot start TLS: handshake failure", plus the peer and the reason."""
    detail = f": {_one_line(reason)}" if reason else ""
    return _soft(
        "4.7.5", f"Cannot start TLS: handshake failure with {_peer(host, address)}{detail}"
    )


def _name_service_error(name: str, rrtype: str, error: str) -> str:
    # Postfix dns_lookup.c wording, e.g. "Host or domain name not found. Name
    # service error for name=example.com type=MX: Host not found, try again".
    return (
        f"Host or domain name not found. Name service error for name={name} type={rrtype}: {error}"
    )


def dns_not_found(name: str, rrtype: str = "MX") -> Bounced:
    """NXDOMAIN: the domain does not exist. 5.1.2 (RFC 3463 "Bad destination
    system address: ... does not exist"; Postfix says 5.4.4 here)."""
    return _hard("5.1.2", _name_service_error(name, rrtype, "Host not found"))


def dns_temporary_failure(name: str, rrtype: str = "MX") -> Deferred:
    """SERVFAIL or a resolver timeout: 4.4.3 ("Directory server failure"), as in
    Postfix ``smtp_addr.c``."""
    return _soft("4.4.3", _name_service_error(name, rrtype, "Host not found, try again"))


def no_mail_host(name: str, rrtype: str = "A") -> Bounced:
    """The domain exists but has no MX and no address record: nowhere to
    deliver (5.4.4, "Unable to route"; Postfix ``smtp_addr.c`` uses 5.4.4)."""
    return _hard(
        "5.4.4",
        _name_service_error(name, rrtype, "Host found but no data record of requested type"),
    )


def null_mx(domain: str) -> Bounced:
    """The domain publishes a null MX (RFC 7505 section 4.1: 556 5.1.10)."""
    return _hard("5.1.10", f"Domain {domain} does not accept mail (nullMX)", code=556)


def loops_back_to_myself(domain: str) -> Bounced:
    """The best MX of ``domain`` is this gateway (5.4.6, "Routing loop detected")."""
    return _hard("5.4.6", f"mail for {domain} loops back to myself")


# --- Recording outcomes --------------------------------------------------------


def _one_line(text: str) -> str:
    """Multi-line reply text joined by spaces; other control characters
    masked as '?' (Postfix ``printable``), so a record stays one line."""
    return _CONTROL.sub("?", " ".join(text.replace("\r\n", "\n").split("\n")))


def describe(outcome: Outcome) -> str:
    """The one-line record of an outcome, stored as ``Recipient.last_reply``
    and shown in logs and queue listings (the format is in the module docstring)."""
    reply = outcome.reply
    if outcome.remote is None:
        return f"{status(reply)} {_one_line(reply.text)}"
    remote = outcome.remote
    said = _one_line(reply.line()).strip()
    tail = f" (in reply to {_one_line(remote.command)} command)" if remote.command else ""
    return f"host {_peer(_one_line(remote.host), _one_line(remote.address))} said: {said}{tail}"


def apply(
    recipient: Recipient,
    outcome: Outcome,
    now: float,
    retry: RetryDecision | None = None,
) -> Recipient:
    """The recipient after an attempt at ``now``: DELIVERED, DEFERRED or BOUNCED,
    ``attempts`` + 1, ``next_attempt`` and ``last_reply`` set.

    ``retry`` (core/retry.py ``next_attempt``) is required for ``Deferred``:
    ``RetryAt`` keeps the recipient DEFERRED until then (never before ``now``);
    ``GiveUp`` bounces it, keeping the last temporary error as its record
    (``diagnose`` reports it as expired). Applying an outcome to a recipient
    that is already final is a bug: ValueError.
    """
    if recipient.state.is_final:
        raise ValueError(f"{recipient.address}: already {recipient.state.value}")
    text = describe(outcome)
    attempts = recipient.attempts + 1
    if isinstance(outcome, Delivered):
        state, next_at = RecipientState.DELIVERED, None
    elif isinstance(outcome, Bounced):
        state, next_at = RecipientState.BOUNCED, None
    elif isinstance(retry, RetryAt):
        state, next_at = RecipientState.DEFERRED, max(retry.when, now)
    elif isinstance(retry, GiveUp):
        state, next_at = RecipientState.BOUNCED, None
    else:
        raise ValueError(f"{recipient.address}: a deferral needs a retry decision")
    # Not dataclasses.replace, which runs interpreted: once per delivery
    # (mxgate.native). tests/core/test_outcome.py checks every field is kept.
    return Recipient(
        recipient.address,
        recipient.original,
        recipient.orcpt,
        recipient.notify,
        recipient.route,
        state,
        attempts,
        next_at,
        text,
    )


def account_for(
    addresses: Iterable[str], outcomes: Mapping[str, Outcome], missing: Outcome
) -> dict[str, Outcome]:
    """One outcome for every recipient of an attempt (Postfix ``smtp_rcpt.c``:
    each ends sent, deferred or bounced). A recipient the courier did not
    report gets ``missing`` (typically the deferral for the broken session).
    An outcome for an address that was not tried is a courier bug: ValueError."""
    tried = list(addresses)
    stray = outcomes.keys() - set(tried)
    if stray:
        raise ValueError(f"outcomes for recipients not tried: {', '.join(sorted(stray))}")
    return {address: outcomes.get(address, missing) for address in tried}


# --- Reading a record back for a DSN ------------------------------------------


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A recorded recipient as a DSN reports it (RFC 3464 section 2.3).

    status:     RFC 3463 status, of the class the state implies (2 delivered,
                4 deferred, 5 bounced; 4.4.7 when expired)
    reason:     the last error in one line for people: the record without its
                status, or a default
    remote_mta: the next hop's name when a next hop gave the reply (Remote-MTA)
    smtp_reply: that reply, "550 5.1.1 text" (Diagnostic-Code: smtp; ...)
    expired:    bounced because the message outlived its queue lifetime
    """

    status: str
    reason: str
    remote_mta: str | None
    smtp_reply: str | None
    expired: bool


_REMOTE_RECORD = re.compile(
    r"host (?P<host>[^\s\[\]]+)\[(?P<address>[^\s\]]*)\] said: "
    r"(?P<code>-?\d+)(?: (?P<enhanced>[245]\.\d{1,3}\.\d{1,3}))?(?: (?P<text>.*?))??"
    r"(?: \(in reply to (?P<command>[^()]+) command\))?"
)
_LOCAL_RECORD = re.compile(r"(?P<status>[245]\.\d{1,3}\.\d{1,3})(?: (?P<text>.*))?")

_DEFAULT_REASON = {
    RecipientState.DELIVERED: "delivered",
    RecipientState.DEFERRED: "delivery temporarily failed",
    RecipientState.BOUNCED: "delivery failed",
    RecipientState.PENDING: "delivery not yet attempted",
}


def diagnose(recipient: Recipient) -> Diagnosis:
    """Read ``recipient.last_reply`` (any form ``describe`` or the SMTP session
    writes, or free text) back into DSN terms."""
    record = recipient.last_reply.strip()
    remote_mta = smtp_reply = None
    remote = _REMOTE_RECORD.fullmatch(record)
    local = _LOCAL_RECORD.fullmatch(record)
    if remote:
        text = remote["text"] or ""
        reply = Reply(int(remote["code"]), remote["enhanced"] or "", text)
        found: str | None = status(reply)
        remote_mta = remote["host"]
        smtp_reply = " ".join(p for p in (remote["code"], remote["enhanced"], text) if p).strip()
        reason = record
    elif local:
        found = local["status"]
        reason = local["text"] or _DEFAULT_REASON[recipient.state]
    else:
        found = None
        reason = record or _DEFAULT_REASON[recipient.state]
    final_status = _status_for_state(recipient, found)
    # Only a deferral given up after an attempt is BOUNCED with a 4.x.x record
    # (apply with GiveUp); its last error stays the diagnostic.
    expired = recipient.state is RecipientState.BOUNCED and final_status[0] == "4"
    if expired:
        final_status = EXPIRED_STATUS
    return Diagnosis(final_status, reason, remote_mta, smtp_reply, expired)


def _status_for_state(recipient: Recipient, found: str | None) -> str:
    """Make the status agree with the state: a 5yz deferred by policy is still
    4.x.x in a "delayed" DSN (as Postfix soft_bounce turns 5 into 4), and a
    recipient bounced before any attempt (at RCPT time) is 5.x.x."""
    state = recipient.state
    if state is RecipientState.DELIVERED:
        return found if found and found[0] == "2" else "2.0.0"
    if state is RecipientState.BOUNCED:
        if found and (found[0] == "5" or (found[0] == "4" and recipient.attempts > 0)):
            return found
        return "5" + found[1:] if found and found[0] == "4" else "5.0.0"
    if found and found[0] == "4":
        return found
    return "4" + found[1:] if found and found[0] == "5" else "4.0.0"
