"""Reply values and the catalogue texts of SPEC section 3."""

from __future__ import annotations

import pytest

from mxgate.core import reply as r
from mxgate.core.reply import Reply


@pytest.mark.parametrize(
    ("reply", "transient", "permanent", "positive"),
    [
        (r.RCPT_OK, False, False, True),
        (r.TOO_MANY_RECIPIENTS, True, False, False),
        (r.lookup_failure("a@b.example"), True, False, False),
        (r.BAD_RECIPIENT_SYNTAX, False, True, False),
        (r.relay_denied("a@b.example"), False, True, False),
        (Reply(354, "", "go"), False, False, True),
    ],
    ids=["250", "452", "451", "501", "554", "354"],
)
def test_classes(reply: Reply, transient: bool, permanent: bool, positive: bool) -> None:
    assert reply.is_transient is transient
    assert reply.is_permanent is permanent
    assert reply.is_positive is positive


@pytest.mark.parametrize(
    ("reply", "line"),
    [
        (r.RCPT_OK, "250 2.1.5 Ok"),
        (r.MAIL_OK, "250 2.1.0 Ok"),
        (r.queued("4XyZ"), "250 2.0.0 Ok: queued as 4XyZ"),
        (r.TOO_MANY_RECIPIENTS, "452 4.5.3 Error: too many recipients"),
        (r.BAD_RECIPIENT_SYNTAX, "501 5.1.3 Bad recipient address syntax"),
        (r.NEED_SMTPUTF8, "553 5.6.7 Must declare SMTPUTF8 to send unicode address"),
        (r.relay_denied("a@x.example"), "554 5.7.1 <a@x.example>: Relay access denied"),
        (
            r.unknown_recipient("a@x.example"),
            "550 5.1.1 <a@x.example>: Recipient address rejected: "
            "User unknown in relay recipient table",
        ),
        (
            r.need_fqdn("james"),
            "504 5.5.2 <james>: Recipient address rejected: need fully-qualified address",
        ),
        (r.lookup_failure("a@x.example"), "451 4.3.0 <a@x.example>: Temporary lookup failure"),
        (
            r.no_route("a@x.example", "no transport row for a@x.example"),
            "451 4.3.0 <a@x.example>: Recipient address rejected: "
            "Temporary failure: no transport row for a@x.example",
        ),
        (
            r.expansion_failed("a@x.example", "5.4.6", "mail forwarding loop: a -> a"),
            "550 5.4.6 <a@x.example>: Recipient address rejected: mail forwarding loop: a -> a",
        ),
        (Reply(220, "", "mx ESMTP"), "220 mx ESMTP"),
    ],
    ids=lambda v: v.line().split(" ")[0] if isinstance(v, Reply) else "",
)
def test_catalogue_lines(reply: Reply, line: str) -> None:
    assert reply.line() == line
    assert str(reply) == line


def test_multiline_rendering() -> None:
    reply = Reply(250, "", "mx.example\nPIPELINING\nSMTPUTF8")
    assert reply.lines() == ["250-mx.example", "250-PIPELINING", "250 SMTPUTF8"]
    assert Reply(550, "5.1.1", "a\nb").lines() == ["550-5.1.1 a", "550 5.1.1 b"]
