"""The client's body encoding, reply framing and xtext, against the server's
own decoder: whatever the spool holds and however it is read in chunks,
the next hop receives the same message, with CRLF line ends only, and the
message ends exactly at our ``.CRLF``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.smtp.data import DataDecoder
from mxgate.smtp.encode import BodyEncoder, encode_xtext
from mxgate.smtp.parse import decode_xtext
from mxgate.smtp.reader import ReplyReader, make_reply


def encode(chunks: list[bytes]) -> bytes:
    encoder = BodyEncoder()
    return b"".join(encoder.encode(c) for c in chunks) + encoder.finish()


def normalised(body: bytes) -> bytes:
    """What the next hop should get: every line end CRLF, a final CRLF."""
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    return text if not text or text.endswith(b"\r\n") else text + b"\r\n"


def decode(wire: bytes) -> bytes:
    decoder = DataDecoder(0)
    body, pos, finished = decoder.decode(wire, 0)
    assert finished and pos == len(wire), "the terminator must be exactly at the end"
    assert not decoder.bare_cr and not decoder.bare_lf
    return body


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([b""], b".\r\n"),
        ([b"a\r\n"], b"a\r\n.\r\n"),
        ([b"a"], b"a\r\n.\r\n"),
        ([b".\r\n"], b"..\r\n.\r\n"),
        ([b"x\r\n.\r\n..y\r\n"], b"x\r\n..\r\n...y\r\n.\r\n"),
        ([b"x\r", b"\n.hidden\r\n"], b"x\r\n..hidden\r\n.\r\n"),
        ([b"x\r\n", b".", b"y\n"], b"x\r\n..y\r\n.\r\n"),
        ([b"unix\nline\n.dot\n"], b"unix\r\nline\r\n..dot\r\n.\r\n"),
        ([b"bare\rcr\r"], b"bare\r\ncr\r\n.\r\n"),
        ([b"smuggle\n.\r\nMAIL FROM:<x>\r\n"], b"smuggle\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
        # CRLF only (the common case, counted rather than rewritten):
        ([b"a\r\n", b".b\r\n.c\r\n", b"d"], b"a\r\n..b\r\n..c\r\nd\r\n.\r\n"),
        ([b"a\r\n.", b"b\r\n"], b"a\r\n..b\r\n.\r\n"),
    ],
)
def test_dot_stuffing_and_line_ends(chunks: list[bytes], wire: bytes) -> None:
    assert encode(chunks) == wire


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(
        st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"x y", b"\xc3\xa9"])
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_any_chunking_reaches_the_next_hop_intact(body: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    wire = encode(chunks)
    assert wire == encode([body])
    assert decode(wire) == normalised(body)


@given(st.text(max_size=40))
def test_xtext_round_trip(text: str) -> None:
    encoded = encode_xtext(text)
    assert encoded.isascii() and "=" not in encoded and " " not in encoded
    if text.isprintable():  # decode_xtext refuses control characters
        assert decode_xtext(encoded).encode("latin-1") == text.encode("utf-8")


def test_xtext_examples() -> None:
    assert encode_xtext("a+b=c") == "a+2Bb+3Dc"
    assert encode_xtext("user@example.com") == "user@example.com"
    assert encode_xtext("é") == "+C3+A9"


def test_reply_reader_accepts_bare_lf_and_code_only_lines() -> None:
    reader = ReplyReader()
    reader.feed(b"250-first\n250\r\n")
    assert reader.next_reply() == (250, ["first", ""])
    reader.feed(b"354\r\n")
    assert reader.next_reply() == (354, [""])
    assert reader.next_reply() is None


def test_enhanced_code_must_match_the_reply_class() -> None:
    assert make_reply(250, ["5.1.1 odd"], True).enhanced == ""
    assert make_reply(550, ["5.1.1"], True).text == ""
    assert make_reply(451, ["4.03.010 padded"], True).enhanced == "4.3.10"


@given(
    lines=st.lists(st.sampled_from([b"", b"a", b"x y", b"a.b", b"\xc3\xa9", b"Subject: z"])),
    cuts=st.lists(st.integers(min_value=0, max_value=120), max_size=6),
)
def test_a_plain_body_goes_out_as_the_scanning_encoder_would_send_it(
    lines: list[bytes], cuts: list[int]
) -> None:
    """Envelope.plain_body: CRLF line ends only, no line starting with a dot.
    Sent unscanned, in any chunking, it is what the scanning encoder makes."""
    body = b"".join(line + b"\r\n" for line in lines)
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    plain = BodyEncoder(plain=True)
    wire = b"".join(plain.encode(c) for c in chunks) + plain.finish()
    assert wire == encode([body])
    assert decode(wire) == body
