"""The client's reply reading and xtext encoding, written for speed, against
the plain definitions they replaced: the same replies, the same refusals."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mxgate.core.reply import Reply
from mxgate.smtp.encode import encode_xtext
from mxgate.smtp.errors import RemoteProtocolError
from mxgate.smtp.reader import MAX_LINE, MAX_REPLY, ReplyReader, make_reply

# --- the definitions as they were, by regular expression -----------------------
_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)", re.DOTALL)
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)")
_XCHAR = frozenset(range(0x21, 0x7F)) - {ord("+"), ord("=")}


class ReferenceReader:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.code = b""
        self.lines: list[str] = []
        self.size = 0

    def next_reply(self) -> tuple[int, list[str]] | None:
        while True:
            end = self.buf.find(b"\n")
            if end < 0:
                if len(self.buf) > MAX_LINE:
                    raise RemoteProtocolError(Reply(451, "4.5.0", "line too long"))
                return None
            raw = bytes(self.buf[:end]).rstrip(b"\r")
            del self.buf[: end + 1]
            self.size += end + 1
            if end > MAX_LINE or self.size > MAX_REPLY:
                raise RemoteProtocolError(Reply(451, "4.5.0", "reply too long"))
            m = _LINE.fullmatch(raw)
            if m is None:
                raise RemoteProtocolError(Reply(451, "4.5.0", "bad line"))
            code, sep, text = m.groups()
            if self.lines and code != self.code:
                raise RemoteProtocolError(Reply(451, "4.5.0", "code changed"))
            if sep == b"" and text:
                raise RemoteProtocolError(Reply(451, "4.5.0", "bad line"))
            self.code = code
            self.lines.append(text.decode("utf-8", "replace"))
            if sep != b"-":
                lines, self.lines, self.code, self.size = self.lines, [], b"", 0
                return int(code), lines


def reference_make_reply(code: int, lines: list[str], enhanced: bool) -> Reply:
    status = ""
    if enhanced:
        m = _ENHANCED.match(lines[0])
        if m is not None and int(m.group(1)) == code // 100:
            status = f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
            prefix = m.group(0).rstrip(" ")

            def strip(line: str) -> str:
                if line == prefix:
                    return ""
                if line.startswith(prefix + " "):
                    return line[len(prefix) :].lstrip(" ")
                return line

            lines = [strip(line) for line in lines]
    return Reply(code, status, "\n".join(lines))


def reference_xtext(text: str) -> str:
    return "".join(chr(b) if b in _XCHAR else f"+{b:02X}" for b in text.encode("utf-8"))


# --- inputs ------------------------------------------------------------------
codes = st.sampled_from(
    [b"250", b"354", b"451", b"550", b"221", b"199", b"600", b"2x0", b"25", b""]
)
separators = st.sampled_from([b" ", b"-", b"", b"\t", b"x"])
texts = st.lists(
    st.sampled_from([b"Ok", b"2.1.0", b" ", b"\r", b"\xc3\xa9", b"\xff", b"5.1.1", b"queued"]),
    max_size=5,
).map(b"".join)
endings = st.sampled_from([b"\r\n", b"\n", b"\r\r\n"])
lines = st.tuples(codes, separators, texts, endings).map(b"".join)


def outcomes(reader: ReplyReader | ReferenceReader, chunks: list[bytes]) -> list[object]:
    """Each reply read after each chunk, then the first refusal (by type)."""
    seen: list[object] = []
    try:
        for chunk in chunks:
            if isinstance(reader, ReplyReader):
                reader.feed(chunk)
            else:
                reader.buf += chunk
            while (reply := reader.next_reply()) is not None:
                seen.append(reply)
    except RemoteProtocolError:
        seen.append("refused")
    return seen


@given(st.lists(lines, max_size=8), st.integers(min_value=1, max_value=40))
def test_reply_framing_matches_the_regex_definition(wire: list[bytes], cut: int) -> None:
    data = b"".join(wire)
    chunks = [data[i : i + cut] for i in range(0, len(data), cut)]
    assert outcomes(ReplyReader(), chunks) == outcomes(ReferenceReader(), chunks)


statuses_sample = ["2.1.0", "2.1.5", "2.01.0", "5.1.1", "5.1.10", "4.03.010", "2.1", "2.1.0x", ""]
statuses = st.sampled_from(statuses_sample)
reply_lines = st.tuples(
    statuses, st.sampled_from(["", " ", "  "]), st.sampled_from(["", "Ok", "x y", "Ok ", "\t"])
)


@given(
    st.sampled_from([250, 354, 451, 550, 221]),
    st.lists(reply_lines.map("".join), min_size=1, max_size=3),
    st.booleans(),
)
def test_replies_match_the_plain_definition(code: int, text: list[str], enhanced: bool) -> None:
    assert make_reply(code, text, enhanced) == reference_make_reply(code, text, enhanced)


@given(
    st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=30)
    | st.text(alphabet=st.sampled_from("ab@.~!+=/ \x7f\x00é"), max_size=12)
)
def test_xtext_matches_the_plain_definition(text: str) -> None:
    assert encode_xtext(text) == reference_xtext(text)


def test_every_single_line_reply_of_the_sample_twice() -> None:
    """All combinations, twice over: the second pass reads the status codes
    back from the cache the first pass filled."""
    for _ in range(2):
        for code in (250, 354, 451, 550, 221):
            for status in statuses_sample:
                for gap in ("", " ", "  "):
                    for text in ("", "Ok", "x y", "Ok ", "\t"):
                        for enhanced in (True, False):
                            line = [status + gap + text]
                            expected = reference_make_reply(code, line, enhanced)
                            assert make_reply(code, line, enhanced) == expected
