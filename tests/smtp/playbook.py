"""Transcript-style driving of a ``ServerConnection`` (after mitmproxy's
Playbook and h11's ConnectionPair).

``Client`` plays the asyncio transport: it feeds bytes, pulls events until
NEED_DATA, answers every question with a small fake policy, and collects what
the server writes. ``play()`` checks a dialogue written as::

    S: 220 mx.example.com ESMTP mxgate
    C: EHLO client.example
    S: 250-mx.example.com
    ...

Consecutive ``C:`` lines go out in ONE write (that is PIPELINING); each run of
``S:`` lines must be exactly the next lines the server wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mxgate.core.reply import MAIL_OK, RCPT_OK, Reply, queued, unknown_recipient
from mxgate.smtp import (
    NEED_DATA,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    Event,
    MailFrom,
    Question,
    RcptTo,
    ServerConnection,
    StartTls,
)

HOST = "mx.example.com"
GREETING = f"220 {HOST} ESMTP mxgate"
EHLO_LINES = [
    f"250-{HOST}",
    "250-PIPELINING",
    "250-SIZE 30720000",
    "250-ENHANCEDSTATUSCODES",
    "250-8BITMIME",
    "250-DSN",
    "250 SMTPUTF8",
]


def fake_policy(question: Question) -> Reply:
    """MAIL: always 250; RCPT: 550 for local parts starting with 'unknown';
    end of DATA: queued."""
    if isinstance(question, MailFrom):
        return MAIL_OK
    if isinstance(question, RcptTo):
        if question.address.startswith("unknown"):
            return unknown_recipient(question.address)
        return RCPT_OK
    return queued("4XYZ")


class Client:
    def __init__(
        self,
        conn: ServerConnection | None = None,
        *,
        answer: Callable[[Question], Reply] = fake_policy,
        auto_tls: bool = True,
        **options: Any,
    ) -> None:
        self.conn = conn if conn is not None else ServerConnection(HOST, **options)
        self.answer = answer
        self.auto_tls = auto_tls
        self.events: list[Event] = []
        self.output = bytearray(self.conn.data_to_send())

    def feed(self, data: bytes) -> list[Event]:
        self.conn.receive_data(data)
        return self.pump()

    def pump(self) -> list[Event]:
        new: list[Event] = []
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                break
            new.append(event)
            if isinstance(event, (MailFrom, RcptTo, DataEnd)):
                self.output += self.conn.send(self.answer(event))
            elif isinstance(event, StartTls):
                self.output += self.conn.data_to_send()
                if not self.auto_tls:
                    break
                self.conn.tls_established()
            elif isinstance(event, ConnectionClosed):
                break
        self.output += self.conn.data_to_send()
        self.events += new
        return new

    def take_lines(self) -> list[str]:
        """The complete reply lines written since the last call."""
        text = bytes(self.output).decode("utf-8")
        assert text == "" or text.endswith("\r\n"), text
        self.output.clear()
        return text.split("\r\n")[:-1]

    def body(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, DataChunk))

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def play(client: Client, script: str) -> None:
    """Run a dialogue; see the module docstring."""
    pending: list[str] = []  # server lines written but not yet checked
    expected: list[str] = []
    sending: list[str] = []

    def flush_client() -> None:
        if sending:
            client.feed("".join(line + "\r\n" for line in sending).encode())
            sending.clear()

    def check_server() -> None:
        if expected:
            pending.extend(client.take_lines())
            got = pending[: len(expected)]
            assert got == expected, f"expected {expected!r}\n     got {pending!r}"
            del pending[: len(expected)]
            expected.clear()

    for raw in script.strip("\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        who, _, text = line.partition(":")
        text = text[1:] if text.startswith(" ") else text
        if who == "C":
            check_server()
            sending.append(text)
        elif who == "S":
            flush_client()
            expected.append(text)
        else:
            raise ValueError(f"bad script line {raw!r}")
    flush_client()
    check_server()
    pending.extend(client.take_lines())
    assert pending == [], f"unexpected server output {pending!r}"
