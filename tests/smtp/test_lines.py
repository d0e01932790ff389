"""Malformed command lines: length limits (RFC 5321 4.5.3.1.4), bare CR/LF
(RFC 5321 2.3.8), NUL and invalid UTF-8, each refused with a clear 500."""

from __future__ import annotations

import pytest

from mxgate.smtp import Noop, ProtocolViolation, RcptTo

from .playbook import Client

TOO_LONG = "500 5.5.2 Error: line too long"


def session(data: bytes, *, split: bool = False, **options: object) -> Client:
    client = Client(**options)  # type: ignore[arg-type]
    client.take_lines()
    if split:
        for byte in data:
            client.feed(bytes([byte]))
    else:
        client.feed(data)
    return client


@pytest.mark.parametrize("split", [False, True])
def test_command_line_limit(split: bool) -> None:
    ok = b"NOOP " + b"x" * (512 - 7) + b"\r\n"
    long = b"NOOP " + b"x" * (512 - 6) + b"\r\n"
    client = session(ok + long, split=split)
    assert client.take_lines() == ["250 2.0.0 Ok", TOO_LONG]


@pytest.mark.parametrize("split", [False, True])
def test_an_endless_line_is_refused_once_and_its_tail_never_runs(split: bool) -> None:
    data = b"NOOP " + b"x" * 5000 + b" QUIT\r\nNOOP\r\n"
    client = session(data, split=split)
    assert client.take_lines() == [TOO_LONG, "250 2.0.0 Ok"]
    assert client.of_type(Noop) == [Noop()]


def test_mail_and_rcpt_lines_may_be_longer_when_they_carry_parameters() -> None:
    orcpt = "rfc822;" + "o" * 480 + "@example.com"
    line = f"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT={orcpt}\r\n".encode()
    assert 512 < len(line) <= 2048
    client = session(b"EHLO c\r\nMAIL FROM:<a@x>\r\n" + line)
    assert client.take_lines()[-1] == "250 2.1.5 Ok"
    assert client.of_type(RcptTo)[0].orcpt == orcpt


def test_but_not_without_parameters_and_never_over_2048() -> None:
    address = b"a" * 600 + b"@example.com"
    client = session(b"EHLO c\r\nMAIL FROM:<" + address + b">\r\n")
    assert client.take_lines()[-1] == TOO_LONG
    client.feed(b"MAIL FROM:<a@x> ENVID=x " + b"X-FOO=1 " * 300 + b"\r\n")
    assert client.take_lines() == [TOO_LONG]


def test_limits_are_configurable() -> None:
    client = session(b"NOOP " + b"x" * 600 + b"\r\n", max_line=1000)
    assert client.take_lines() == ["250 2.0.0 Ok"]


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"NOOP\n", "500 5.5.2 Error: bare <LF> received"),
        (b"\n", "500 5.5.2 Error: bare <LF> received"),
        (b"NO\rOP\r\n", "500 5.5.2 Error: bare <CR> received"),
        (b"NOOP\r\r\n", "500 5.5.2 Error: bare <CR> received"),
        (b"NOOP\x00\r\n", "500 5.5.2 Error: NUL character received"),
        (b"VRFY \xff\xfe\r\n", "500 5.5.2 Error: bad UTF-8 syntax"),
        (b"\r\n", "500 5.5.2 Error: bad syntax"),
        (b"   \r\n", "500 5.5.2 Error: bad syntax"),
    ],
)
def test_malformed_lines(line: bytes, reply: str) -> None:
    client = session(line + b"NOOP\r\n")
    assert client.take_lines() == [reply, "250 2.0.0 Ok"]
    assert client.of_type(ProtocolViolation)[0].reply.line() == reply


def test_a_line_ended_by_a_bare_lf_is_refused_not_guessed_at() -> None:
    # Cutting at every LF means an LF-only client gets an answer at once
    # instead of waiting for a CRLF that never comes.
    client = session(b"EHLO c\r\nMAIL FROM:<a@x>\nRCPT TO:<b@y>\r\n")
    assert client.take_lines()[-2:] == [
        "500 5.5.2 Error: bare <LF> received",
        "503 5.5.1 Error: need MAIL command",
    ]
    assert client.of_type(RcptTo) == []


def test_utf8_needs_smtputf8_for_the_sender() -> None:
    client = session(
        b"EHLO c\r\nMAIL FROM:<j\xc3\xb6hn@x>\r\nMAIL FROM:<j\xc3\xb6hn@x> SMTPUTF8\r\n"
    )
    assert client.take_lines()[-2:] == [
        "553 5.6.7 Must declare SMTPUTF8 to send unicode address",
        "250 2.1.0 Ok",
    ]
