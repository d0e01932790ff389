"""XCLIENT (Postfix's extension) in the sans-IO server: offered and taken
only when the caller allows it, checked attribute by attribute, and a new
greeting after which the session starts over."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.core.reply import Reply
from mxgate.smtp import State, Xclient
from mxgate.smtp.replies import XCLIENT_ATTRIBUTES
from mxgate.smtp.server import ServerConnection
from mxgate.smtp.xclient import parse_xclient

from .playbook import EHLO_LINES, GREETING, HOST, Client, play

XCLIENT_KEYWORD = "250-XCLIENT NAME ADDR PORT PROTO HELO REVERSE_NAME LOGIN DESTADDR DESTPORT"
EHLO = "\n".join("S: " + line for line in EHLO_LINES)
OFFERED = [*EHLO_LINES[:3], XCLIENT_KEYWORD, *EHLO_LINES[3:]]
EHLO_XCLIENT = "\n".join("S: " + line for line in OFFERED)


def allowed() -> Client:
    conn = ServerConnection(HOST)
    conn.allow_xclient()
    return Client(conn)


def test_not_offered_nor_taken_unless_allowed() -> None:
    client = Client()
    play(
        client,
        f"""
        S: {GREETING}
        C: EHLO front.example
        {EHLO}
        C: XCLIENT ADDR=192.0.2.7
        S: 550 5.7.0 Error: insufficient authorization
        """,
    )
    assert not client.of_type(Xclient)


def test_offered_to_an_allowed_client_then_a_new_greeting() -> None:
    client = allowed()
    client.feed(b"EHLO front.example\r\n")
    lines = client.take_lines()
    assert XCLIENT_KEYWORD in lines
    assert lines[-1] == EHLO_LINES[-1]
    play(
        client,
        f"""
        C: XCLIENT NAME=Client.Example ADDR=192.0.2.7 HELO=client.example PROTO=ESMTP PORT=40000
        S: {GREETING}
        C: MAIL FROM:<a@example.org>
        S: 503 5.5.1 Error: send HELO/EHLO first
        C: EHLO client.example
        {EHLO_XCLIENT}
        """,
    )
    [event] = client.of_type(Xclient)
    assert event.attributes == {
        "NAME": "client.example",
        "ADDR": "192.0.2.7",
        "HELO": "client.example",
        "PROTO": "ESMTP",
        "PORT": "40000",
    }


def test_pipelined_with_the_ehlo_after_it() -> None:
    client = allowed()
    client.feed(b"XCLIENT ADDR=IPV6:2001:DB8::7 NAME=[UNAVAILABLE]\r\nEHLO c.example\r\n")
    lines = client.take_lines()
    assert lines[1] == GREETING  # after the first greeting, before the EHLO reply
    assert lines[2] == f"250-{HOST}"
    [event] = client.of_type(Xclient)
    assert event.attributes == {"ADDR": "2001:db8::7", "NAME": None}
    assert client.conn.state is State.READY


def test_not_inside_a_transaction() -> None:
    client = allowed()
    play(
        client,
        f"""
        S: {GREETING}
        C: EHLO front.example
        {EHLO_XCLIENT}
        C: MAIL FROM:<a@example.org>
        S: 250 2.1.0 Ok
        C: XCLIENT ADDR=192.0.2.7
        S: 503 5.5.1 Error: MAIL transaction in progress
        C: XCLIENT
        S: 503 5.5.1 Error: MAIL transaction in progress
        """,
    )
    assert not client.of_type(Xclient)


@pytest.mark.parametrize(
    ("argument", "reply"),
    [
        ("", "501 5.5.4 Syntax: XCLIENT attribute=value..."),
        ("USER=alice", "501 5.5.4 Bad XCLIENT attribute name: USER"),
        ("N\u00c4ME=x", "501 5.5.4 Bad XCLIENT attribute name: ?"),
        ("DESTADDR=here", "501 5.5.4 Bad XCLIENT DESTADDR syntax"),
        ("ADDR", "501 5.5.4 Bad XCLIENT attribute name: ADDR"),
        ("ADDR=192.0.2.777", "501 5.5.4 Bad XCLIENT ADDR syntax"),
        ("ADDR=IPV6:192.0.2.7", "501 5.5.4 Bad XCLIENT ADDR syntax"),
        ("ADDR=fe80::1%25eth0", "501 5.5.4 Bad XCLIENT ADDR syntax"),
        ("ADDR=192.0.2.7+0A", "501 5.5.4 Bad XCLIENT attribute value: ADDR"),
        ("NAME=-bad-.example", "501 5.5.4 Bad XCLIENT NAME syntax"),
        ("PROTO=LMTP", "501 5.5.4 Bad XCLIENT PROTO syntax"),
        ("PORT=65536", "501 5.5.4 Bad XCLIENT PORT syntax"),
        ("HELO=+", "501 5.5.4 Bad XCLIENT attribute value: HELO"),
    ],
)
def test_bad_attributes_are_refused_and_change_nothing(argument: str, reply: str) -> None:
    client = allowed()
    client.take_lines()
    client.feed(f"XCLIENT {argument}".rstrip().encode() + b"\r\n")
    assert client.take_lines() == [reply]
    assert not client.of_type(Xclient)
    assert client.conn.state is State.GREETED


def test_xtext_values_are_decoded() -> None:
    assert parse_xclient("HELO=[192.0.2.7]+2Bx ADDR=[TEMPUNAVAIL]") == {
        "HELO": "[192.0.2.7]+x",
        "ADDR": None,
    }


def test_postfix_attributes_that_change_nothing_here_are_taken() -> None:
    # nginx's mail proxy, for one, sends LOGIN; swaks can send all of them.
    argument = "LOGIN=alice REVERSE_NAME=Rev.Example DESTADDR=IPV6:2001:db8::1 DESTPORT=25"
    assert parse_xclient(argument) == {
        "LOGIN": "alice",
        "REVERSE_NAME": "rev.example",
        "DESTADDR": "2001:db8::1",
        "DESTPORT": "25",
    }


@given(st.ip_addresses())
def test_every_address_is_taken_in_its_canonical_form(address: object) -> None:
    text = str(address)
    prefix = "IPV6:" if ":" in text else ""
    assert parse_xclient(f"ADDR={prefix}{text.upper()}") == {"ADDR": text}


@given(st.text(max_size=80))
def test_any_argument_gives_attributes_or_a_501(argument: str) -> None:
    result = parse_xclient(argument)
    if isinstance(result, Reply):
        assert (result.code, result.enhanced) == (501, "5.5.4")
    else:
        assert set(result) <= set(XCLIENT_ATTRIBUTES)
