"""Session states and the transition table: the ONLY place where the order of
SMTP commands is decided (after h11's ``_state.py``).

Rule 1: ``server.py`` never tests the state to decide whether a command may
run; it looks the (state, trigger) pair up in ``TRANSITIONS`` and gets either
a ``Step`` (allowed; where to go next) or a ``Reply`` (refused; the 503/554
to send, and the state stays put).

Rule 2: for the commands the caller answers (MAIL, RCPT, end of DATA) the
``Step`` names two states: where a positive (2xx) answer leads and where a
refusal leads. Everything else the connection answers itself and only
``accepted`` matters.

The sequence (RFC 5321 4.1.4, 3.3; RFC 3207 4.2; RFC 2920 3.1):

    GREETED --HELO/EHLO--> READY --MAIL--> MAIL --RCPT ok--> RCPT --DATA--> DATA
                                            |                  ^              |
                                            +--RCPT refused--> RCPT_REFUSED   |
    READY <------------------- end of data (any answer) ----------------------+
    READY --STARTTLS--> TLS --handshake done--> GREETED (client must EHLO again)
    GREETED/READY --XCLIENT--> GREETED (a new greeting; EHLO again)
    any --QUIT--> CLOSED;  HELO/EHLO/RSET in a transaction --> READY

RCPT_REFUSED exists so that DATA after recipients that were all refused
(normal with PIPELINING) gets Postfix's 554 5.5.1 "no valid recipients", while
DATA with no RCPT at all is the plain sequencing error 503 5.5.1.

Never does I/O, never parses, never words a reply (see ``replies.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mxgate.core.reply import Reply

from . import replies
from .parse import Verb


class State(enum.Enum):
    __hash__ = object.__hash__  # identity: C-fast, see parse.Verb

    GREETED = "GREETED"  # greeting sent; no (valid) HELO/EHLO yet
    READY = "READY"  # HELO/EHLO done; no mail transaction
    MAIL = "MAIL"  # sender accepted; no RCPT yet
    RCPT_REFUSED = "RCPT_REFUSED"  # sender accepted; every RCPT so far refused
    RCPT = "RCPT"  # sender and at least one recipient accepted
    DATA = "DATA"  # reading the message body; no commands
    TLS = "TLS"  # 220 to STARTTLS sent; waiting for the caller's handshake
    CLOSED = "CLOSED"  # QUIT, error limit, timeout, EOF: nothing more is read


class Internal(enum.Enum):
    """Triggers that are not client commands."""

    __hash__ = object.__hash__

    END_OF_DATA = "END_OF_DATA"  # the caller answered DataEnd, or we refused the body
    TLS_ESTABLISHED = "TLS_ESTABLISHED"  # the caller finished the TLS handshake


Trigger = Verb | Internal


@dataclass(frozen=True, slots=True)
class Step:
    accepted: State  # after the command succeeds / the caller answers 2xx
    refused: State  # after the caller answers 4xx/5xx (MAIL, RCPT, end of data)


def _go(state: State) -> Step:
    return Step(state, state)


# Commands that never change the state and never depend on it: answered (or
# refused) the same way everywhere commands are read.
_NEUTRAL = (Verb.NOOP, Verb.VRFY, Verb.HELP, Verb.EXPN, Verb.AUTH, Verb.UNKNOWN, Verb.FORBIDDEN)


def _commands(state: State, table: dict[Trigger, Step | Reply]) -> dict[Trigger, Step | Reply]:
    """A command state's row: its own rules plus the neutral commands."""
    row: dict[Trigger, Step | Reply] = {verb: _go(state) for verb in _NEUTRAL}
    row[Verb.QUIT] = _go(State.CLOSED)
    row.update(table)
    return row


# A transaction resets on HELO/EHLO as on RSET (RFC 5321 4.1.4).
_IN_TRANSACTION: dict[Trigger, Step | Reply] = {
    Verb.HELO: _go(State.READY),
    Verb.EHLO: _go(State.READY),
    Verb.MAIL: replies.NESTED_MAIL,
    Verb.STARTTLS: replies.IN_TRANSACTION,
    Verb.XCLIENT: replies.IN_TRANSACTION,
    Verb.RSET: _go(State.READY),
}

TRANSITIONS: dict[State, dict[Trigger, Step | Reply]] = {
    State.GREETED: _commands(
        State.GREETED,
        {
            Verb.HELO: _go(State.READY),
            Verb.EHLO: _go(State.READY),
            Verb.MAIL: replies.NEED_HELO,
            Verb.RCPT: replies.NEED_MAIL,
            Verb.DATA: replies.NEED_RCPT,
            Verb.STARTTLS: replies.NEED_HELO,
            Verb.XCLIENT: _go(State.GREETED),
            Verb.RSET: _go(State.GREETED),
        },
    ),
    State.READY: _commands(
        State.READY,
        {
            Verb.HELO: _go(State.READY),
            Verb.EHLO: _go(State.READY),
            Verb.MAIL: Step(State.MAIL, State.READY),
            Verb.RCPT: replies.NEED_MAIL,
            Verb.DATA: replies.NEED_RCPT,
            Verb.STARTTLS: _go(State.TLS),
            Verb.XCLIENT: _go(State.GREETED),
            Verb.RSET: _go(State.READY),
        },
    ),
    State.MAIL: _commands(
        State.MAIL,
        {
            **_IN_TRANSACTION,
            Verb.RCPT: Step(State.RCPT, State.RCPT_REFUSED),
            Verb.DATA: replies.NEED_RCPT,
        },
    ),
    State.RCPT_REFUSED: _commands(
        State.RCPT_REFUSED,
        {
            **_IN_TRANSACTION,
            Verb.RCPT: Step(State.RCPT, State.RCPT_REFUSED),
            Verb.DATA: replies.NO_VALID_RECIPIENTS,
        },
    ),
    State.RCPT: _commands(
        State.RCPT,
        {
            **_IN_TRANSACTION,
            Verb.RCPT: Step(State.RCPT, State.RCPT),
            Verb.DATA: _go(State.DATA),
        },
    ),
    State.DATA: {Internal.END_OF_DATA: _go(State.READY)},
    State.TLS: {Internal.TLS_ESTABLISHED: _go(State.GREETED)},
    State.CLOSED: {},
}

COMMAND_STATES = frozenset({State.GREETED, State.READY, State.MAIL, State.RCPT_REFUSED, State.RCPT})
"""States in which the input is read as command lines."""

TRANSACTION_STATES = frozenset({State.MAIL, State.RCPT_REFUSED, State.RCPT, State.DATA})
"""States in which a mail transaction is open."""
