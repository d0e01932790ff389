"""Limits and endings: hard error limit, junk commands, recipient overshoot,
idle timeout, closing from our side, end of stream."""

from __future__ import annotations

from mxgate.core.reply import TOO_MANY_RECIPIENTS, Reply
from mxgate.smtp import (
    ConnectionClosed,
    DataEnd,
    DataStart,
    Helo,
    MailFrom,
    Noop,
    Question,
    RcptTo,
    State,
)

from .playbook import EHLO_LINES, HOST, Client, fake_policy


def test_hard_error_limit_disconnects() -> None:
    client = Client()
    client.take_lines()
    client.feed(b"XYZZY\r\n" * 25)
    lines = client.take_lines()
    assert lines == ["502 5.5.2 Error: command not recognized"] * 20 + [
        f"421 4.7.0 {HOST} Error: too many errors"
    ]
    assert client.events[-1] == ConnectionClosed("errors", "XYZZY")


def test_rejected_recipients_count_as_errors_but_452_does_not() -> None:
    client = Client(hard_error_limit=3)
    client.take_lines()
    client.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    client.take_lines()
    client.feed(b"RCPT TO:<unknown1@y>\r\nRCPT TO:<unknown2@y>\r\n")
    assert client.conn.state is State.RCPT_REFUSED
    client.feed(b"RCPT TO:<unknown3@y>\r\nRCPT TO:<b@y>\r\n")
    assert client.take_lines()[-1] == f"421 4.7.0 {HOST} Error: too many errors"
    assert client.of_type(ConnectionClosed) == [ConnectionClosed("errors", "RCPT")]


def test_a_delivered_message_forgives_errors() -> None:
    client = Client(hard_error_limit=3)
    for _ in range(3):
        client.feed(b"XYZZY\r\nXYZZY\r\n")
        client.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nx\r\n.\r\n")
    assert client.of_type(ConnectionClosed) == []
    assert len(client.of_type(DataEnd)) == 3


def test_junk_commands_beyond_the_limit_count_as_errors() -> None:
    client = Client(junk_command_limit=2, hard_error_limit=2)
    client.take_lines()
    client.feed(b"NOOP\r\n" * 3)
    assert client.of_type(ConnectionClosed) == []
    client.feed(b"RSET\r\n")
    assert client.take_lines()[-2:] == ["250 2.0.0 Ok", f"421 4.7.0 {HOST} Error: too many errors"]
    assert client.of_type(ConnectionClosed) == [ConnectionClosed("errors", "RSET")]


def test_1001_recipients() -> None:
    accepted: list[str] = []

    def policy(question: Question) -> Reply:
        if isinstance(question, RcptTo):
            if len(accepted) >= 1000:  # smtpd_recipient_limit: the caller's rule
                return TOO_MANY_RECIPIENTS
            accepted.append(question.address)
        return fake_policy(question)

    client = Client(answer=policy)
    client.take_lines()
    rcpts = b"".join(b"RCPT TO:<user%d@example.com>\r\n" % i for i in range(1100))
    client.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\n" + rcpts + b"DATA\r\nhello\r\n.\r\nQUIT\r\n")
    lines = client.take_lines()[len(EHLO_LINES) + 1 :]
    assert lines[:1000] == ["250 2.1.5 Ok"] * 1000
    assert lines[1000:1100] == ["452 4.5.3 Error: too many recipients"] * 100
    assert lines[1100:] == [
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as 4XYZ",
        "221 2.0.0 Bye",
    ]
    assert len(client.of_type(RcptTo)) == 1100
    assert client.events[-1] == ConnectionClosed("quit", "QUIT")


def test_timeout_is_requested_not_scheduled() -> None:
    client = Client(timeout=42.0)
    client.take_lines()
    assert client.conn.want_timer == 42.0
    client.conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    assert isinstance(client.conn.next_event(), Helo)
    assert isinstance(client.conn.next_event(), MailFrom)
    assert client.conn.want_timer is None  # the client waits for us, not we for it
    client.conn.send(Reply(250, "2.1.0", "Ok"))
    assert client.conn.want_timer == 42.0
    client.conn.timed_out()
    client.pump()
    assert client.take_lines()[-1] == f"421 4.4.2 {HOST} Error: timeout exceeded"
    assert client.events[-1] == ConnectionClosed("timeout", "MAIL")
    assert client.conn.timeout_reply == Reply(421, "4.4.2", f"{HOST} Error: timeout exceeded")


def test_close_from_our_side_answers_a_pending_question() -> None:
    client = Client()
    client.conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    client.conn.next_event()
    assert isinstance(client.conn.next_event(), MailFrom)
    client.conn.close(Reply(421, "4.3.2", "Service shutting down"))
    client.conn.close()  # idempotent
    assert client.conn.data_to_send().endswith(
        b"250 SMTPUTF8\r\n421 4.3.2 Service shutting down\r\n"
    )
    assert client.conn.next_event() == ConnectionClosed("server", "MAIL")


def test_a_421_answer_closes_the_connection() -> None:
    client = Client(answer=lambda q: Reply(421, "4.3.0", "try later"))
    client.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n")
    assert client.take_lines()[-1] == "421 4.3.0 try later"
    assert client.events[-1] == ConnectionClosed("server", "MAIL")


def test_end_of_stream() -> None:
    client = Client()
    client.feed(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\npartial")
    assert isinstance(client.events[-2], DataStart)
    assert client.body() == b"partial"
    client.feed(b"")
    assert client.events[-1] == ConnectionClosed("lost", "DATA")
    assert client.conn.next_event() == ConnectionClosed("lost", "DATA")


def test_end_of_stream_processes_what_was_pipelined_first() -> None:
    client = Client()
    client.conn.receive_data(b"EHLO c\r\nNOOP\r\nNOO")
    client.feed(b"")
    assert client.events == [Helo("c", True), Noop(), ConnectionClosed("lost", "NOOP")]
