"""Delivery status notifications: who gets one, and its bytes.

Owns the RFC 3461 reporting rules as predicates (``should_bounce``,
``recipients_to_report``, ``bounce_target``) and the composition of an RFC 3464
``multipart/report; report-type=delivery-status`` message (RFC 3462, now
RFC 6522) as bytes with CRLF line endings (``compose_bounce``). Three parts:

1. text/plain for people, in the spirit of Postfix's bounce(8) template;
2. message/delivery-status: per-message then per-recipient fields, each
   recipient's status and diagnostic read back by core/outcome.py ``diagnose``;
3. the original: the whole message as message/rfc822 when RET=FULL or no RET
   was given and it fits in ``size_limit`` octets (Postfix bounce_size_limit,
   50000); else only its headers as text/rfc822-headers (RET=HDRS, or too big:
   Postfix >= 2.5 "returns either message/rfc822 (the complete original) or
   text/rfc822-headers (the headers only)", postconf(5)). Left out when the
   caller could not read it.

SMTPUTF8 messages get the RFC 6533 types (message/global-delivery-status,
message/global, message/global-headers) and UTF-8 text; others are pure ASCII
apart from an 8-bit original, whose part (and the multipart around it) says
``Content-Transfer-Encoding: 8bit`` (RFC 2045 6.4, RFC 2046 5.2.1: the only
encodings a message/* or multipart may have are 7bit, 8bit and binary; the
caller then sends the bounce with BODY=8BITMIME, ``Bounce.body_type``).

Never does I/O, never asks for the time (``now`` and ``message_id`` are
arguments) and never bounces to the null sender (RFC 5321 6.1, RFC 3461 6.2).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal

from mxgate.core.envelope import BodyType, DsnRet, Envelope, Notify, Recipient, RecipientState
from mxgate.core.outcome import Diagnosis, diagnose

__all__ = [
    "BOUNCE_SIZE_LIMIT",
    "Bounce",
    "Kind",
    "bounce_target",
    "compose_bounce",
    "recipients_to_report",
    "should_bounce",
]

Kind = Literal["failure", "delay", "success", "relayed"]
"""failure: bounced recipients ("Action: failed"); delay: a warning for
deferred ones ("delayed"); success: delivered, the next hop does DSN itself
or is final ("delivered"); relayed: handed to a next hop that cannot report
(RFC 3461 5.2.2, "relayed")."""

BOUNCE_SIZE_LIMIT = 50000  # Postfix bounce_size_limit default, octets

_STATE_OF_KIND: dict[str, RecipientState] = {
    "failure": RecipientState.BOUNCED,
    "delay": RecipientState.DEFERRED,
    "success": RecipientState.DELIVERED,
    "relayed": RecipientState.DELIVERED,
}
_NOTIFY_OF_KIND: dict[str, Notify] = {
    "failure": Notify.FAILURE,
    "delay": Notify.DELAY,
    "success": Notify.SUCCESS,
    "relayed": Notify.SUCCESS,
}
_ACTION_OF_KIND = {
    "failure": "failed",
    "delay": "delayed",
    "success": "delivered",
    "relayed": "relayed",
}
_SUBJECT_OF_KIND = {
    "failure": "Undelivered Mail Returned to Sender",
    "delay": "Delayed Mail (still being retried)",
    "success": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}
_POSTMASTER_SUBJECT = "Postmaster Copy: Undelivered Mail"

# A host name or an address literal: it goes into headers and the boundary.
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[(?:IPv6:)?[0-9A-Fa-f.:]+\]")
# RFC 5322 3.6.4 msg-id without its angle brackets: printable ASCII, no space,
# one "@", no "<" or ">", no brackets or backslash on the right.
_MESSAGE_ID = re.compile(r"[!-;=?A-~]+@[!-;=?A-Z^-~]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_BOUNDARY_UNSAFE = re.compile(r"[^0-9A-Za-z'()+_,\-./:=?]")  # RFC 2046 5.1.1 bcharsnospace
_LINE_END = re.compile(rb"\r\n|\r|\n")
_FOLD_AT = 78  # RFC 5322 2.1.1: lines SHOULD be at most 78 characters
_LONGEST_WORD = 900  # keeps every line under the hard limit of 998 octets


# --- Who is told what ----------------------------------------------------------


def _wants(recipient: Recipient, kind: Kind) -> bool:
    """RFC 3461 4.1: NEVER asks for nothing; a list asks for its words; no
    NOTIFY means FAILURE and DELAY (the MTA may choose FAILURE alone or both;
    we send a delay warning only when delay_warning_time is set, as Postfix)."""
    notify = recipient.notify
    if Notify.NEVER in notify:
        return False
    word = _NOTIFY_OF_KIND[kind]
    if not notify:
        return word in (Notify.FAILURE, Notify.DELAY)
    return word in notify


def recipients_to_report(
    envelope: Envelope, kind: Kind, *, postmaster_copy: bool = False
) -> tuple[Recipient, ...]:
    """The recipients a DSN of ``kind`` lists: those in the matching state
    (BOUNCED, DEFERRED, DELIVERED) whose NOTIFY asks for it. A postmaster copy
    lists them all: NOTIFY is what the *sender* asked for."""
    state = _STATE_OF_KIND[kind]
    return tuple(
        r for r in envelope.recipients if r.state is state and (postmaster_copy or _wants(r, kind))
    )


def should_bounce(envelope: Envelope, kind: Kind = "failure") -> bool:
    """A DSN of ``kind`` goes to the sender: never to the null sender, and only
    when some recipient's NOTIFY asks for it."""
    return envelope.sender != "" and bool(recipients_to_report(envelope, kind))


def bounce_target(envelope: Envelope, is_bounce: bool, postmaster: str) -> str | None:
    """Where the failure report for ``envelope`` goes, None for nowhere.

    * the sender, when there is one;
    * the null sender is never bounced to: its failures go to ``postmaster``,
      once (a "double bounce", Postfix 2bounce_notice_recipient);
    * a failed postmaster copy (``is_bounce``: a DSN we made, addressed to
      ``postmaster``) is dropped, to be logged by the caller: never a third
      notification (Postfix bounce(8): "Double bounce failed. Never send a
      triple bounce").
    """
    if envelope.sender:
        return envelope.sender
    if not postmaster:
        return None
    wanted = postmaster.casefold()
    if is_bounce and all(r.address.casefold() == wanted for r in envelope.recipients):
        return None
    return postmaster


# --- The message ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bounce:
    """A composed DSN, ready for the spool.

    sender:    always '' (RFC 5321 6.1: notifications use the null reverse-path)
    recipient: the envelope sender of the original, or the postmaster
    data:      the whole message, CRLF line endings
    body_type: 8BITMIME when ``data`` has 8-bit octets (an 8-bit original)
    smtputf8:  the recipient or the top-level header needs SMTPUTF8 (RFC 6531)
    """

    recipient: str
    data: bytes
    body_type: BodyType
    smtputf8: bool
    sender: str = field(default="", init=False)


def compose_bounce(
    envelope: Envelope,
    failed: Sequence[Recipient],
    *,
    reporting_mta: str,
    now: float,
    message_id: str,
    original: bytes | None,
    kind: Kind = "failure",
    postmaster_copy: bool = False,
    postmaster: str | None = None,
    size_limit: int = BOUNCE_SIZE_LIMIT,
    will_retry_until: float | None = None,
    last_attempt: Mapping[str, float] | None = None,
) -> Bounce:
    """The DSN of ``kind`` for ``failed`` (recipients of ``envelope`` in the
    state ``kind`` reports; see ``recipients_to_report``).

    reporting_mta:    our host name (Reporting-MTA, From: MAILER-DAEMON@...)
    now:              Unix time for Date:
    message_id:       the Message-ID without angle brackets ("left@right")
    original:         the message as read from the spool: all of it, or at least
                      its first ``size_limit`` + 1 octets; None if unreadable
    postmaster_copy:  address the report to ``postmaster`` (a double bounce)
    will_retry_until: for a delay DSN, when the message expires (Will-Retry-Until)
    last_attempt:     per final address, the time of its last attempt
                      (Last-Attempt-Date), when the caller knows it

    ValueError for a caller bug: no recipients, a recipient not of this message
    or in the wrong state, a report to the null sender, a malformed host name
    or Message-ID.
    """
    if not failed:
        raise ValueError(f"{envelope.queue_id}: a DSN needs at least one recipient")
    known = {r.address for r in envelope.recipients}
    for rcpt in failed:
        if rcpt.address not in known:
            raise ValueError(f"{envelope.queue_id}: not a recipient: {rcpt.address}")
        if rcpt.state is not _STATE_OF_KIND[kind]:
            raise ValueError(f"{envelope.queue_id}: {rcpt.address} is {rcpt.state.value}")
    if postmaster_copy:
        if not postmaster:
            raise ValueError("a postmaster copy needs the postmaster address")
        recipient = postmaster
    elif envelope.sender == "":
        raise ValueError(f"{envelope.queue_id}: never bounce to the null sender")
    else:
        recipient = envelope.sender
    if not _HOSTNAME.fullmatch(reporting_mta):
        raise ValueError(f"bad reporting MTA name: {reporting_mta!r}")
    if not _MESSAGE_ID.fullmatch(message_id):
        raise ValueError(f"bad Message-ID: {message_id!r}")
    if size_limit < 1:
        raise ValueError("size_limit must be at least 1")

    utf8 = envelope.smtputf8
    rows = [(rcpt, diagnose(rcpt)) for rcpt in failed]
    # A delay warning returns the headers only (Postfix: "a copy of the message
    # headers of mail that is still queued"): the message is not given up.
    returned = _returned(envelope, original, size_limit, headers_only=kind == "delay")

    notification = _notification(
        envelope, rows, kind, reporting_mta, now, postmaster_copy, postmaster,
        returned, will_retry_until,
    )  # fmt: skip
    report = _delivery_status(envelope, rows, kind, reporting_mta, will_retry_until, last_attempt)
    charset = "utf-8" if utf8 else "us-ascii"
    parts = [
        _part("Notification", f"text/plain; charset={charset}", _text(notification, utf8).encode()),
        _part(
            "Delivery report",
            "message/global-delivery-status" if utf8 else "message/delivery-status",
            _text(report, utf8).encode(),
        ),
    ]
    if returned is not None:
        headers_only, content = returned
        undelivered = "Undelivered " if kind in ("failure", "delay") else ""
        if headers_only:
            ctype = "message/global-headers" if utf8 else "text/rfc822-headers"
            parts.append(_part(f"{undelivered}Message Headers", ctype, content))
        else:
            ctype = "message/global" if utf8 else "message/rfc822"
            parts.append(_part(f"{undelivered}Message", ctype, content))

    boundary = _boundary(envelope.queue_id, now, reporting_mta, [body for _, body in parts])
    body = bytearray(b"This is a MIME-encapsulated message.\r\n")
    for part_headers, content in parts:
        body += f"\r\n--{boundary}\r\n".encode()
        body += "".join(f"{line}\r\n" for line in part_headers).encode()
        body += b"\r\n" + content
    body += f"\r\n--{boundary}--\r\n".encode()

    subject = _POSTMASTER_SUBJECT if postmaster_copy else _SUBJECT_OF_KIND[kind]
    top = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{_text(recipient, utf8)}>",
        f"Subject: {subject}",
        f"Date: {_date(now)}",
        f"Message-ID: <{message_id}>",
        # RFC 3834 5: an automatic response, so that vacation programs and
        # the like do not answer it.
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {_cte(bytes(body))}",
    ]
    head = "".join(f"{line}\r\n" for line in top).encode()
    data = head + b"\r\n" + bytes(body)
    return Bounce(
        recipient=recipient,
        data=data,
        body_type=BodyType.SEVENBIT if data.isascii() else BodyType.EIGHTBITMIME,
        smtputf8=not (recipient.isascii() and head.isascii()),
    )


# --- Parts ----------------------------------------------------------------------


def _notification(
    envelope: Envelope,
    rows: Sequence[tuple[Recipient, Diagnosis]],
    kind: Kind,
    reporting_mta: str,
    now: float,
    postmaster_copy: bool,
    postmaster: str | None,
    returned: tuple[bool, bytes] | None,
    will_retry_until: float | None,
) -> str:
    """The text/plain part: what happened, in words, then one entry per recipient."""
    if returned is None:
        attached = ""
    elif returned[0]:
        attached = " Its headers are attached below."
    else:
        attached = " It is attached below."
    contact = f"<{postmaster}>" if postmaster else "postmaster"
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if postmaster_copy:
        sender = f"<{envelope.sender}>" if envelope.sender else "the null sender <>"
        lines += _wrap(
            f"This is a copy for the postmaster: a message from {sender} could not be "
            f"delivered, and a notification cannot be returned to its sender.{attached}"
        )
    elif kind == "failure":
        lines += _wrap(
            "I'm sorry to have to inform you that your message could not be delivered "
            f"to one or more recipients.{attached}"
        )
        lines += [""]
        lines += _wrap(f"For further assistance, please send mail to {contact}.")
        lines += [""]
        lines += _wrap(
            "If you do so, please include this problem report."
            + (
                " You can delete your own text from the attached returned message."
                if returned is not None
                else ""
            )
        )
    elif kind == "delay":
        lines += [
            "#" * 68,
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "#" * 68,
            "",
            f"Your message could not be delivered for {(now - envelope.arrival) / 3600:.1f} hours.",
        ]
        if will_retry_until is not None:
            days = (will_retry_until - envelope.arrival) / 86400
            lines.append(f"It will be retried until it is {days:.1f} days old.")
    elif kind == "success":
        lines += _wrap(
            f"Your message was successfully delivered to the destination(s) listed below.{attached}"
        )
    else:
        lines += _wrap(
            "Your message was relayed to the destination(s) listed below. The next "
            "system does not report delivery, so no further notification will be "
            f"sent.{attached}"
        )
    lines += ["", "                   The mail system"]
    for rcpt, diagnosis in rows:
        expanded = (
            f" (expanded from <{rcpt.original}>)"
            if rcpt.original and rcpt.original != rcpt.address
            else ""
        )
        reason = diagnosis.reason
        if diagnosis.expired:
            reason = f"delivery time expired (message queued too long); last error: {reason}"
        lines.append("")
        lines += _wrap(f"<{rcpt.address}>{expanded}: {reason}", indent="    ")
    return "\r\n".join(lines) + "\r\n"


def _delivery_status(
    envelope: Envelope,
    rows: Sequence[tuple[Recipient, Diagnosis]],
    kind: Kind,
    reporting_mta: str,
    will_retry_until: float | None,
    last_attempt: Mapping[str, float] | None,
) -> str:
    """The message/delivery-status body, fields in RFC 3464 2.2 and 2.3 order
    (extension fields last)."""
    blocks: list[list[str]] = []
    head: list[str] = []
    if envelope.envid is not None:
        head.append(f"Original-Envelope-Id: {envelope.envid}")
    head.append(f"Reporting-MTA: dns; {reporting_mta}")
    head.append(f"Arrival-Date: {_date(envelope.arrival)}")
    head.append(f"X-Mxgate-Queue-ID: {envelope.queue_id}")
    head.append(f"X-Mxgate-Sender: {_address_field(envelope.sender)}")
    blocks.append(head)
    for rcpt, diagnosis in rows:
        block: list[str] = []
        if rcpt.orcpt is not None:
            # As the client gave it, xtext already decoded (RFC 3464 2.3.1).
            block.append(f"Original-Recipient: {rcpt.orcpt}")
        block.append(f"Final-Recipient: {_address_field(rcpt.address)}")
        block.append(f"Action: {_ACTION_OF_KIND[kind]}")
        block.append(f"Status: {diagnosis.status}")
        if diagnosis.remote_mta is not None:
            block.append(f"Remote-MTA: dns; {diagnosis.remote_mta}")
        if diagnosis.smtp_reply is not None:
            block.append(f"Diagnostic-Code: smtp; {diagnosis.smtp_reply}")
        elif rcpt.last_reply:
            # Our own conclusion (connect, DNS, TLS, routing): an extension
            # diagnostic type, as Postfix's "X-Postfix;".
            block.append(f"Diagnostic-Code: X-Mxgate; {diagnosis.reason}")
        if last_attempt and rcpt.address in last_attempt:
            block.append(f"Last-Attempt-Date: {_date(last_attempt[rcpt.address])}")
        if kind == "delay" and will_retry_until is not None:
            block.append(f"Will-Retry-Until: {_date(will_retry_until)}")
        blocks.append(block)
    return "\r\n".join("".join(_fold(f) for f in block) for block in blocks)


def _address_field(address: str) -> str:
    """``rfc822; user@example`` (RFC 3464 2.3.2); ``utf-8;`` for an address
    that needs it (RFC 6533 3); ``rfc822; <>`` would be wrong for the null
    sender, which has no address: it is written as an empty ``rfc822;``."""
    if not address:
        return "rfc822;"
    return f"{'rfc822' if address.isascii() else 'utf-8'}; {address}"


def _returned(
    envelope: Envelope, original: bytes | None, size_limit: int, *, headers_only: bool = False
) -> tuple[bool, bytes] | None:
    """(headers only?, content) for the third part, None to leave it out."""
    if original is None:
        return None
    message = _LINE_END.sub(b"\r\n", original)
    too_big = len(original) > size_limit or envelope.size > size_limit
    if headers_only or envelope.ret is DsnRet.HDRS or too_big:
        return True, _headers(message, size_limit)
    if message and not message.endswith(b"\r\n"):
        message += b"\r\n"
    return False, message


def _headers(message: bytes, size_limit: int) -> bytes:
    """The header section (up to the empty line), whole lines only, at most
    ``size_limit`` octets (a header section truncated by the caller loses its
    incomplete last line)."""
    end = message.find(b"\r\n\r\n")
    section = message[: end + 2] if end >= 0 else message
    if len(section) > size_limit:
        section = section[:size_limit]
    if not section.endswith(b"\r\n"):
        cut = section.rfind(b"\r\n")
        section = section[: cut + 2] if cut >= 0 else b""
    return section


# --- Small helpers -------------------------------------------------------------


def _date(timestamp: float) -> str:
    """RFC 5322 3.3 date-time in UTC: ``Tue, 14 Nov 2023 22:13:20 +0000``."""
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def _text(value: str, utf8: bool) -> str:
    """Control characters (but CR LF and TAB, which we place ourselves) become
    '?'; so does non-ASCII unless the message may carry UTF-8 (Postfix
    ``printable``)."""
    value = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "?", value)
    return value if utf8 else _NON_ASCII.sub("?", value)


def _clip(text: str) -> str:
    """One line, with no word longer than ``_LONGEST_WORD`` characters."""
    words = _CONTROL.sub("?", text).split(" ")
    return " ".join(w if len(w) <= _LONGEST_WORD else w[:_LONGEST_WORD] + "..." for w in words)


def _wrap(text: str, indent: str = "") -> list[str]:
    """Lines of at most 78 characters where words allow (Postfix wraps the
    recipient entries at 79 with an indent of 4); long words are kept whole."""
    return textwrap.wrap(
        _clip(text),
        width=_FOLD_AT,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [""]


def _fold(field_line: str) -> str:
    """One ``Name: value`` field, folded at spaces (RFC 5322 2.2.3), with CRLF."""
    lines = textwrap.wrap(
        _clip(field_line),
        width=_FOLD_AT,
        subsequent_indent=" ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\r\n".join(lines) + "\r\n"


def _cte(content: bytes) -> str:
    return "7bit" if content.isascii() else "8bit"


def _part(description: str, content_type: str, content: bytes) -> tuple[list[str], bytes]:
    """A body part's header lines and content; the encoding says what the
    octets are (7bit, or 8bit for an 8-bit original or UTF-8 text)."""
    headers = [
        f"Content-Description: {description}",
        f"Content-Type: {content_type}",
        f"Content-Transfer-Encoding: {_cte(content)}",
    ]
    return headers, content


def _boundary(queue_id: str, now: float, host: str, contents: Sequence[bytes]) -> str:
    """Postfix's ``queue_id.time/host`` boundary, made of RFC 2046 characters
    and at most 70 long, lengthened until no part contains it (RFC 2046
    5.1.1: the boundary must not appear inside the encapsulated parts; the
    original is not ours to trust)."""
    base = _BOUNDARY_UNSAFE.sub("-", f"{queue_id}.{int(now)}/{host}")[:60]
    boundary, n = base, 0
    while any(f"--{boundary}".encode() in content for content in contents):
        n += 1
        boundary = f"{base}.{n}"
    return boundary
