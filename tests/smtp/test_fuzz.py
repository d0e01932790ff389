"""Property tests (after h11's afl-server fuzzing): however a byte stream is
cut into reads, the connection emits the same events and the same bytes, and
it never raises on anything a peer can send."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxgate.core.reply import Reply
from mxgate.smtp import (
    NEED_DATA,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    Event,
    MailFrom,
    RcptTo,
    ServerConnection,
    StartTls,
)
from mxgate.smtp.data import DataDecoder

PIECES = [
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@x>\r\n",
    b"MAIL FROM:<a@x> SIZE=99999\r\n",
    b"MAIL FROM:<refuse@x>\r\n",
    b"RCPT TO:<b@y>\r\n",
    b"RCPT TO:<refuse@y> NOTIFY=NEVER\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"..x\r\n",
    b"\r\n.\r\n",
    b"text\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\r\n.\n",
    b"\r",
    b"\n",
    b".",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"VRFY x\r\n",
    b"GET /\r\n",
    b"XYZZY\r\n",
    b"x" * 700,
    b"\x00",
    b"\xff",
]
streams = st.lists(st.sampled_from(PIECES) | st.binary(max_size=12), max_size=50).map(b"".join)


def answer(question: MailFrom | RcptTo | DataEnd) -> Reply:
    if isinstance(question, DataEnd):
        return Reply(250, "2.0.0", "Ok: queued as X")
    if question.address.startswith("refuse"):
        return Reply(550, "5.7.1", "No")
    return Reply(250, "2.0.0", "Ok")


def run(chunks: list[bytes], **options: object) -> tuple[list[Event], bytes]:
    """Drive a connection like the transport would; stop at STARTTLS (what
    follows would be TLS records) and at the end of the conversation."""
    conn = ServerConnection("mx.example.com", **options)  # type: ignore[arg-type]
    events: list[Event] = []
    out = bytearray(conn.data_to_send())

    def pump() -> bool:
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                return True
            events.append(event)
            if isinstance(event, (MailFrom, RcptTo, DataEnd)):
                out.extend(conn.send(answer(event)))
            if isinstance(event, (StartTls, ConnectionClosed)):
                return False

    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        if not pump():
            break
    out.extend(conn.data_to_send())
    return merge_chunks(events), bytes(out)


def merge_chunks(events: list[Event]) -> list[Event]:
    """Chunk boundaries carry no meaning: compare the bytes they hold."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, DataChunk) and merged and isinstance(merged[-1], DataChunk):
            merged[-1] = DataChunk(merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    return [piece for piece in pieces if piece]  # b"" would mean end of stream


OPTIONS = st.fixed_dictionaries(
    {
        "message_size_limit": st.sampled_from([0, 20, 30_720_000]),
        "hard_error_limit": st.sampled_from([0, 3, 20]),
        "tls_available": st.booleans(),
        "max_line": st.sampled_from([16, 512]),
        "max_parameter_line": st.sampled_from([32, 2048]),
    }
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    data=streams,
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20),
    options=OPTIONS,
)
def test_any_split_gives_the_same_conversation(
    data: bytes, cuts: list[int], options: dict[str, object]
) -> None:
    whole = run([data], **options)
    assert run(split(data, cuts), **options) == whole
    assert run([bytes([b]) for b in data], **options) == whole


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.binary().filter(lambda b: b"\r" not in b and b"\n" not in b)))
def test_dot_stuffing_round_trips(lines: list[bytes]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    wire = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    events, _ = run([b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n" + wire + b".\r\n"])
    chunks = [e for e in events if isinstance(e, DataChunk)]
    assert b"".join(c.data for c in chunks) == body
    plain = not any(line.startswith(b".") for line in lines)
    assert DataEnd(len(body), plain=plain) in events


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=10))
def test_decoder_only_ends_at_crlf_dot_crlf(body: bytes, cuts: list[int]) -> None:
    wire = body + b"\r\n.\r\n"
    first = (b"\r\n" + wire).find(b"\r\n.\r\n")  # the DATA line's CRLF counts
    decoder = DataDecoder(0)
    buf, pos, fed, finished = b"", 0, 0, False
    for piece in split(wire, cuts):
        buf = buf[pos:] + piece
        fed += len(piece)
        _, pos, finished = decoder.decode(buf, 0)
        if finished:
            break
    assert finished
    consumed = fed - len(buf) + pos
    assert consumed == first + 3  # just after the first real terminator
