"""Transcript tests of the SMTP server conversation (sequencing, PIPELINING,
built-in replies, limits, closing)."""

from __future__ import annotations

from mxgate.core.reply import Reply
from mxgate.smtp import (
    ConnectionClosed,
    DataEnd,
    Helo,
    MailFrom,
    Noop,
    ProtocolViolation,
    Question,
    Quit,
    RcptTo,
    Rset,
    State,
    Vrfy,
)

from .playbook import EHLO_LINES, GREETING, HOST, Client, fake_policy, play

EHLO = "\n".join("S: " + line for line in EHLO_LINES)


def test_greeting_and_ehlo() -> None:
    play(Client(), f"S: {GREETING}\nC: EHLO client.example\n{EHLO}")


def test_helo_answers_with_hostname_only() -> None:
    client = Client()
    play(client, f"S: {GREETING}\nC: HELO client.example\nS: 250 {HOST}")
    assert client.of_type(Helo) == [Helo("client.example", extended=False)]
    assert client.conn.state is State.READY


def test_banner_and_unlimited_size() -> None:
    client = Client(banner="ESMTP", message_size_limit=0)
    lines = client.take_lines()
    assert lines == [f"220 {HOST} ESMTP"]
    client.feed(b"EHLO c\r\n")
    assert "250-SIZE" in client.take_lines()


def test_helo_and_ehlo_need_a_name() -> None:
    play(
        Client(),
        f"""
        S: {GREETING}
        C: EHLO
        S: 501 5.5.4 Syntax: EHLO hostname
        C: HELO
        S: 501 5.5.4 Syntax: HELO hostname
        """,
    )


def test_one_transaction_step_by_step() -> None:
    client = Client()
    play(
        client,
        f"""
        S: {GREETING}
        C: EHLO client.example
        {EHLO}
        C: MAIL FROM:<alice@example.org> SIZE=100
        S: 250 2.1.0 Ok
        C: RCPT TO:<bob@example.com>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: hello
        C:
        C: ..leading dot
        C: .
        S: 250 2.0.0 Ok: queued as 4XYZ
        C: QUIT
        S: 221 2.0.0 Bye
        """,
    )
    assert client.body() == b"Subject: hello\r\n\r\n.leading dot\r\n"
    assert client.of_type(DataEnd) == [DataEnd(len(client.body()))]
    assert client.of_type(MailFrom)[0].size == 100
    assert client.events[-1] == ConnectionClosed("quit", "QUIT")


def test_pipelining_a_whole_transaction_in_one_write() -> None:
    client = Client()
    play(
        client,
        f"""
        S: {GREETING}
        C: EHLO client.example
        C: MAIL FROM:<alice@example.org>
        C: RCPT TO:<bob@y>
        C: RCPT TO:<unknown@y>
        C: RCPT TO:<carol@y>
        C: DATA
        {EHLO}
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 550 5.1.1 <unknown@y>: Recipient address rejected: User unknown in relay recipient table
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: pipelined
        C:
        C: body
        C: .
        C: MAIL FROM:<>
        C: RCPT TO:<dave@y>
        C: DATA
        C: second
        C: .
        C: QUIT
        S: 250 2.0.0 Ok: queued as 4XYZ
        S: 250 2.1.0 Ok
        S: 250 2.1.5 Ok
        S: 354 End data with <CR><LF>.<CR><LF>
        S: 250 2.0.0 Ok: queued as 4XYZ
        S: 221 2.0.0 Bye
        """,
    )
    assert [e.address for e in client.of_type(RcptTo)] == [
        "bob@y",
        "unknown@y",
        "carol@y",
        "dave@y",
    ]
    assert len(client.of_type(DataEnd)) == 2


def test_whole_session_in_a_single_write_is_answered_in_order() -> None:
    client = Client()
    client.take_lines()
    client.feed(
        b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\nQUIT\r\n"
    )
    assert client.take_lines() == [
        *EHLO_LINES,
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as 4XYZ",
        "250 2.0.0 Ok",
        "221 2.0.0 Bye",
    ]


def test_sequencing_errors() -> None:
    play(
        Client(),
        f"""
        S: {GREETING}
        C: MAIL FROM:<a@x>
        S: 503 5.5.1 Error: send HELO/EHLO first
        C: RCPT TO:<b@y>
        S: 503 5.5.1 Error: need MAIL command
        C: DATA
        S: 503 5.5.1 Error: need RCPT command
        C: EHLO c
        {EHLO}
        C: RCPT TO:<b@y>
        S: 503 5.5.1 Error: need MAIL command
        C: DATA
        S: 503 5.5.1 Error: need RCPT command
        C: MAIL FROM:<a@x>
        S: 250 2.1.0 Ok
        C: MAIL FROM:<a@x>
        S: 503 5.5.1 Error: nested MAIL command
        C: DATA
        S: 503 5.5.1 Error: need RCPT command
        C: RCPT TO:<unknown@y>
        S: 550 5.1.1 <unknown@y>: Recipient address rejected: User unknown in relay recipient table
        C: DATA
        S: 554 5.5.1 Error: no valid recipients
        C: RCPT TO:<b@y>
        S: 250 2.1.5 Ok
        C: MAIL FROM:<a@x>
        S: 503 5.5.1 Error: nested MAIL command
        C: DATA extra
        S: 501 5.5.4 Syntax: DATA
        """,
    )


def test_refused_mail_makes_pipelined_rcpt_and_data_fail() -> None:
    def policy(question: Question) -> Reply:
        if isinstance(question, MailFrom):
            return Reply(550, "5.7.1", "Sender rejected")
        return fake_policy(question)

    client = Client(answer=policy)
    play(
        client,
        f"""
        S: {GREETING}
        C: EHLO c
        C: MAIL FROM:<spam@x>
        C: RCPT TO:<b@y>
        C: DATA
        C: body line
        {EHLO}
        S: 550 5.7.1 Sender rejected
        S: 503 5.5.1 Error: need MAIL command
        S: 503 5.5.1 Error: need RCPT command
        S: 502 5.5.2 Error: command not recognized
        """,
    )
    assert client.of_type(RcptTo) == []
    assert client.conn.state is State.READY


def test_rset_and_ehlo_end_the_transaction() -> None:
    client = Client()
    play(
        client,
        f"""
        S: {GREETING}
        C: RSET
        S: 250 2.0.0 Ok
        C: EHLO c
        {EHLO}
        C: MAIL FROM:<a@x>
        C: RSET
        C: RCPT TO:<b@y>
        S: 250 2.1.0 Ok
        S: 250 2.0.0 Ok
        S: 503 5.5.1 Error: need MAIL command
        C: MAIL FROM:<a@x>
        C: EHLO again
        C: RCPT TO:<b@y>
        S: 250 2.1.0 Ok
        {EHLO}
        S: 503 5.5.1 Error: need MAIL command
        C: RSET now
        S: 501 5.5.4 Syntax: RSET
        """,
    )
    assert len(client.of_type(Rset)) == 2


def test_noop_vrfy_expn_help_auth_unknown() -> None:
    client = Client()
    play(
        client,
        f"""
        S: {GREETING}
        C: NOOP
        S: 250 2.0.0 Ok
        C: noop with an argument
        S: 250 2.0.0 Ok
        C: VRFY root
        S: 252 2.0.0 Cannot VRFY user; try RCPT to attempt delivery
        C: VRFY
        S: 501 5.5.4 Syntax: VRFY address
        C: EXPN staff
        S: 502 5.5.1 Error: command not implemented
        C: HELP
        S: 214 2.0.0 See RFC 5321
        C: AUTH PLAIN AGFsaWNlAHNlY3JldA==
        S: 503 5.5.1 Error: authentication not enabled
        C: BDAT 10 LAST
        S: 502 5.5.2 Error: command not recognized
        C: XYZZY
        S: 502 5.5.2 Error: command not recognized
        C:
        S: 500 5.5.2 Error: bad syntax
        """,
    )
    assert client.of_type(Noop) == [Noop(), Noop()]
    assert client.of_type(Vrfy) == [Vrfy("root")]
    assert [v.command for v in client.of_type(ProtocolViolation)] == [
        "VRFY",
        "EXPN",
        "AUTH",
        "BDAT",
        "XYZZY",
        "",
    ]


def test_commands_after_quit_are_ignored() -> None:
    client = Client()
    client.take_lines()
    client.feed(b"QUIT\r\nMAIL FROM:<a@x>\r\nNOOP\r\n")
    assert client.take_lines() == ["221 2.0.0 Bye"]
    assert client.events == [Quit(), ConnectionClosed("quit", "QUIT")]
    client.feed(b"NOOP\r\n")  # whatever still arrives is dropped unread
    assert client.take_lines() == []
    assert client.conn.next_event() == ConnectionClosed("quit", "QUIT")
    assert client.conn.state is State.CLOSED
    assert client.conn.want_timer is None


def test_http_is_disconnected() -> None:
    client = Client()
    client.take_lines()
    client.feed(b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n")
    assert client.take_lines() == ["521 5.7.0 Error: I can break rules, too. Goodbye."]
    assert client.events[-1] == ConnectionClosed("forbidden", "GET")
