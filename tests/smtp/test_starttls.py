"""STARTTLS (RFC 3207): offered only when possible, never inside a
transaction, and nothing pipelined in plaintext after it is ever executed."""

from __future__ import annotations

import pytest

from mxgate.smtp import (
    NEED_DATA,
    Helo,
    LocalProtocolError,
    MailFrom,
    ServerConnection,
    StartTls,
    State,
)

from .playbook import EHLO_LINES, GREETING, HOST, Client, play

EHLO_TLS = [*EHLO_LINES[:3], "250-STARTTLS", *EHLO_LINES[3:]]


def state_of(conn: ServerConnection) -> State:
    return conn.state  # a call, so that mypy does not keep an earlier narrowing


def test_not_offered_without_a_certificate() -> None:
    play(
        Client(),
        f"""
        S: {GREETING}
        C: EHLO c
        {chr(10).join("S: " + line for line in EHLO_LINES)}
        C: STARTTLS
        S: 502 5.5.1 Error: command not implemented
        """,
    )


def test_plaintext_pipelined_after_starttls_is_discarded() -> None:
    client = Client(tls_available=True, auto_tls=False)
    client.feed(b"EHLO c\r\n")
    assert client.take_lines() == [GREETING, *EHLO_TLS]
    events = client.feed(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\n")
    assert events == [StartTls()]
    assert client.take_lines() == ["220 2.0.0 Ready to start TLS"]
    assert state_of(client.conn) is State.TLS
    # Bytes fed before the handshake completes are plaintext too: dropped.
    client.conn.receive_data(b"DATA\r\n")
    with pytest.raises(LocalProtocolError):
        client.conn.next_event()  # the caller must finish the handshake first
    client.conn.tls_established()
    assert client.conn.tls_active
    assert state_of(client.conn) is State.GREETED
    assert client.conn.next_event() is NEED_DATA
    assert client.of_type(MailFrom) == []


def test_after_the_handshake_the_client_starts_over() -> None:
    client = Client(tls_available=True)
    client.feed(b"EHLO c\r\nSTARTTLS\r\n")
    client.take_lines()
    play(
        client,
        f"""
        C: MAIL FROM:<a@x>
        S: 503 5.5.1 Error: send HELO/EHLO first
        C: EHLO c
        {chr(10).join("S: " + line for line in EHLO_LINES)}
        C: STARTTLS
        S: 554 5.5.1 Error: TLS already active
        C: MAIL FROM:<a@x>
        S: 250 2.1.0 Ok
        """,
    )
    assert client.of_type(Helo) == [Helo("c", True), Helo("c", True)]


def test_starttls_sequencing_and_syntax() -> None:
    play(
        Client(tls_available=True),
        f"""
        S: {GREETING}
        C: STARTTLS
        S: 503 5.5.1 Error: send HELO/EHLO first
        C: EHLO c
        {chr(10).join("S: " + line for line in EHLO_TLS)}
        C: STARTTLS now
        S: 501 5.5.4 Syntax: STARTTLS
        C: MAIL FROM:<a@x>
        S: 250 2.1.0 Ok
        C: STARTTLS
        S: 503 5.5.1 Error: MAIL transaction in progress
        C: RSET
        S: 250 2.0.0 Ok
        C: STARTTLS
        S: 220 2.0.0 Ready to start TLS
        """,
    )


def test_end_of_stream_during_the_handshake() -> None:
    conn = ServerConnection(HOST, tls_available=True)
    conn.receive_data(b"EHLO c\r\nSTARTTLS\r\n")
    assert isinstance(conn.next_event(), Helo)
    assert conn.next_event() == StartTls()
    conn.receive_data(b"")
    event = conn.next_event()
    assert event.reason == "lost"  # type: ignore[union-attr]


def test_tls_established_without_starttls_is_a_caller_bug() -> None:
    with pytest.raises(LocalProtocolError):
        ServerConnection(HOST, tls_available=True).tls_established()
