"""Mail log lines keep Postfix's wording (pflogsumm, fail2ban and people's greps)."""

from __future__ import annotations

import asyncio
import io
import re

from mxgate.maillog import MailLog

LINE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d mx mxgate/(\w+)\[\d+\]: (.*)$")


def lines(stream: io.StringIO) -> list[tuple[str, str]]:
    found = []
    for text in stream.getvalue().splitlines():
        match = LINE.match(text)
        assert match, text
        found.append((match[1], match[2]))
    return found


def test_disconnect_counts_like_postfix_3() -> None:
    out = io.StringIO()
    log = MailLog("mx.example.net", out)
    log.disconnect(
        "unknown[192.0.2.7]",
        {"ehlo": 1, "mail": 1, "rcpt": 3, "data": 1, "quit": 1, "commands": 7},
        {"rcpt": 2, "commands": 2},
    )
    assert lines(out) == [
        (
            "smtpd",
            "disconnect from unknown[192.0.2.7] ehlo=1 mail=1 rcpt=1/3 data=1 quit=1 commands=5/7",
        )
    ]


def test_reject_line() -> None:
    out = io.StringIO()
    MailLog("mx.example.net", out).reject(
        "RCPT",
        "unknown[192.0.2.7]",
        "554 5.7.1 <a@b.example>: Relay access denied",
        "s@example.org",
        "a@b.example",
        "ESMTP",
        "client.example",
    )
    assert lines(out) == [
        (
            "smtpd",
            "NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <a@b.example>: "
            "Relay access denied; from=<s@example.org> to=<a@b.example> proto=ESMTP "
            "helo=<client.example>",
        )
    ]


def test_lines_of_one_loop_iteration_are_written_together_and_in_order() -> None:
    out = io.StringIO()
    log = MailLog("mx.example.net", out)

    async def run() -> str:
        log.connect("unknown[192.0.2.7]")
        log.accepted("QID1", "unknown[192.0.2.7]")
        before = out.getvalue()  # nothing yet: written when the loop turns
        await asyncio.sleep(0)
        return before

    assert asyncio.run(run()) == ""
    assert [text for _service, text in lines(out)] == [
        "connect from unknown[192.0.2.7]",
        "QID1: client=unknown[192.0.2.7]",
    ]
