"""DSNs: who is told (RFC 3461), and the RFC 3464 message, parsed back with ``email``."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.core.dsn import (
    BOUNCE_SIZE_LIMIT,
    Bounce,
    Kind,
    bounce_target,
    compose_bounce,
    recipients_to_report,
    should_bounce,
)
from mxgate.core.envelope import (
    BodyType,
    DsnRet,
    Envelope,
    Notify,
    Recipient,
    RecipientState,
)

T0 = 1_700_000_000.0
NOW = T0 + 3600
HOST = "mx1.gateway.test"
MSGID = "20231114.ABC123@mx1.gateway.test"
POSTMASTER = "hostmaster@admin.test"

ORIGINAL = (
    b"Received: from client.example ([203.0.113.5])\r\n"
    b"\tby mx1.gateway.test; Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: lunch\r\n"
    b"Message-ID: <lunch.1@example.com>\r\n"
    b"\r\n"
    b"Shall we meet at noon?\r\n"
    b"-- \r\n"
    b"Alice\r\n"
)

UNKNOWN = (
    "host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: "
    "Recipient address rejected: User unknown (in reply to RCPT TO command)"
)
REFUSED = "4.4.1 connect to mx.example.org[192.0.2.2]:25: Connection refused"
FULL_BOX = (
    "host mx.example.org[192.0.2.2] said: 452 4.2.2 Mailbox full (in reply to RCPT TO command)"
)
QUEUED = (
    "host mx.example.net[192.0.2.1] said: 250 2.0.0 Ok: queued as 4XyZ "
    "(in reply to end of DATA command)"
)


def rcpt(address: str, state: RecipientState, last_reply: str = "", **kw: Any) -> Recipient:
    attempts = kw.pop("attempts", 1)
    return Recipient(address, kw.pop("original", address), state=state, attempts=attempts,
                     last_reply=last_reply, **kw)  # fmt: skip


BOB = rcpt("bob@example.net", RecipientState.BOUNCED, UNKNOWN, orcpt="rfc822;Bob@Example.NET")
CAROL = rcpt("carol@example.org", RecipientState.BOUNCED, REFUSED, original="list@example.com")
DAVE = rcpt("dave@example.org", RecipientState.DEFERRED, FULL_BOX, next_attempt=NOW + 300)
ERIN = rcpt(
    "erin@example.net", RecipientState.DELIVERED, QUEUED, notify=frozenset({Notify.SUCCESS})
)


def envelope(*recipients: Recipient, **kw: Any) -> Envelope:
    fields: dict[str, Any] = {
        "queue_id": "ABC123",
        "sender": "alice@example.com",
        "arrival": T0,
        "client_address": "203.0.113.5",
        "client_helo": "client.example",
        "client_hostname": "client.example",
        "size": len(ORIGINAL),
        "recipients": recipients or (BOB, CAROL, DAVE, ERIN),
    }
    fields.update(kw)
    return Envelope(**fields)


def compose(env: Envelope, failed: list[Recipient] | None = None, **kw: Any) -> Bounce:
    kind = kw.get("kind", "failure")
    args: dict[str, Any] = {
        "reporting_mta": HOST,
        "now": NOW,
        "message_id": MSGID,
        "original": ORIGINAL,
    }
    args.update(kw)
    if failed is None:
        failed = list(
            recipients_to_report(env, kind, postmaster_copy=kw.get("postmaster_copy", False))
        )
    return compose_bounce(env, failed, **args)


def parse(bounce: Bounce) -> EmailMessage:
    message = email.message_from_bytes(bounce.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [p for p in payload if isinstance(p, Message)]


def text_of(part: Message) -> str:
    """A leaf part's content, decoded from its transfer encoding."""
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def status_blocks(message: EmailMessage) -> list[Message]:
    """The per-message block, then one block per recipient (RFC 3464 2.1)."""
    report = parts(message)[1]
    assert report.get_content_type() == "message/delivery-status"
    return parts(report)


def recipient_fields(message: EmailMessage) -> dict[str, dict[str, str]]:
    return {
        str(block["Final-Recipient"]): {k: str(v) for k, v in block.items()}
        for block in status_blocks(message)[1:]
    }


def assert_crlf_only(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


# --- The message ----------------------------------------------------------------


def test_failure_dsn_structure_and_headers() -> None:
    env = envelope(envid="ENV-1")
    bounce = compose(env)
    assert bounce.sender == ""  # RFC 5321 6.1: the null reverse-path
    assert bounce.recipient == "alice@example.com"
    assert bounce.body_type is BodyType.SEVENBIT
    assert bounce.smtputf8 is False
    assert_crlf_only(bounce.data)

    message = parse(bounce)
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mx1.gateway.test>"
    assert b"\r\nTo: <alice@example.com>\r\n" in bounce.data
    assert message["To"].addresses[0].addr_spec == "alice@example.com"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Date"].datetime == datetime.fromtimestamp(NOW, UTC)
    assert message["Message-ID"] == f"<{MSGID}>"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert [p.get_content_type() for p in parts(message)] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822",
    ]
    assert [p["Content-Description"] for p in parts(message)] == [
        "Notification",
        "Delivery report",
        "Undelivered Message",
    ]


def test_per_message_fields() -> None:
    message = parse(compose(envelope(envid="ENV+id=1")))
    head = status_blocks(message)[0]
    assert list(head.keys()) == [
        "Original-Envelope-Id",
        "Reporting-MTA",
        "Arrival-Date",
        "X-Mxgate-Queue-ID",
        "X-Mxgate-Sender",
    ]
    assert head["Original-Envelope-Id"] == "ENV+id=1"
    assert head["Reporting-MTA"] == "dns; mx1.gateway.test"
    assert head["Arrival-Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert head["X-Mxgate-Queue-ID"] == "ABC123"
    assert head["X-Mxgate-Sender"] == "rfc822; alice@example.com"


def test_no_envid_no_original_envelope_id() -> None:
    head = status_blocks(parse(compose(envelope())))[0]
    assert "Original-Envelope-Id" not in head


def test_per_recipient_fields() -> None:
    fields = recipient_fields(parse(compose(envelope(), last_attempt={BOB.address: NOW - 60})))
    assert list(fields) == ["rfc822; bob@example.net", "rfc822; carol@example.org"]
    assert fields["rfc822; bob@example.net"] == {
        "Original-Recipient": "rfc822;Bob@Example.NET",
        "Final-Recipient": "rfc822; bob@example.net",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.example.net",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: "
        "User unknown",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 23:12:20 +0000",
    }
    # A failure we concluded ourselves: no Remote-MTA, an X- diagnostic, no ORCPT.
    assert fields["rfc822; carol@example.org"] == {
        "Final-Recipient": "rfc822; carol@example.org",
        "Action": "failed",
        "Status": "4.4.7",  # given up after a deferral (see the next test)
        "Diagnostic-Code": "X-Mxgate; connect to mx.example.org[192.0.2.2]:25: Connection refused",
    }


def test_expired_recipient_is_failed_with_4_4_7_and_its_last_error() -> None:
    """RFC 3463 X.4.7 is a persistent transient status: Action failed, Status
    4.4.7, and the last error as the diagnostic."""
    fields = recipient_fields(parse(compose(envelope())))
    carol = fields["rfc822; carol@example.org"]
    assert carol["Action"] == "failed"
    assert carol["Status"] == "4.4.7"
    remote_expired = rcpt("frank@example.org", RecipientState.BOUNCED, FULL_BOX, attempts=40)
    fields = recipient_fields(parse(compose(envelope(remote_expired))))
    frank = fields["rfc822; frank@example.org"]
    assert frank["Status"] == "4.4.7"
    assert frank["Remote-MTA"] == "dns; mx.example.org"
    assert frank["Diagnostic-Code"] == "smtp; 452 4.2.2 Mailbox full"


def test_human_text_names_every_recipient_and_its_reason() -> None:
    text = parts(parse(compose(envelope())))[0]
    assert text.get_content_type() == "text/plain"
    assert text.get_content_charset() == "us-ascii"
    body = text_of(text)
    flat = " ".join(body.split())
    assert flat.startswith("This is the mail system at host mx1.gateway.test.")
    assert "your message could not be delivered to one or more recipients" in flat
    assert "It is attached below." in flat
    assert (
        "<bob@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: "
        "Recipient address rejected: User unknown (in reply to RCPT TO command)" in flat
    )
    assert (
        "<carol@example.org> (expanded from <list@example.com>): delivery time expired "
        "(message queued too long); last error: connect to mx.example.org[192.0.2.2]:25: "
        "Connection refused" in flat
    )
    assert "dave@" not in flat  # deferred: not part of a failure DSN
    assert all(len(line) <= 78 for line in body.splitlines())


def test_the_original_is_returned_whole() -> None:
    returned = parts(parse(compose(envelope())))[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = parts(returned)[0]
    assert inner["Subject"] == "lunch"
    assert inner["Message-ID"] == "<lunch.1@example.com>"
    assert inner.get_payload() == "Shall we meet at noon?\r\n-- \r\nAlice\r\n"


@pytest.mark.parametrize(
    ("kind", "subject", "action", "reported", "description"),
    [
        ("failure", "Undelivered Mail Returned to Sender", "failed", ["bob", "carol"],
         "Undelivered Message"),
        ("delay", "Delayed Mail (still being retried)", "delayed", ["dave"],
         "Undelivered Message Headers"),
        ("success", "Successful Mail Delivery Report", "delivered", ["erin"], "Message"),
        ("relayed", "Successful Mail Delivery Report", "relayed", ["erin"], "Message"),
    ],
)  # fmt: skip
def test_kinds(
    kind: Kind, subject: str, action: str, reported: list[str], description: str
) -> None:
    message = parse(compose(envelope(), kind=kind, will_retry_until=T0 + 5 * 86400))
    assert message["Subject"] == subject
    fields = recipient_fields(message)
    assert [f.split("; ")[1].split("@")[0] for f in fields] == reported
    assert {f["Action"] for f in fields.values()} == {action}
    assert parts(message)[2]["Content-Description"] == description


def test_delay_dsn() -> None:
    message = parse(compose(envelope(), kind="delay", will_retry_until=T0 + 5 * 86400))
    dave = recipient_fields(message)["rfc822; dave@example.org"]
    assert dave["Status"] == "4.2.2"
    assert dave["Action"] == "delayed"
    assert dave["Will-Retry-Until"] == "Sun, 19 Nov 2023 22:13:20 +0000"
    body = text_of(parts(message)[0])
    assert "THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE." in body
    assert "Your message could not be delivered for 1.0 hours." in body
    assert "It will be retried until it is 5.0 days old." in body


def test_success_dsn_keeps_the_next_hops_reply() -> None:
    erin = recipient_fields(parse(compose(envelope(), kind="success")))["rfc822; erin@example.net"]
    assert erin["Status"] == "2.0.0"
    assert erin["Remote-MTA"] == "dns; mx.example.net"
    assert erin["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: queued as 4XyZ"


# --- RET and the size limit -----------------------------------------------------

HEADERS = ORIGINAL.split(b"\r\n\r\n")[0] + b"\r\n"


@pytest.mark.parametrize(
    ("ret", "size", "limit", "original", "ctype", "content"),
    [
        (None, None, BOUNCE_SIZE_LIMIT, ORIGINAL, "message/rfc822", ORIGINAL),
        (DsnRet.FULL, None, BOUNCE_SIZE_LIMIT, ORIGINAL, "message/rfc822", ORIGINAL),
        (DsnRet.HDRS, None, BOUNCE_SIZE_LIMIT, ORIGINAL, "text/rfc822-headers", HEADERS),
        # exactly at the limit: whole; one octet more: headers only (Postfix >= 2.5)
        (None, None, len(ORIGINAL), ORIGINAL, "message/rfc822", ORIGINAL),
        (DsnRet.FULL, None, len(ORIGINAL) - 1, ORIGINAL, "text/rfc822-headers", HEADERS),
        # the caller read only the first limit + 1 octets: still known to be too big
        (None, None, len(HEADERS) + 9, ORIGINAL[: len(HEADERS) + 10], "text/rfc822-headers",
         HEADERS),
        # the envelope says the message is bigger than what was read
        (None, 10**6, BOUNCE_SIZE_LIMIT, ORIGINAL, "text/rfc822-headers", HEADERS),
        # headers larger than the limit: whole lines only, within the limit
        (None, None, 60, ORIGINAL, "text/rfc822-headers",
         b"Received: from client.example ([203.0.113.5])\r\n"),
        # LF-only input is returned with CRLF
        (None, None, BOUNCE_SIZE_LIMIT, ORIGINAL.replace(b"\r\n", b"\n"), "message/rfc822",
         ORIGINAL),
        # a message without a final line end gets one
        (None, None, BOUNCE_SIZE_LIMIT, ORIGINAL[:-2], "message/rfc822", ORIGINAL),
    ],
)  # fmt: skip
def test_what_is_returned(
    ret: DsnRet | None,
    size: int | None,
    limit: int,
    original: bytes,
    ctype: str,
    content: bytes,
) -> None:
    env = envelope(ret=ret, size=len(original) if size is None else size)
    bounce = compose(env, original=original, size_limit=limit)
    assert_crlf_only(bounce.data)
    returned = parts(parse(bounce))[2]
    assert returned.get_content_type() == ctype
    headers_only = ctype == "text/rfc822-headers"
    assert returned["Content-Description"] == (
        "Undelivered Message Headers" if headers_only else "Undelivered Message"
    )
    # The part's exact bytes, between its header and the closing boundary.
    start = bounce.data.index(f"Content-Type: {ctype}\r\n".encode())
    start = bounce.data.index(b"\r\n\r\n", start) + 4
    end = bounce.data.rindex(b"\r\n--")
    assert bounce.data[start:end] == content
    if headers_only:
        assert b"Shall we meet" not in bounce.data
        text = text_of(parts(parse(bounce))[0])
        assert "Its headers are attached below." in " ".join(text.split())


def test_unreadable_original_leaves_the_part_out() -> None:
    bounce = compose(envelope(), original=None)
    message = parse(bounce)
    assert [p.get_content_type() for p in parts(message)] == [
        "text/plain",
        "message/delivery-status",
    ]
    text = " ".join(text_of(parts(message)[0]).split())
    assert "attached" not in text


def test_8bit_original_is_marked_8bit() -> None:
    original = ORIGINAL.replace(b"noon?", "midi, caf\u00e9?".encode())
    env = envelope(body_type=BodyType.EIGHTBITMIME, size=len(original))
    bounce = compose(env, original=original)
    assert bounce.body_type is BodyType.EIGHTBITMIME
    assert bounce.smtputf8 is False
    message = parse(bounce)
    assert message["Content-Transfer-Encoding"] == "8bit"
    returned = parts(message)[2]
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert "caf\u00e9".encode() in bounce.data
    # ...while our own parts stay 7bit
    assert parts(message)[0]["Content-Transfer-Encoding"] == "7bit"
    assert parts(message)[1]["Content-Transfer-Encoding"] == "7bit"


def test_8bit_original_headers_only_are_marked_8bit_too() -> None:
    original = ORIGINAL.replace(b"Subject: lunch", "Subject: d\u00e9jeuner".encode())
    bounce = compose(envelope(ret=DsnRet.HDRS), original=original)
    returned = parts(parse(bounce))[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert bounce.body_type is BodyType.EIGHTBITMIME


def test_smtputf8_uses_the_rfc_6533_types() -> None:
    sender = "j\u00f6rg@b\u00fccher.example"
    bob = replace(BOB, orcpt="utf-8;b\u00f6b@example.net")
    env = envelope(bob, sender=sender, smtputf8=True)
    bounce = compose(env)
    assert bounce.recipient == sender
    assert bounce.smtputf8 is True
    assert_crlf_only(bounce.data)
    message = parse(bounce)
    # RFC 6532: raw UTF-8 (the stdlib parser reads it back as surrogate escapes)
    assert f"\r\nTo: <{sender}>\r\n".encode() in bounce.data
    assert [p.get_content_type() for p in parts(message)] == [
        "text/plain",
        "message/global-delivery-status",
        "message/global",
    ]
    assert parts(message)[0].get_content_charset() == "utf-8"
    assert f"X-Mxgate-Sender: utf-8; {sender}".encode() in bounce.data
    assert "Original-Recipient: utf-8;b\u00f6b@example.net".encode() in bounce.data


def test_non_ascii_and_controls_from_the_next_hop_are_masked() -> None:
    nasty = "host mx.example.net[192.0.2.1] said: 550 5.1.1 Benutzer unbekannt \u2013 \x1b[31m"
    bob = replace(BOB, last_reply=nasty)
    bounce = compose(envelope(bob))
    assert bounce.data.isascii()
    assert b"\x1b" not in bounce.data
    fields = recipient_fields(parse(bounce))
    assert fields["rfc822; bob@example.net"]["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 Benutzer unbekannt ? ?[31m"
    )


def test_boundary_never_appears_in_the_original() -> None:
    """RFC 2046 5.1.1: a message that quotes our would-be boundary cannot end
    the part early."""
    trap = ORIGINAL + b"--ABC123.1700003600/mx1.gateway.test--\r\nforged\r\n"
    bounce = compose(envelope(size=len(trap)), original=trap)
    message = parse(bounce)
    boundary = message.get_boundary()
    assert boundary is not None
    assert boundary != "ABC123.1700003600/mx1.gateway.test"
    assert len(parts(message)) == 3
    assert b"forged" in parts(message)[2].as_bytes()


def test_long_diagnostics_are_folded_within_line_limits() -> None:
    long_text = "host mx.example.net[192.0.2.1] said: 550 5.7.1 " + " ".join(["word"] * 300)
    huge_word = "host mx.example.net[192.0.2.1] said: 550 5.7.1 " + "x" * 5000
    for reply in (long_text, huge_word):
        bounce = compose(envelope(replace(BOB, last_reply=reply)))
        assert_crlf_only(bounce.data)
        fields = recipient_fields(parse(bounce))
        assert fields["rfc822; bob@example.net"]["Diagnostic-Code"].startswith("smtp; 550 5.7.1 ")


# --- Postmaster copies and double bounces ---------------------------------------


def test_postmaster_copy() -> None:
    never = replace(BOB, notify=frozenset({Notify.NEVER}))
    env = envelope(never, sender="")  # a failed null-sender message
    bounce = compose(env, postmaster_copy=True, postmaster=POSTMASTER)
    assert bounce.sender == ""
    assert bounce.recipient == POSTMASTER
    message = parse(bounce)
    assert message["To"].addresses[0].addr_spec == POSTMASTER
    assert message["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert list(recipient_fields(message)) == ["rfc822; bob@example.net"]
    text = " ".join(text_of(parts(message)[0]).split())
    assert "a message from the null sender <> could not be delivered" in text
    assert status_blocks(message)[0]["X-Mxgate-Sender"] == "rfc822;"


# --- Who is told ----------------------------------------------------------------

N, S, F, D = Notify.NEVER, Notify.SUCCESS, Notify.FAILURE, Notify.DELAY


@pytest.mark.parametrize(
    ("notify", "failure", "delay", "success"),
    [
        (set(), True, True, False),  # RFC 3461 4.1 default: FAILURE,DELAY
        ({N}, False, False, False),
        # RFC 3461 4.1: NEVER stands alone (the parser refuses more); a record
        # that says otherwise still means never.
        ({N, F, D, S}, False, False, False),
        ({F}, True, False, False),
        ({D}, False, True, False),
        ({S}, False, False, True),
        ({F, D}, True, True, False),
        ({S, F}, True, False, True),
        ({S, D}, False, True, True),
        ({S, F, D}, True, True, True),
    ],
)
def test_notify(notify: set[Notify], failure: bool, delay: bool, success: bool) -> None:
    words = frozenset(notify)
    env = envelope(
        replace(BOB, notify=words),
        replace(DAVE, notify=words),
        replace(ERIN, notify=words),
    )
    assert bool(recipients_to_report(env, "failure")) is failure
    assert bool(recipients_to_report(env, "delay")) is delay
    assert bool(recipients_to_report(env, "success")) is success
    assert bool(recipients_to_report(env, "relayed")) is success
    assert should_bounce(env) is failure
    assert should_bounce(env, "delay") is delay
    # A postmaster copy ignores what the sender asked for.
    assert recipients_to_report(env, "failure", postmaster_copy=True) == (
        replace(BOB, notify=words),
    )


def test_only_recipients_in_the_reported_state() -> None:
    pending = rcpt("paul@example.org", RecipientState.PENDING, attempts=0)
    env = envelope(BOB, CAROL, DAVE, ERIN, pending)
    assert recipients_to_report(env, "failure") == (BOB, CAROL)
    assert recipients_to_report(env, "delay") == (DAVE,)
    assert recipients_to_report(env, "success") == (ERIN,)


@pytest.mark.parametrize(
    ("sender", "recipients", "is_bounce", "target"),
    [
        ("alice@example.com", ["bob@example.net"], False, "alice@example.com"),
        # a single bounce (ours) that failed: to the postmaster, once
        ("", ["alice@example.com"], True, POSTMASTER),
        # a null-sender message relayed for someone else that failed: postmaster
        ("", ["bob@example.net"], False, POSTMASTER),
        # the postmaster copy failed: dropped, never a triple bounce
        ("", [POSTMASTER], True, None),
        ("", ["HostMaster@Admin.TEST"], True, None),
        # a postmaster copy is only what we made ourselves
        ("", [POSTMASTER], False, POSTMASTER),
    ],
)
def test_bounce_target(
    sender: str, recipients: list[str], is_bounce: bool, target: str | None
) -> None:
    env = envelope(*(rcpt(a, RecipientState.BOUNCED, REFUSED) for a in recipients), sender=sender)
    assert bounce_target(env, is_bounce, POSTMASTER) == target


def test_no_postmaster_configured_drops() -> None:
    assert bounce_target(envelope(sender=""), True, "") is None


@given(
    notify=st.frozensets(st.sampled_from(list(Notify))),
    kind=st.sampled_from(["failure", "delay", "success", "relayed"]),
)
def test_the_null_sender_is_never_bounced_to(notify: frozenset[Notify], kind: Kind) -> None:
    erin = replace(ERIN, notify=notify)
    env = envelope(replace(BOB, notify=notify), replace(DAVE, notify=notify), erin, sender="")
    assert should_bounce(env, kind) is False
    with pytest.raises(ValueError, match="null sender"):
        compose(env, list(recipients_to_report(env, kind, postmaster_copy=True)), kind=kind)


# --- Caller bugs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed", "kw", "match"),
    [
        ([], {}, "at least one"),
        ([rcpt("zed@example.org", RecipientState.BOUNCED)], {}, "not a recipient"),
        ([DAVE], {}, "DEFERRED"),  # a failure DSN for a deferred recipient
        ([BOB], {"kind": "delay"}, "BOUNCED"),
        ([BOB], {"reporting_mta": "mx1.gateway.test\r\nBcc: x@evil.example"}, "reporting MTA"),
        ([BOB], {"reporting_mta": ""}, "reporting MTA"),
        ([BOB], {"message_id": "<a@b>"}, "Message-ID"),
        ([BOB], {"message_id": "no-at-sign"}, "Message-ID"),
        ([BOB], {"message_id": "a b@c"}, "Message-ID"),
        ([BOB], {"size_limit": 0}, "size_limit"),
        ([BOB], {"postmaster_copy": True}, "postmaster address"),
    ],
)
def test_caller_bugs(failed: list[Recipient], kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compose(envelope(), failed, **kw)


@pytest.mark.parametrize("mta", ["[192.0.2.10]", "[IPv6:2001:db8::25]", "mx1"])
def test_address_literals_as_reporting_mta(mta: str) -> None:
    message = parse(compose(envelope(), reporting_mta=mta))
    assert status_blocks(message)[0]["Reporting-MTA"] == f"dns; {mta}"
    boundary = message.get_boundary()
    assert boundary is not None
    assert re.fullmatch(r"[0-9A-Za-z'()+_,\-./:=?]{1,70}", boundary)


# --- Any reply text, any recipient: always a well-formed DSN ----------------------

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=300)
PRINTABLE = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@given(
    reply=ANY_TEXT,
    remote=st.booleans(),
    state=st.sampled_from([RecipientState.BOUNCED, RecipientState.DEFERRED]),
    orcpt=st.none() | PRINTABLE,
    envid=st.none() | PRINTABLE,
    original=st.binary(max_size=400),
    ret=st.sampled_from([None, DsnRet.FULL, DsnRet.HDRS]),
)  # fmt: skip
def test_always_well_formed(
    reply: str,
    remote: bool,
    state: RecipientState,
    orcpt: str | None,
    envid: str | None,
    original: bytes,
    ret: DsnRet | None,
) -> None:
    record = f"host mx.example.net[192.0.2.1] said: 550 5.1.1 {reply}" if remote else reply
    who = rcpt("bob@example.net", state, record, orcpt=None if orcpt is None else f"rfc822;{orcpt}")
    env = envelope(who, envid=envid, ret=ret, size=len(original))
    kind: Kind = "failure" if state is RecipientState.BOUNCED else "delay"
    bounce = compose(env, [who], kind=kind, original=original)
    assert_crlf_only(bounce.data)
    assert bounce.data.split(b"\r\n\r\n", 1)[0].isascii()
    message = parse(bounce)
    assert len(parts(message)) == 3
    fields = recipient_fields(message)["rfc822; bob@example.net"]
    assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", fields["Status"])
    assert fields["Status"][0] == ("4" if kind == "delay" else fields["Status"][0])
    assert fields["Action"] == ("failed" if kind == "failure" else "delayed")
    if orcpt is not None:
        assert fields["Original-Recipient"] == f"rfc822;{orcpt}"
    head = status_blocks(message)[0]
    assert (head.get("Original-Envelope-Id") is None) == (envid is None)
