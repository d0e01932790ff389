"""Outcomes: classification, failure texts, recording on a Recipient, reading back."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.core import outcome as o
from mxgate.core.envelope import Notify, Recipient, RecipientState
from mxgate.core.outcome import (
    Bounced,
    Deferred,
    Delivered,
    Diagnosis,
    Outcome,
    Remote,
    Stage,
    account_for,
    apply,
    classify,
    describe,
    diagnose,
    status,
)
from mxgate.core.reply import Reply
from mxgate.core.retry import GiveUp, RetryAt, RetryDecision, RetryPolicy, next_attempt

T0 = 1_700_000_000.0
MX = Remote("mx.example.net", "192.0.2.1", "RCPT TO")
RCPT = Recipient("bob@example.net", "bob@example.net")
EXPIRY = GiveUp(Reply(451, "4.4.7", "message expired after 5 days in queue"))


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(250, "2.0.0", "Ok: queued as 4XyZ"), Delivered),
        (Reply(251, "", "User not local; will forward"), Delivered),
        (Reply(421, "4.3.2", "Service shutting down"), Deferred),
        (Reply(450, "4.2.0", "Mailbox busy"), Deferred),
        (Reply(451, "", "Temporary local problem"), Deferred),
        (Reply(452, "4.2.2", "Mailbox full"), Deferred),
        (Reply(550, "5.1.1", "User unknown"), Bounced),
        (Reply(552, "5.3.4", "Message too big"), Bounced),
        (Reply(554, "", "Transaction failed"), Bounced),
        # Out of protocol where a final answer was due: Postfix 5.5.0, bounced.
        (Reply(354, "", "End data with <CR><LF>.<CR><LF>"), Bounced),
        (Reply(199, "", "odd"), Bounced),
        (Reply(0, "", "garbage"), Bounced),
        (Reply(600, "", "too high"), Bounced),
    ],
    ids=lambda v: str(v.code) if isinstance(v, Reply) else v.__name__,
)
def test_classify(reply: Reply, kind: type) -> None:
    result = classify(reply, MX)
    assert type(result) is kind
    assert result.reply == reply
    assert result.remote == MX
    assert classify(reply).remote is None


@pytest.mark.parametrize(
    ("code", "enhanced", "expected"),
    [
        (250, "2.1.5", "2.1.5"),
        (550, "5.1.1", "5.1.1"),
        (550, "5.7.26", "5.7.26"),
        (556, "5.1.10", "5.1.10"),
        (451, "4.4.2", "4.4.2"),
        (450, "", "4.0.0"),  # no enhanced code: the class alone
        (550, "4.1.1", "5.0.0"),  # out of sync with the reply code: ignored
        (250, "5.1.1", "2.0.0"),
        (550, "6.1.1", "5.0.0"),
        (550, "5.1", "5.0.0"),
        (550, "5.1.1000", "5.0.0"),
        (354, "", "5.5.0"),
        (354, "3.0.0", "5.5.0"),
        (100, "", "5.5.0"),
        (999, "", "5.5.0"),
    ],
)
def test_status(code: int, enhanced: str, expected: str) -> None:
    assert status(Reply(code, enhanced, "text")) == expected


@pytest.mark.parametrize(
    ("made", "kind", "enhanced", "record"),
    [
        (
            o.connection_refused("mx.example.net", "192.0.2.1"),
            Deferred,
            "4.4.1",
            "4.4.1 connect to mx.example.net[192.0.2.1]:25: Connection refused",
        ),
        (
            o.connection_timed_out("mx.example.net", "2001:db8::1", 587),
            Deferred,
            "4.4.1",
            "4.4.1 connect to mx.example.net[2001:db8::1]:587: Connection timed out",
        ),
        (
            o.connection_failed("mx.example.net", "192.0.2.1", 25, "No route to host"),
            Deferred,
            "4.4.1",
            "4.4.1 connect to mx.example.net[192.0.2.1]:25: No route to host",
        ),
        (
            o.conversation_timed_out("mx.example.net", "192.0.2.1", Stage.RCPT),
            Deferred,
            "4.4.2",
            "4.4.2 conversation with mx.example.net[192.0.2.1] timed out while sending RCPT TO",
        ),
        (
            o.connection_lost("mx.example.net", "192.0.2.1", Stage.GREETING),
            Deferred,
            "4.4.2",
            "4.4.2 lost connection with mx.example.net[192.0.2.1] while receiving the "
            "initial server greeting",
        ),
        (
            o.tls_not_offered("mx.example.net", "192.0.2.1"),
            Deferred,
            "4.7.4",
            "4.7.4 TLS is required, but was not offered by host mx.example.net[192.0.2.1]",
        ),
        (
            o.tls_refused("mx.example.net", "192.0.2.1", Reply(454, "4.7.0", "TLS not available")),
            Deferred,
            "4.7.4",
            "4.7.4 TLS is required, but host mx.example.net[192.0.2.1] refused to start TLS: "
            "454 4.7.0 TLS not available",
        ),
        (
            o.tls_handshake_failed("mx.example.net", "192.0.2.1", "certificate verify failed"),
            Deferred,
            "4.7.5",
            "4.7.5 Cannot start TLS: handshake failure with mx.example.net[192.0.2.1]: "
            "certificate verify failed",
        ),
        (
            o.dns_not_found("nowhere.example"),
            Bounced,
            "5.1.2",
            "5.1.2 Host or domain name not found. Name service error for "
            "name=nowhere.example type=MX: Host not found",
        ),
        (
            o.dns_temporary_failure("slow.example"),
            Deferred,
            "4.4.3",
            "4.4.3 Host or domain name not found. Name service error for "
            "name=slow.example type=MX: Host not found, try again",
        ),
        (
            o.no_mail_host("bare.example"),
            Bounced,
            "5.4.4",
            "5.4.4 Host or domain name not found. Name service error for "
            "name=bare.example type=A: Host found but no data record of requested type",
        ),
        (
            o.null_mx("nomail.example"),
            Bounced,
            "5.1.10",
            "5.1.10 Domain nomail.example does not accept mail (nullMX)",
        ),
        (
            o.loops_back_to_myself("example.com"),
            Bounced,
            "5.4.6",
            "5.4.6 mail for example.com loops back to myself",
        ),
    ],
)
def test_failures_without_a_reply(made: Outcome, kind: type, enhanced: str, record: str) -> None:
    assert type(made) is kind
    assert made.remote is None  # our own conclusion: no Remote-MTA
    assert made.reply.enhanced == enhanced
    assert status(made.reply) == enhanced  # code and status agree in class
    assert classify(made.reply) == made  # and the code picks the same outcome
    assert describe(made) == record


@pytest.mark.parametrize(
    ("made", "record"),
    [
        (
            Bounced(Reply(550, "5.1.1", "<bob@example.net>: User unknown"), MX),
            "host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: User unknown "
            "(in reply to RCPT TO command)",
        ),
        (
            Deferred(Reply(451, "", "try later"), Remote("mx.example.net", "192.0.2.1")),
            "host mx.example.net[192.0.2.1] said: 451 try later",
        ),
        (
            Bounced(
                Reply(550, "5.1.1", "The account does not exist.\nPlease check the address."),
                Remote("mx.example.net", "192.0.2.1", "end of DATA"),
            ),
            "host mx.example.net[192.0.2.1] said: 550 5.1.1 The account does not exist. "
            "Please check the address. (in reply to end of DATA command)",
        ),
        (
            Deferred(Reply(451, "4.3.0", "bad\x00byte\tand\x1bescape")),
            "4.3.0 bad?byte?and?escape",
        ),
        (Deferred(Reply(451, "", "no enhanced code")), "4.0.0 no enhanced code"),
        (Delivered(Reply(250, "2.0.0", "Ok: queued as 4XyZ"), MX), None),
    ],
)
def test_describe(made: Outcome, record: str | None) -> None:
    text = describe(made)
    if record is not None:
        assert text == record
    assert "\n" not in text
    assert "\r" not in text


# --- apply: every recipient ends DELIVERED, DEFERRED or BOUNCED -----------------


@pytest.mark.parametrize(
    ("made", "retry", "state", "next_at"),
    [
        (Delivered(Reply(250, "2.0.0", "Ok"), MX), None, RecipientState.DELIVERED, None),
        (Bounced(Reply(550, "5.1.1", "unknown"), MX), None, RecipientState.BOUNCED, None),
        (
            Deferred(Reply(451, "4.4.1", "refused")),
            RetryAt(T0 + 300),
            RecipientState.DEFERRED,
            T0 + 300,
        ),
        # A decision in the past is clamped to now: never schedule backwards.
        (Deferred(Reply(451, "4.4.1", "refused")), RetryAt(T0 - 5), RecipientState.DEFERRED, T0),
        (Deferred(Reply(451, "4.4.1", "refused")), EXPIRY, RecipientState.BOUNCED, None),
        # A retry decision does not change a final outcome.
        (Bounced(Reply(550, "5.1.1", "unknown")), RetryAt(T0 + 300), RecipientState.BOUNCED, None),
    ],
)
def test_apply(
    made: Outcome, retry: RetryDecision | None, state: RecipientState, next_at: float | None
) -> None:
    before = Recipient(
        "bob@example.net",
        "Bob@Example.NET",
        orcpt="rfc822;bob@example.org",
        notify=frozenset({Notify.SUCCESS, Notify.DELAY}),
        route={"kind": "smtp", "host": "mx.example.net"},
        state=RecipientState.DEFERRED,
        attempts=2,
        next_attempt=T0 - 1,
        last_reply="4.4.1 refused",
    )
    after = apply(before, made, T0, retry)
    assert after.state is state
    assert after.attempts == 3
    assert after.next_attempt == next_at
    assert after.last_reply == describe(made)
    # Everything else is kept, whatever fields Recipient has.
    assert after == replace(
        before, state=state, attempts=3, next_attempt=next_at, last_reply=describe(made)
    )


def test_give_up_keeps_the_last_error_as_the_record() -> None:
    refused = o.connection_refused("mx.example.net", "192.0.2.1")
    after = apply(RCPT, refused, T0, EXPIRY)
    assert after.state is RecipientState.BOUNCED
    assert after.last_reply == "4.4.1 connect to mx.example.net[192.0.2.1]:25: Connection refused"


def test_a_deferral_needs_a_retry_decision() -> None:
    with pytest.raises(ValueError, match="retry decision"):
        apply(RCPT, Deferred(Reply(451, "4.4.1", "refused")), T0)


@pytest.mark.parametrize("state", [RecipientState.DELIVERED, RecipientState.BOUNCED])
def test_final_recipients_are_not_touched_again(state: RecipientState) -> None:
    with pytest.raises(ValueError, match="already"):
        apply(replace(RCPT, state=state), Delivered(Reply(250, "2.0.0", "Ok")), T0)


REPLIES = st.builds(
    Reply,
    st.integers(min_value=0, max_value=999),
    st.sampled_from(["", "2.0.0", "4.2.2", "5.1.1", "5.7.26", "4.1.1", "9.9.9"]),
    st.text(max_size=80),
)
REMOTES = st.none() | st.builds(
    Remote,
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?", fullmatch=True),
    st.from_regex(r"[0-9a-f.:]{1,39}", fullmatch=True),
    st.sampled_from(["MAIL FROM", "RCPT TO", "DATA", "end of DATA"]),
)
DECISIONS = st.sampled_from([RetryAt(T0 + 300), EXPIRY])


@given(reply=REPLIES, remote=REMOTES, retry=DECISIONS, attempts=st.integers(0, 50))
def test_every_attempt_ends_in_one_of_three_states(
    reply: Reply, remote: Remote | None, retry: RetryDecision, attempts: int
) -> None:
    before = replace(RCPT, attempts=attempts)
    after = apply(before, classify(reply, remote), T0, retry)
    assert after.state in (
        RecipientState.DELIVERED,
        RecipientState.DEFERRED,
        RecipientState.BOUNCED,
    )
    assert after.attempts == attempts + 1
    assert (after.next_attempt is not None) == (after.state is RecipientState.DEFERRED)
    if after.state is RecipientState.DEFERRED:
        assert after.next_attempt is not None
        assert after.next_attempt >= T0


@given(reply=REPLIES, remote=REMOTES, retry=DECISIONS)
def test_records_read_back(reply: Reply, remote: Remote | None, retry: RetryDecision) -> None:
    """What apply writes, diagnose reads: the status (in the class of the
    state), who said it, and the reply itself."""
    made = classify(reply, remote)
    after = apply(RCPT, made, T0, retry)
    seen = diagnose(after)
    expected_status = status(reply)
    if after.state is RecipientState.BOUNCED and expected_status[0] == "4":
        expected_status = "4.4.7"
    assert seen.status == expected_status
    assert seen.expired == (isinstance(made, Deferred) and isinstance(retry, GiveUp))
    if remote is None:
        assert seen.remote_mta is None
        assert seen.smtp_reply is None
    else:
        assert seen.remote_mta == remote.host
        said = describe(made).split(" said: ", 1)[1].rsplit(" (in reply to ", 1)[0]
        assert seen.smtp_reply == said.strip()


def test_account_for_leaves_nobody_out() -> None:
    lost = o.connection_lost("mx.example.net", "192.0.2.1", Stage.BODY)
    ok = Delivered(Reply(250, "2.1.5", "Ok"), MX)
    result = account_for(["a@x.example", "b@x.example", "c@x.example"], {"b@x.example": ok}, lost)
    assert list(result) == ["a@x.example", "b@x.example", "c@x.example"]
    assert result == {"a@x.example": lost, "b@x.example": ok, "c@x.example": lost}


def test_account_for_refuses_outcomes_for_recipients_not_tried() -> None:
    ok = Delivered(Reply(250, "2.1.5", "Ok"))
    with pytest.raises(ValueError, match=r"z@x\.example"):
        account_for(["a@x.example"], {"z@x.example": ok}, ok)


# --- diagnose: any record the spool may hold ------------------------------------


@pytest.mark.parametrize(
    ("state", "attempts", "record", "expected"),
    [
        (
            RecipientState.BOUNCED,
            1,
            "host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: User unknown "
            "(in reply to RCPT TO command)",
            Diagnosis(
                "5.1.1",
                "host mx.example.net[192.0.2.1] said: 550 5.1.1 <bob@example.net>: User unknown "
                "(in reply to RCPT TO command)",
                "mx.example.net",
                "550 5.1.1 <bob@example.net>: User unknown",
                False,
            ),
        ),
        (
            RecipientState.DELIVERED,
            1,
            "host mx.example.net[192.0.2.1] said: 250 2.0.0 Ok: queued as 4XyZ "
            "(in reply to end of DATA command)",
            Diagnosis(
                "2.0.0",
                "host mx.example.net[192.0.2.1] said: 250 2.0.0 Ok: queued as 4XyZ "
                "(in reply to end of DATA command)",
                "mx.example.net",
                "250 2.0.0 Ok: queued as 4XyZ",
                False,
            ),
        ),
        (
            RecipientState.BOUNCED,
            1,
            "host mx.example.net[192.0.2.1] said: 550 Go away",
            Diagnosis(
                "5.0.0",
                "host mx.example.net[192.0.2.1] said: 550 Go away",
                "mx.example.net",
                "550 Go away",
                False,
            ),
        ),
        (
            RecipientState.DEFERRED,
            3,
            "4.4.1 connect to mx.example.net[192.0.2.1]:25: Connection refused",
            Diagnosis(
                "4.4.1",
                "connect to mx.example.net[192.0.2.1]:25: Connection refused",
                None,
                None,
                False,
            ),
        ),
        (  # given up: the last error is kept, the status says expired
            RecipientState.BOUNCED,
            9,
            "host mx.example.net[192.0.2.1] said: 452 4.2.2 Mailbox full "
            "(in reply to RCPT TO command)",
            Diagnosis(
                "4.4.7",
                "host mx.example.net[192.0.2.1] said: 452 4.2.2 Mailbox full "
                "(in reply to RCPT TO command)",
                "mx.example.net",
                "452 4.2.2 Mailbox full",
                True,
            ),
        ),
        (  # bounced at RCPT time (server/recipients.py writes "<enhanced> <reason>")
            RecipientState.BOUNCED,
            0,
            "5.4.6 mail forwarding loop: a@x.example -> a@x.example",
            Diagnosis(
                "5.4.6", "mail forwarding loop: a@x.example -> a@x.example", None, None, False
            ),
        ),
        (  # a 4.x.x status with no attempt cannot be an expiry: made permanent
            RecipientState.BOUNCED,
            0,
            "4.3.0 error transport said so",
            Diagnosis("5.3.0", "error transport said so", None, None, False),
        ),
        (  # deferred at RCPT time: free text, no status
            RecipientState.DEFERRED,
            0,
            "no transport row for a@x.example",
            Diagnosis("4.0.0", "no transport row for a@x.example", None, None, False),
        ),
        (  # a 5yz deferred by policy is still 4.x.x while deferred
            RecipientState.DEFERRED,
            1,
            "host mx.example.net[192.0.2.1] said: 550 5.1.1 unknown (in reply to RCPT TO command)",
            Diagnosis(
                "4.1.1",
                "host mx.example.net[192.0.2.1] said: 550 5.1.1 unknown "
                "(in reply to RCPT TO command)",
                "mx.example.net",
                "550 5.1.1 unknown",
                False,
            ),
        ),
        (RecipientState.BOUNCED, 1, "", Diagnosis("5.0.0", "delivery failed", None, None, False)),
        (
            RecipientState.BOUNCED,
            0,
            "5.1.1",
            Diagnosis("5.1.1", "delivery failed", None, None, False),
        ),
        (RecipientState.DELIVERED, 1, "", Diagnosis("2.0.0", "delivered", None, None, False)),
        (
            RecipientState.PENDING,
            0,
            "",
            Diagnosis("4.0.0", "delivery not yet attempted", None, None, False),
        ),
    ],
)
def test_diagnose(state: RecipientState, attempts: int, record: str, expected: Diagnosis) -> None:
    recipient = replace(RCPT, state=state, attempts=attempts, last_reply=record)
    assert diagnose(recipient) == expected


def test_a_reply_quoting_the_suffix_keeps_its_text() -> None:
    made = Bounced(Reply(550, "5.0.0", "no (in reply to HELO command)"), MX)
    seen = diagnose(apply(RCPT, made, T0))
    assert seen.smtp_reply == "550 5.0.0 no (in reply to HELO command)"


def test_the_scheduler_loop_from_first_failure_to_expiry() -> None:
    """apply + next_attempt together, the way the queue manager uses them."""
    policy = RetryPolicy()
    refused = o.connection_refused("mx.example.net", "192.0.2.1")
    rcpt, now = RCPT, T0
    while rcpt.state is RecipientState.PENDING or rcpt.state is RecipientState.DEFERRED:
        rcpt = apply(rcpt, refused, now, next_attempt(T0, now, policy, jitter=0.0))
        if rcpt.next_attempt is not None:
            now = rcpt.next_attempt
    assert rcpt.state is RecipientState.BOUNCED
    assert now - T0 >= policy.maximal_queue_lifetime
    assert 100 < rcpt.attempts < 120  # doubling to 4000 s, then about 21.6 a day
    assert diagnose(rcpt).status == "4.4.7"
