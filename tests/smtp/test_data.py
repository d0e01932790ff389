"""The DATA section: dot-unstuffing, the one true terminator, SMTP smuggling,
size limits, streaming (RFC 5321 4.1.1.4, 4.5.2; RFC 1870)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.smtp import (
    DataChunk,
    DataEnd,
    DataRejected,
    MailFrom,
    RcptTo,
)
from mxgate.smtp.data import DataDecoder

from .playbook import Client

START = b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"
SMUGGLED = b"MAIL FROM:<admin@bank.example>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nevil\r\n"


def decode_all(data: bytes, limit: int = 0) -> tuple[bytes, bytes, DataDecoder]:
    """(body, rest after the terminator, decoder) for ``data`` fed whole."""
    decoder = DataDecoder(limit)
    body, pos, finished = decoder.decode(data, 0)
    assert finished
    return body, data[pos:], decoder


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (b".\r\n", b""),
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),  # RFC 5321 4.5.2: any leading dot is removed
        (b"a\r\n..b\r\n. \r\n.\r\n", b"a\r\n.b\r\n \r\n"),
        (b"\r\n\r\n.\r\n", b"\r\n\r\n"),
        (b"no final newline.\r\n.\r\n", b"no final newline.\r\n"),
        (b"x" * 5000 + b"\r\n.\r\n", b"x" * 5000 + b"\r\n"),  # > 998: tolerated
    ],
)
def test_dot_unstuffing(wire: bytes, body: bytes) -> None:
    got, rest, decoder = decode_all(wire + b"NEXT")
    assert (got, rest) == (body, b"NEXT")
    assert decoder.size == len(body)
    assert decoder.rejection() is None


@pytest.mark.parametrize(
    "fake_end",
    [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\n.\r",
        b"\r\n.\r",
        b"\n\r\n.\r",
    ],
)
def test_smuggling_variants_never_end_the_message(fake_end: bytes) -> None:
    client = Client()
    client.feed(START + b"Subject: hi\r\n\r\nhello" + fake_end + SMUGGLED + b"\r\n.\r\n")
    client.feed(b"QUIT\r\n")
    assert len(client.of_type(MailFrom)) == 1  # the smuggled MAIL is body, not a command
    assert len(client.of_type(RcptTo)) == 1
    assert client.of_type(DataEnd) == []
    [rejected] = client.of_type(DataRejected)
    assert rejected.reply.code == 550
    assert rejected.reply.enhanced == "5.5.2"
    lines = client.take_lines()
    assert lines[-2] in (
        "550 5.5.2 Error: bare <LF> received",
        "550 5.5.2 Error: bare <CR> received",
    )
    assert lines[-1] == "221 2.0.0 Bye"


def test_smuggling_byte_at_a_time_too() -> None:
    client = Client()
    for byte in START + b"hello\n.\n" + SMUGGLED + b".\r\nQUIT\r\n":
        client.feed(bytes([byte]))
    assert len(client.of_type(MailFrom)) == 1
    assert len(client.of_type(DataRejected)) == 1


@given(
    st.binary().map(lambda b: bytes(b"ab\r\n."[x % 5] for x in b)),
    st.lists(st.integers(min_value=1, max_value=7), min_size=1),
)
def test_bare_line_ends_are_found_however_the_input_is_split(text: bytes, sizes: list[int]) -> None:
    # The whole body, checked by counting, against the decoder fed in pieces.
    wire = text + b"\r\n.\r\n"
    whole, _rest, _ = decode_all(wire)
    crlf = whole.count(b"\r\n")
    decoder = DataDecoder(0)
    buf, pos, at, finished = b"", 0, 0, False
    while not finished:
        size = sizes[at % len(sizes)]
        buf, at = buf + wire[len(buf) : len(buf) + size], at + 1
        _piece, pos, finished = decoder.decode(buf, pos)
    assert decoder.bare_lf == (whole.count(b"\n") != crlf)
    assert decoder.bare_cr == (whole.count(b"\r") != crlf)


def test_bare_lf_and_bare_cr_are_told_apart() -> None:
    assert decode_all(b"a\nb\r\n.\r\n")[2].rejection().text == "Error: bare <LF> received"  # type: ignore[union-attr]
    assert decode_all(b"a\rb\r\n.\r\n")[2].rejection().text == "Error: bare <CR> received"  # type: ignore[union-attr]
    assert decode_all(b"a\r\r\n.\r\n")[2].bare_cr
    assert not decode_all(b"a\r\n\r\n.\r\n")[2].bare_cr


def test_after_a_refused_body_the_session_goes_on() -> None:
    client = Client()
    client.feed(START + b"bare\nlf\r\n.\r\n" + START[8:] + b"clean\r\n.\r\n")
    assert len(client.of_type(DataRejected)) == 1
    [end] = client.of_type(DataEnd)
    assert end.size == len(b"clean\r\n")
    assert client.take_lines()[-1] == "250 2.0.0 Ok: queued as 4XYZ"


def test_size_announced_over_the_limit_is_refused_at_mail() -> None:
    client = Client(message_size_limit=1000)
    client.feed(b"EHLO c\r\nMAIL FROM:<a@x> SIZE=1001\r\nMAIL FROM:<a@x> SIZE=1000\r\n")
    lines = client.take_lines()
    assert lines[-2:] == ["552 5.3.4 Message size exceeds fixed limit", "250 2.1.0 Ok"]
    assert "250-SIZE 1000" in lines


def test_body_over_the_limit_is_drained_then_refused_never_truncated() -> None:
    client = Client(message_size_limit=100)
    body = b"".join(b"line %03d of a long message\r\n" % i for i in range(50))
    client.feed(START)
    for i in range(0, len(body), 7):
        client.feed(body[i : i + 7])
    client.feed(b".\r\nMAIL FROM:<next@x>\r\n")
    assert client.of_type(DataEnd) == []
    [rejected] = client.of_type(DataRejected)
    assert rejected.size == len(body)
    assert rejected.reply.line() == "552 5.3.4 Error: message file too big"
    assert client.body() == body[:100]  # the caller never gets more than the limit
    assert client.take_lines()[-2:] == ["552 5.3.4 Error: message file too big", "250 2.1.0 Ok"]
    assert len(client.of_type(MailFrom)) == 2


def test_exactly_at_the_limit_is_accepted() -> None:
    client = Client(message_size_limit=6)
    client.feed(START + b"1234\r\n.\r\n")  # 4 + CRLF = 6 octets
    assert client.of_type(DataEnd) == [DataEnd(6, plain=True)]


def test_chunks_stream_and_are_never_the_whole_message_at_once() -> None:
    client = Client()
    client.feed(START)
    sizes = []
    for _ in range(100):
        before = len(client.events)
        client.feed(b"x" * 1000 + b"\r\n")
        new = client.events[before:]
        sizes += [len(e.data) for e in new if isinstance(e, DataChunk)]
    client.feed(b".\r\n")
    assert max(sizes) <= 1002
    assert client.of_type(DataEnd) == [DataEnd(100 * 1002, plain=True)]
    assert client.body() == (b"x" * 1000 + b"\r\n") * 100


def test_terminator_split_everywhere() -> None:
    wire = b"a\r\n..b\r\n.\r\nNEXT"
    for cut in range(len(wire) + 1):
        decoder = DataDecoder(0)
        body1, pos, done = decoder.decode(wire[:cut], 0)
        assert not done or cut >= len(b"a\r\n..b\r\n.\r\n")
        rest = wire[:cut][pos:] + wire[cut:]
        body2, pos2, done2 = (b"", 0, True) if done else decoder.decode(rest, 0)
        assert done2
        assert body1 + body2 == b"a\r\n.b\r\n"
        tail = wire[:cut][pos:] if done else rest[pos2:]
        assert tail + (wire[cut:] if done else b"") == b"NEXT"


@given(
    text=st.lists(st.sampled_from([b"a", b".", b"..", b"\r\n", b"\r", b"\n", b"x."])).map(b"".join),
    sizes=st.lists(st.integers(min_value=1, max_value=7), min_size=1),
)
def test_a_body_sent_without_stuffed_dots_is_plain(text: bytes, sizes: list[int]) -> None:
    """``dotted`` is set exactly when a line of the DATA section started with a
    dot, however the input is split; unset, with no bare CR/LF, no line of
    the body starts with a dot, so the queue manager may send it unscanned."""
    wire = text + b"\r\n.\r\n"
    decoder = DataDecoder(0)
    buf, pos, at, finished, body = b"", 0, 0, False, b""
    while not finished:
        size = sizes[at % len(sizes)]
        buf, at = buf + wire[len(buf) : len(buf) + size], at + 1
        piece, pos, finished = decoder.decode(buf, pos)
        body += piece
    section = wire[: pos - 3]  # what came before the terminator's ".\r\n"
    assert decoder.dotted == (section.startswith(b".") or b"\r\n." in section)
    if not (decoder.dotted or decoder.bare_cr or decoder.bare_lf):
        assert not body.startswith(b".") and b"\n." not in body
        assert body == b"" or body.endswith(b"\r\n")


def test_the_end_of_data_event_says_whether_the_body_is_plain() -> None:
    for wire, plain in ((b"a\r\nb\r\n.\r\n", True), (b"a\r\n..b\r\n.\r\n", False)):
        client = Client()
        client.feed(START + wire)
        [end] = client.of_type(DataEnd)
        assert end.plain is plain
