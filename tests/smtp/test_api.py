"""Misuse by the caller raises LocalProtocolError; the table is complete."""

from __future__ import annotations

import pytest

from mxgate.core.reply import Reply
from mxgate.smtp import (
    NEED_DATA,
    DataEnd,
    LocalProtocolError,
    MailFrom,
    RcptTo,
    ServerConnection,
    State,
)
from mxgate.smtp.parse import Verb
from mxgate.smtp.state import COMMAND_STATES, TRANSITIONS, Internal, Step

from .playbook import HOST

OK = Reply(250, "2.0.0", "Ok")


def test_cannot_forget_to_answer() -> None:
    conn = ServerConnection(HOST)
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n")
    conn.next_event()
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.awaiting == MailFrom("a@x")
    with pytest.raises(LocalProtocolError):
        conn.next_event()
    conn.send(OK)
    assert isinstance(conn.next_event(), RcptTo)


def test_cannot_answer_twice_or_out_of_turn() -> None:
    conn = ServerConnection(HOST)
    with pytest.raises(LocalProtocolError):
        conn.send(OK)
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    conn.next_event()
    conn.next_event()
    out = conn.send(OK)
    assert out.endswith(b"250 SMTPUTF8\r\n250 2.0.0 Ok\r\n")  # earlier replies first
    with pytest.raises(LocalProtocolError):
        conn.send(OK)


@pytest.mark.parametrize("code", [100, 220 + 134, 600, 0])
def test_answers_must_be_2xx_4xx_or_5xx(code: int) -> None:
    conn = ServerConnection(HOST)
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
    conn.next_event()
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(code, "", "x"))
    conn.send(OK)  # still answerable


def test_feeding_after_end_of_stream_is_a_caller_bug() -> None:
    conn = ServerConnection(HOST)
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        conn.receive_data(b"NOOP\r\n")


def test_data_end_answer_returns_to_ready() -> None:
    conn = ServerConnection(HOST)
    conn.receive_data(b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n.\r\n")
    events = []
    out = b""
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, (MailFrom, RcptTo)):
            out += conn.send(OK)
        if isinstance(event, DataEnd):
            assert conn.state is State.DATA
            out += conn.send(Reply(451, "4.3.0", "Error: queue file write error"))
    assert events[-1] == DataEnd(0, plain=True)
    assert conn.state is State.READY
    assert out.endswith(
        b"354 End data with <CR><LF>.<CR><LF>\r\n451 4.3.0 Error: queue file write error\r\n"
    )
    assert conn.data_to_send() == b""


def test_every_command_state_knows_every_verb() -> None:
    for state in COMMAND_STATES:
        assert set(TRANSITIONS[state]) == set(Verb), state
    assert set(TRANSITIONS) == set(State)
    for state, row in TRANSITIONS.items():
        for trigger, rule in row.items():
            assert isinstance(rule, (Step, Reply)), (state, trigger)
    assert isinstance(TRANSITIONS[State.DATA][Internal.END_OF_DATA], Step)
    assert isinstance(TRANSITIONS[State.TLS][Internal.TLS_ESTABLISHED], Step)
