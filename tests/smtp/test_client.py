"""Transcripts of the sans-IO SMTP/LMTP client (no sockets).

Each test plays the server by hand: what the client wrote is compared with
the exact bytes expected, the server's lines are fed back, and the events
checked. Consecutive client commands in one ``data_to_send()`` are one
write, i.e. a pipelined group.
"""

from __future__ import annotations

import pytest

from mxgate.core.reply import Reply
from mxgate.smtp import LocalProtocolError, RemoteProtocolError
from mxgate.smtp.client import (
    NEED_DATA,
    ClientConnection,
    ClientState,
    Command,
    ConnectionClosed,
    MailRequest,
    RcptRequest,
    RecipientReply,
    Response,
    SendBody,
    TransactionDone,
)

EHLO_ALL = (
    b"250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n"
    b"250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n"
)
EHLO_BARE = b"250-mx.test\r\n250 8BITMIME\r\n"


def greeted(ehlo: bytes = EHLO_ALL, *, lmtp: bool = False) -> ClientConnection:
    conn = ClientConnection(lmtp=lmtp)
    conn.receive_data(b"220 mx.test ESMTP\r\n")
    assert conn.next_event() == Response(Command.GREETING, Reply(220, "", "mx.test ESMTP"))
    conn.hello("gw.example")
    assert conn.data_to_send() == (b"LHLO gw.example\r\n" if lmtp else b"EHLO gw.example\r\n")
    conn.receive_data(ehlo)
    event = conn.next_event()
    assert isinstance(event, Response) and event.reply.code == 250
    assert conn.state is ClientState.READY
    return conn


def events(conn: ClientConnection, data: bytes) -> list[object]:
    conn.receive_data(data)
    out: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, (TransactionDone, ConnectionClosed)):
            break
    return out


def test_ehlo_capabilities_are_parsed_case_insensitively() -> None:
    conn = greeted(b"250-mx.test\r\n250-pipelining\r\n250-size\r\n250-Dsn\r\n250 X-FOO bar\r\n")
    caps = conn.capabilities
    assert caps.esmtp and caps.pipelining and caps.dsn
    assert caps.size_limit == 0  # advertised without a limit
    assert not caps.starttls and not caps.smtputf8 and not caps.enhanced_status_codes
    assert caps.keywords["X-FOO"] == "bar"


def test_multiline_reply_with_enhanced_codes_on_every_line() -> None:
    conn = greeted()
    conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test")])
    conn.data_to_send()
    got = events(
        conn, b"250 2.1.0 Ok\r\n550-5.1.1 first line\r\n550-5.1.1 second\r\n550 5.1.1 last\r\n"
    )
    conn.receive_data(b"554 5.5.1 Error: no valid recipients\r\n")
    done = conn.next_event()
    assert got == []
    assert isinstance(done, TransactionDone)
    reply = done.results[0].reply
    assert reply == Reply(550, "5.1.1", "first line\nsecond\nlast")
    assert reply.lines() == ["550-5.1.1 first line", "550-5.1.1 second", "550 5.1.1 last"]


def test_enhanced_code_kept_in_text_when_not_advertised() -> None:
    conn = greeted(EHLO_BARE)
    conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test")])
    assert conn.data_to_send() == b"MAIL FROM:<a@b.test>\r\n"
    got = events(conn, b"550 5.7.1 go away\r\n")
    assert got == [
        TransactionDone(
            (RecipientReply("u@d.test", Reply(550, "", "5.7.1 go away"), Command.MAIL),)
        )
    ]


def test_reply_split_into_single_bytes_gives_the_same_events() -> None:
    wire = b"220-mx.test hello\r\n220-more\r\n220 last\r\n"
    conn = ClientConnection()
    for byte in wire[:-1]:
        conn.receive_data(bytes([byte]))
        assert conn.next_event() is NEED_DATA
    conn.receive_data(wire[-1:])
    assert conn.next_event() == Response(
        Command.GREETING, Reply(220, "", "mx.test hello\nmore\nlast")
    )


@pytest.mark.parametrize(
    "wire",
    [b"250-one\r\n251 two\r\n", b"hello there\r\n", b"25O broken\r\n", b"250x\r\n", b"2" * 5000],
)
def test_malformed_replies_are_remote_protocol_errors(wire: bytes) -> None:
    conn = ClientConnection()
    conn.receive_data(wire)
    with pytest.raises(RemoteProtocolError) as err:
        conn.next_event()
    assert err.value.reply.enhanced == "4.5.0"
    assert conn.state is ClientState.CLOSED


def test_helo_fallback_and_one_command_at_a_time_without_pipelining() -> None:
    conn = ClientConnection()
    conn.receive_data(b"220 old.test SMTP\r\n")
    conn.next_event()
    conn.hello("gw.example")
    assert conn.data_to_send() == b"EHLO gw.example\r\n"
    conn.receive_data(b"502 Error: command not recognized\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"HELO gw.example\r\n"
    conn.receive_data(b"250 old.test\r\n")
    assert conn.next_event() == Response(Command.HELO, Reply(250, "", "old.test"))
    assert not conn.capabilities.esmtp
    mail = MailRequest("a@b.test", size=100, body="8BITMIME", ret="HDRS", envid="x")
    conn.begin(mail, [RcptRequest("u@d.test", ("SUCCESS",)), RcptRequest("v@d.test")])
    # No extension advertised: no parameter at all, and MAIL alone.
    assert conn.data_to_send() == b"MAIL FROM:<a@b.test>\r\n"
    assert events(conn, b"250 Ok\r\n") == []
    assert conn.data_to_send() == b"RCPT TO:<u@d.test>\r\n"
    assert events(conn, b"250 Ok\r\n") == []
    assert conn.data_to_send() == b"RCPT TO:<v@d.test>\r\n"
    assert events(conn, b"250 Ok\r\n") == []
    assert conn.data_to_send() == b"DATA\r\n"
    assert events(conn, b"354 go ahead\r\n") == [SendBody()]
    conn.send_body(b"Subject: x\r\n\r\nhi\r\n")
    conn.end_body()
    assert conn.data_to_send() == b"Subject: x\r\n\r\nhi\r\n.\r\n"
    [done] = events(conn, b"250 queued\r\n")
    assert isinstance(done, TransactionDone) and done.lost is None
    assert [(r.address, r.reply.code, r.command) for r in done.results] == [
        ("u@d.test", 250, Command.DOT),
        ("v@d.test", 250, Command.DOT),
    ]
    assert conn.state is ClientState.READY


def test_without_pipelining_all_refused_means_no_data() -> None:
    conn = greeted(EHLO_BARE)
    conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test")])
    conn.data_to_send()
    events(conn, b"250 Ok\r\n")
    assert conn.data_to_send() == b"RCPT TO:<u@d.test>\r\n"
    [done] = events(conn, b"550 no such user\r\n")
    assert conn.data_to_send() == b""
    assert isinstance(done, TransactionDone)
    assert done.results == (
        RecipientReply("u@d.test", Reply(550, "", "no such user"), Command.RCPT),
    )


def test_pipelined_group_order_and_dsn_parameters() -> None:
    conn = greeted()
    mail = MailRequest(
        "a@b.test", size=1234, body="8BITMIME", smtputf8=True, ret="FULL", envid="id+1=é"
    )
    rcpts = [
        RcptRequest("u@d.test", ("FAILURE", "SUCCESS"), "rfc822;orig+x@d.test"),
        RcptRequest("bad@d.test"),
        RcptRequest("v@d.test", ("NEVER",)),
    ]
    conn.begin(mail, rcpts)
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@b.test> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=id+2B1+3D+C3+A9\r\n"
        b"RCPT TO:<u@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig+2Bx@d.test\r\n"
        b"RCPT TO:<bad@d.test>\r\n"
        b"RCPT TO:<v@d.test> NOTIFY=NEVER\r\n"
        b"DATA\r\n"
    )
    got = events(
        conn,
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <bad@d.test>: unknown\r\n250 2.1.5 Ok\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
    )
    assert got == [SendBody()]
    conn.send_body(b"x")
    conn.end_body()
    assert conn.data_to_send() == b"x\r\n.\r\n"
    [done] = events(conn, b"250 2.0.0 Ok: queued as 123\r\n")
    assert isinstance(done, TransactionDone)
    assert [(r.address, r.reply.line(), r.command) for r in done.results] == [
        ("u@d.test", "250 2.0.0 Ok: queued as 123", Command.DOT),
        ("bad@d.test", "550 5.1.1 <bad@d.test>: unknown", Command.RCPT),
        ("v@d.test", "250 2.0.0 Ok: queued as 123", Command.DOT),
    ]


def test_parameters_left_out_when_not_advertised() -> None:
    conn = greeted(b"250-mx.test\r\n250 PIPELINING\r\n")
    mail = MailRequest("a@b.test", size=1, body="8BITMIME", smtputf8=True, ret="HDRS", envid="e")
    conn.begin(mail, [RcptRequest("u@d.test", ("SUCCESS",), "rfc822;u@d.test")])
    assert conn.data_to_send() == b"MAIL FROM:<a@b.test>\r\nRCPT TO:<u@d.test>\r\nDATA\r\n"


def test_pipelined_mail_refusal_drains_the_rest_and_applies_to_all() -> None:
    conn = greeted()
    conn.begin(MailRequest("spam@b.test"), [RcptRequest("u@d.test"), RcptRequest("v@d.test")])
    conn.data_to_send()
    got = events(
        conn,
        b"553 5.7.1 <spam@b.test>: Sender address rejected\r\n"
        b"503 5.5.1 Error: need MAIL command\r\n503 5.5.1 Error: need MAIL command\r\n"
        b"503 5.5.1 Error: need RCPT command\r\n",
    )
    [done] = got
    assert isinstance(done, TransactionDone)
    assert {r.address: (r.reply.code, r.command) for r in done.results} == {
        "u@d.test": (553, Command.MAIL),
        "v@d.test": (553, Command.MAIL),
    }
    assert conn.state is ClientState.READY and conn.data_to_send() == b""


def test_354_after_all_recipients_refused_sends_a_bare_dot() -> None:
    conn = greeted()
    conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test")])
    conn.data_to_send()
    got = events(conn, b"250 2.1.0 Ok\r\n450 4.2.0 greylisted\r\n354 go on\r\n")
    assert got == []
    assert conn.data_to_send() == b".\r\n"  # RFC 2920 3.1: no body for nobody
    [done] = events(conn, b"554 5.5.1 no valid recipients\r\n")
    assert isinstance(done, TransactionDone)
    assert done.results == (
        RecipientReply("u@d.test", Reply(450, "4.2.0", "greylisted"), Command.RCPT),
    )


def test_data_refusal_applies_to_accepted_recipients() -> None:
    conn = greeted()
    conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test"), RcptRequest("x@d.test")])
    conn.data_to_send()
    [done] = events(
        conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 no\r\n451 4.3.0 try later\r\n"
    )
    assert isinstance(done, TransactionDone)
    assert [(r.address, r.reply.code, r.command) for r in done.results] == [
        ("u@d.test", 451, Command.DATA),
        ("x@d.test", 550, Command.RCPT),
    ]


def test_lmtp_one_reply_per_accepted_recipient_after_the_dot() -> None:
    conn = greeted(
        b"250-lmtp.test\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n", lmtp=True
    )
    rcpts = [RcptRequest(a) for a in ("a@d.test", "gone@d.test", "b@d.test", "full@d.test")]
    conn.begin(MailRequest("s@b.test"), rcpts)
    assert conn.data_to_send().count(b"RCPT TO:") == 4
    got = events(
        conn,
        b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <gone@d.test> User doesn't exist\r\n"
        b"250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 OK\r\n",
    )
    assert got == [SendBody()]
    conn.send_body(b"hello\n")
    conn.end_body()
    conn.data_to_send()
    # Three accepted recipients: three replies, in RCPT order.
    assert events(conn, b"250 2.0.0 <a@d.test> Saved\r\n") == []
    assert events(conn, b"250 2.0.0 <b@d.test> Saved\r\n") == []
    [done] = events(conn, b"452 4.2.2 <full@d.test> Quota exceeded\r\n")
    assert isinstance(done, TransactionDone)
    assert [(r.address, r.reply.line(), r.command) for r in done.results] == [
        ("a@d.test", "250 2.0.0 <a@d.test> Saved", Command.DOT),
        ("gone@d.test", "550 5.1.1 <gone@d.test> User doesn't exist", Command.RCPT),
        ("b@d.test", "250 2.0.0 <b@d.test> Saved", Command.DOT),
        ("full@d.test", "452 4.2.2 <full@d.test> Quota exceeded", Command.DOT),
    ]
    conn.rset()
    assert conn.data_to_send() == b"RSET\r\n"
    assert events(conn, b"250 2.0.0 Ok\r\n") == [Response(Command.RSET, Reply(250, "2.0.0", "Ok"))]
    assert conn.state is ClientState.READY


def test_lmtp_has_no_helo_fallback() -> None:
    conn = ClientConnection(lmtp=True)
    conn.receive_data(b"220 lmtp.test LMTP\r\n")
    conn.next_event()
    conn.hello("gw")
    conn.data_to_send()
    assert events(conn, b"500 5.5.1 unknown\r\n") == [
        Response(Command.LHLO, Reply(500, "5.5.1", "unknown")),
        ConnectionClosed(None),  # nothing more to say: the courier closes
    ]
    assert conn.data_to_send() == b"" and conn.state is ClientState.CLOSED


def test_eof_in_the_middle_reports_partial_results_and_the_stage() -> None:
    conn = greeted()
    conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test"), RcptRequest("bad@d.test")])
    conn.data_to_send()
    conn.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 unknown\r\n")
    conn.receive_data(b"")
    done = conn.next_event()
    assert isinstance(done, TransactionDone) and done.lost is Command.DATA
    assert [(r.address, r.reply.code) for r in done.results] == [("bad@d.test", 550)]
    assert conn.state is ClientState.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_421_closes_and_abort_reports_the_stage() -> None:
    conn = greeted()
    conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test")])
    conn.data_to_send()
    assert events(conn, b"250 2.1.0 Ok\r\n") == []
    assert conn.awaiting is Command.RCPT
    done = conn.abort()  # e.g. the courier's timer ran out
    assert done == TransactionDone((), Command.RCPT)
    assert conn.state is ClientState.CLOSED
    conn2 = greeted()
    conn2.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test")])
    conn2.data_to_send()
    conn2.receive_data(b"421 4.3.2 shutting down\r\n")
    conn2.receive_data(b"")
    [done2] = events(conn2, b"")
    assert isinstance(done2, TransactionDone)
    assert done2.results[0].reply.code == 421 and conn2.state is ClientState.CLOSED


def test_starttls_discards_plaintext_read_before_the_handshake() -> None:
    conn = greeted()
    conn.starttls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    # A man in the middle appends a fake reply after the 220 (RFC 3207 4.2).
    got = events(conn, b"220 2.0.0 Ready to start TLS\r\n250 injected\r\n")
    assert got == [Response(Command.STARTTLS, Reply(220, "2.0.0", "Ready to start TLS"))]
    assert conn.state is ClientState.TLS
    conn.tls_started()
    assert not conn.capabilities.esmtp  # forgotten: EHLO again
    conn.hello("gw.example")
    assert conn.data_to_send() == b"EHLO gw.example\r\n"
    assert events(conn, b"250 mx.test\r\n") == [Response(Command.EHLO, Reply(250, "", "mx.test"))]


def test_caller_mistakes_are_local_protocol_errors() -> None:
    conn = ClientConnection()
    with pytest.raises(LocalProtocolError):
        conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test")])
    conn = greeted()
    with pytest.raises(LocalProtocolError):
        conn.send_body(b"too early")
    with pytest.raises(LocalProtocolError):
        conn.begin(MailRequest("a@b.test"), [])
    with pytest.raises(LocalProtocolError):
        conn.begin(MailRequest("a@b.test"), [RcptRequest("u@d.test>\r\nRSET")])
    with pytest.raises(LocalProtocolError):
        ClientConnection().hello("x")  # no greeting yet


def test_quit() -> None:
    conn = greeted()
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    assert events(conn, b"221 2.0.0 Bye\r\n") == [
        Response(Command.QUIT, Reply(221, "2.0.0", "Bye")),
        ConnectionClosed(None),
    ]
    assert conn.state is ClientState.CLOSED
