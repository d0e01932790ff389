"""The Received: header the gateway prepends (pure: the time is an argument)."""

from __future__ import annotations

from email import message_from_bytes
from email.utils import parsedate_to_datetime

from mxgate.server.headers import received_header


def header(now: float, recipient: str | None = "a@d.test") -> bytes:
    return received_header(
        helo="client.example",
        client="unknown[192.0.2.7]",
        by="mx.test",
        protocol="ESMTP",
        queue_id="1K1KP5JN94J00TMF0000",
        recipient=recipient,
        now=now,
    )


def test_the_header_line_by_line() -> None:
    assert header(1_764_633_015.9) == (
        b"Received: from client.example (unknown [192.0.2.7])\r\n"
        b"\tby mx.test (mxgate) with ESMTP id 1K1KP5JN94J00TMF0000\r\n"
        b"\tfor <a@d.test>; Mon, 01 Dec 2025 23:50:15 +0000\r\n"
    )
    # With several recipients, none is named.
    assert header(1_764_633_015.0, None).endswith(
        b"id 1K1KP5JN94J00TMF0000; Mon, 01 Dec 2025 23:50:15 +0000\r\n"
    )


def test_the_date_follows_the_clock_second_by_second() -> None:
    # Dates are formatted once per second and shared: each second still gets its own.
    for now in (1_764_633_015.2, 1_764_633_016.0, 1_764_633_015.7, 1_764_719_415.0):
        parsed = message_from_bytes(header(now) + b"\r\nbody")
        date = parsed["Received"].rsplit(";", 1)[1].strip()
        assert parsedate_to_datetime(date).timestamp() == int(now)
