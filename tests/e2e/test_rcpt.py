"""Every reply of the decision at RCPT TO (SPEC section 3), over the wire.

Each case is tried from a client in mynetworks (127.0.0.1) and from one
outside (127.0.0.2), one connection per case (refusals count towards the
hard error limit). Also: what an accepted recipient becomes in the spool,
the recipient limit, and a gateway that never had any routing data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.gateway import (
    HOSTNAME,
    INSIDE,
    OUTSIDE,
    POSTMASTER,
    Gateway,
    final_recipients,
    free_port,
    new_messages,
    running_gateway,
    split_received,
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, e2e_database: str) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("rcpt"), e2e_database) as gw:
        yield gw


Expected = tuple[int, str | re.Pattern[str]]  # code, then the rest of the line (or a pattern)

OK: Expected = (250, "2.1.5 Ok")


def relay_denied(address: str) -> Expected:
    return 554, f"5.7.1 <{address}>: Relay access denied"


BAD_SYNTAX: Expected = (501, "5.1.3 Bad recipient address syntax")
NEED_SMTPUTF8: Expected = (553, "5.6.7 Must declare SMTPUTF8 to send unicode address")


@dataclass(frozen=True)
class Case:
    rcpt: str  # what follows "RCPT TO:"
    inside: Expected  # reply to a client in mynetworks
    outside: Expected  # reply to a client from the internet


def both(rcpt: str, reply: Expected) -> Case:
    return Case(rcpt, reply, reply)


UNKNOWN: Expected = (
    550,
    "5.1.1 <nobody@closed.example.net>: Recipient address rejected: "
    "User unknown in relay recipient table",
)

CASES: dict[str, Case] = {
    "mailbox": both("<james@server1.example.com>", OK),
    "mailbox, other case": both("<James@SERVER1.Example.com>", OK),
    "plus extension": both("<james+news@server1.example.com>", OK),
    "catch-all forward": both("<nobody@server1.example.com>", OK),
    "relay address": both("<david@server1.example.com>", OK),
    "relay catch-all": both("<anyone@other.example.com>", OK),
    "no angle brackets": both("james@server1.example.com", OK),
    "space after the colon": both(" <james@server1.example.com>", OK),
    "unknown user": both("<nobody@closed.example.net>", UNKNOWN),
    # SPEC section 4: the expansion reaches nothing deliverable; "with the reason".
    "forward loop": both(
        "<loop1@closed.example.net>",
        (
            550,
            re.compile(
                r"5\.4\.6 <loop1@closed\.example\.net>: Recipient address rejected: .*loop.*"
            ),
        ),
    ),
    "forward to nobody": both(
        "<dead@closed.example.net>",
        (
            550,
            re.compile(
                r"5\.1\.1 <dead@closed\.example\.net>: Recipient address rejected: .*ghost@.*"
            ),
        ),
    ),
    # Never accepted only to be bounced later (SPEC section 9).
    "no route": both(
        "<bob@noroute.example.net>",
        (
            451,
            re.compile(
                r"4\.3\.0 <bob@noroute\.example\.net>: Recipient address rejected: "
                r"Temporary failure: .+"
            ),
        ),
    ),
    "foreign domain": Case("<user@example.org>", OK, relay_denied("user@example.org")),
    "foreign literal": Case("<user@[192.0.2.1]>", OK, relay_denied("user@[192.0.2.1]")),
    "percent hack": both(
        "<user%example.org@server1.example.com>",
        relay_denied("user%example.org@server1.example.com"),
    ),
    "bang path": both(
        "<example.org!user@server1.example.com>",
        relay_denied("example.org!user@server1.example.com"),
    ),
    "quoted @": both(
        '<"user@example.org"@server1.example.com>',
        relay_denied('"user@example.org"@server1.example.com'),
    ),
    "quoted %": both(
        '<"user%example.org"@closed.example.net>',
        relay_denied('"user%example.org"@closed.example.net'),
    ),
    "source route": both(
        "<@server1.example.com:user@example.org>",
        relay_denied("@server1.example.com:user@example.org"),
    ),
    "source route to our domain": both(
        "<@relay.example.org,@server1.example.com:james@server1.example.com>",
        relay_denied("@relay.example.org,@server1.example.com:james@server1.example.com"),
    ),
    # An unquoted '@' in the local part, as SPEC section 3 reads it.
    "double @": both("<james@@server1.example.com>", relay_denied("james@@server1.example.com")),
    "empty domain label": both("<james@server1..example.com>", BAD_SYNTAX),
    "space in the local part": both("<james smith@server1.example.com>", BAD_SYNTAX),
    "empty address": both("<>", BAD_SYNTAX),
    "trailing dot": both("<james@server1.example.com.>", BAD_SYNTAX),
    "no domain after @": both("<james@>", BAD_SYNTAX),
    "non-ASCII local part": both("<jämes@server1.example.com>", NEED_SMTPUTF8),
    "non-ASCII domain": both("<james@sérver1.example.com>", NEED_SMTPUTF8),
    "postmaster": both("<postmaster>", OK),
    "Postmaster": both("<Postmaster>", OK),
    "postmaster@myhostname": both(f"<postmaster@{HOSTNAME}>", OK),
    "postmaster@[our address]": both(f"<postmaster@[{INSIDE}]>", OK),
    "postmaster@our domain": both("<postmaster@closed.example.net>", OK),
    "other user@[our address]": both(
        f"<james@[{INSIDE}]>",
        (
            550,
            f"5.1.1 <james@[{INSIDE}]>: Recipient address rejected: "
            "User unknown in local recipient table",
        ),
    ),
    "unqualified": both(
        "<james>",
        (504, "5.5.2 <james>: Recipient address rejected: need fully-qualified address"),
    ),
}


def rcpt_reply(gateway: Gateway, source: str, rcpt: str, *, smtputf8: bool = False) -> str:
    with gateway.raw(source) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        mail = "MAIL FROM:<sender@example.org>" + (" SMTPUTF8" if smtputf8 else "")
        assert str(client.command(mail)) == "250 2.1.0 Ok"
        reply = client.command(("RCPT TO:" + rcpt).encode())
        assert client.command("QUIT").code == 221
    return str(reply)


@pytest.mark.parametrize("source", [INSIDE, OUTSIDE], ids=["mynetworks", "internet"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_rcpt_reply(gateway: Gateway, case: Case, source: str) -> None:
    code, text = case.inside if source == INSIDE else case.outside
    reply = rcpt_reply(gateway, source, case.rcpt)
    if isinstance(text, re.Pattern):
        assert reply.startswith(f"{code} ") and text.fullmatch(reply[4:]), reply
    else:
        assert reply == f"{code} {text}"


@pytest.mark.parametrize("source", [INSIDE, OUTSIDE], ids=["mynetworks", "internet"])
def test_non_ascii_recipient_with_smtputf8(gateway: Gateway, source: str) -> None:
    # The catch-all of server1.example.com takes it.
    assert (
        rcpt_reply(gateway, source, "<jämes@server1.example.com>", smtputf8=True) == "250 2.1.5 Ok"
    )


# What an accepted recipient becomes: the final recipients in the envelope.
EXPANSIONS = [
    (OUTSIDE, "james@server1.example.com", ["james@server1.example.com"]),
    (OUTSIDE, "james+news@server1.example.com", ["james+news@server1.example.com"]),
    (OUTSIDE, "nobody@server1.example.com", ["james@example.com"]),
    (OUTSIDE, "David@Server1.example.com", ["david@server1.example.com"]),
    (OUTSIDE, "someone@other.example.com", ["someone@other.example.com"]),
    (OUTSIDE, "postmaster", [POSTMASTER]),
    (OUTSIDE, f"postmaster@{HOSTNAME}", [POSTMASTER]),
    (OUTSIDE, "postmaster@closed.example.net", [POSTMASTER]),
    # postmaster@d follows the domain's own rows first: here, the catch-all.
    (OUTSIDE, "postmaster@server1.example.com", ["james@example.com"]),
    # Relayed for mynetworks: the local part as given, the domain lower-case.
    (INSIDE, "User@Example.org", ["User@example.org"]),
]


@pytest.mark.parametrize(("source", "rcpt", "finals"), EXPANSIONS)
def test_accepted_recipient_is_spooled_expanded(
    gateway: Gateway, source: str, rcpt: str, finals: list[str]
) -> None:
    before = gateway.messages()
    message = b"Subject: expansion\r\n\r\nfor " + rcpt.encode() + b"\r\n"
    with gateway.smtp(source) as client:
        client.ehlo("client.test")
        client.sendmail("sender@example.org", [rcpt], message)
    [(queue_id, queued)] = new_messages(before, gateway).items()
    assert final_recipients(queued) == finals
    assert [r.original for r in queued.envelope.recipients] == [rcpt] * len(finals)
    received, rest = split_received(gateway.body(queue_id))
    assert rest == message
    assert received["id"].decode() == queue_id


def test_recipient_limit(gateway: Gateway) -> None:
    """1000 recipients are accepted, the 1001st gets 452 4.5.3 (RFC 5321
    4.5.3.1.10: the client sends it in another transaction)."""
    before = gateway.messages()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        assert client.command("MAIL FROM:<sender@example.org>").code == 250
        # Pipelined (RFC 2920), in one write: 1001 RCPT commands.
        client.send(
            b"".join(f"RCPT TO:<james+{i}@server1.example.com>\r\n".encode() for i in range(1001))
        )
        replies = [str(client.reply()) for _ in range(1001)]
        assert replies[:1000] == ["250 2.1.5 Ok"] * 1000
        assert replies[1000] == "452 4.5.3 Error: too many recipients"
        assert client.command("DATA").code == 354
        data_end = client.command(b"Subject: many\r\n\r\nhello\r\n.")
        assert data_end.code == 250, data_end
        assert client.command("QUIT").code == 221
    [queued] = new_messages(before, gateway).values()
    assert len(queued.envelope.recipients) == 1000
    assert final_recipients(queued)[999] == "james+999@server1.example.com"
    gateway.wait_for_log(rf"{queued.queue_id}: from=<sender@example.org>, size=\d+, nrcpt=1000")


def test_no_snapshot_at_all(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Database unreachable since the start and no disk cache: 451 4.3.0 for
    every recipient, postmaster included, from everywhere (never a 5xx)."""
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/mail"
    root = tmp_path_factory.mktemp("nosnapshot")
    with running_gateway(root, closed) as gw:
        assert not (gw.state_dir / "snapshot.cache").exists()
        gw.wait_for_log(r"warning: no routing data .*answering 451 4\.3\.0")
        for source in (INSIDE, OUTSIDE):
            for rcpt in (
                "james@server1.example.com",
                "user@example.org",
                "postmaster",
                f"postmaster@{HOSTNAME}",
            ):
                reply = rcpt_reply(gw, source, f"<{rcpt}>")
                assert reply == f"451 4.3.0 <{rcpt}>: Temporary lookup failure", source
