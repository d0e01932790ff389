"""Mail log lines keep Postfix's wording (pflogsumm, fail2ban and people's greps)."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.maillog import MailLog, MaillogFile, delay_text, open_maillog

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


# -- maillog_file ---------------------------------------------------------------


def _append_lines(path: str, writer: int, batches: int) -> None:
    log = MailLog("mx.example.net", MaillogFile(path))
    for batch in range(batches):
        for n in range(5):  # several lines per write, as a busy loop iteration gives
            log.line("smtpd", f"writer={writer} batch={batch} n={n} " + "x" * 200)
        log.flush()


def test_maillog_file_takes_whole_lines_from_several_processes(tmp_path: Path) -> None:
    """Every process of serve appends to the file itself: no line is cut or
    lost, whatever the interleaving (O_APPEND, one write per batch)."""
    path = str(tmp_path / "mail.log")
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.starmap(_append_lines, [(path, writer, 300) for writer in range(4)])
    text = Path(path).read_text()
    seen = set()
    for line in text.splitlines():
        match = LINE.match(line)
        assert match, line
        seen.add(match[2].split(" x")[0])
    assert len(seen) == len(text.splitlines()) == 4 * 300 * 5
    assert oct(Path(path).stat().st_mode & 0o777) == "0o640"


def test_maillog_file_reopen_follows_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "mail.log"
    target = MaillogFile(str(path))
    log = MailLog("mx.example.net", target)
    log.line("smtpd", "before")
    path.rename(tmp_path / "mail.log.1")
    log.line("smtpd", "still the old file")
    target.reopen()
    log.line("smtpd", "after")
    target.close()
    assert [text for _, text in _file_lines(tmp_path / "mail.log.1")] == [
        "before",
        "still the old file",
    ]
    assert [text for _, text in _file_lines(path)] == ["after"]


def test_maillog_file_reopen_keeps_the_old_file_when_the_path_cannot_be_opened(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "logs"
    directory.mkdir()
    target = MaillogFile(str(directory / "mail.log"))
    (directory / "mail.log").rename(tmp_path / "kept.log")
    directory.rmdir()
    target.reopen()
    MailLog("mx.example.net", target).line("smtpd", "still written")
    target.close()
    assert [text for _, text in _file_lines(tmp_path / "kept.log")] == ["still written"]


def test_a_full_disk_costs_log_lines_not_the_session() -> None:
    """/dev/full answers every write with ENOSPC: the line is dropped, the
    caller (a session, a delivery) goes on."""
    target = MaillogFile("/dev/full")
    assert target.write("lost\n") == 0
    MailLog("mx.example.net", target).line("smtpd", "also lost")
    target.close()


def test_open_maillog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert open_maillog("") is None
    opened = open_maillog(str(tmp_path / "mail.log"))
    assert isinstance(opened, MaillogFile)
    opened.close()
    assert open_maillog(str(tmp_path / "missing" / "mail.log")) is None
    assert "cannot open maillog_file" in capsys.readouterr().err


def _file_lines(path: Path) -> list[tuple[str, str]]:
    return lines(io.StringIO(path.read_text()))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0"),
        (-3.0, "0"),  # a clock stepped back
        (2.2e-05, "0"),  # what %.2g wrote as 2.2e-05
        (0.0041, "0"),
        (0.005, "0.01"),  # half up, as Postfix rounds
        (0.1, "0.1"),
        (0.15, "0.15"),
        (0.155, "0.16"),
        (0.201, "0.2"),
        (0.996, "1"),
        (1.001, "1"),
        (1.25, "1.3"),
        (9.96, "10"),
        (12.5, "13"),
        (99.5, "100"),
        (150.0, "150"),  # what %.2g wrote as 1.5e+02
        (4000.4, "4000"),
    ],
)
def test_delays_are_written_with_postfix_digits(seconds: float, text: str) -> None:
    assert delay_text(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "decimals", "text"),
    [
        (0.0041, 6, "0.0041"),  # two significant digits below a second
        (0.000123, 6, "0.00012"),
        (0.0041, 3, "0.004"),
        (0.15, 1, "0.2"),
        (0.15, 0, "0"),
        (1.25, 0, "1"),
        (1.25, 6, "1.3"),  # from a second on: one decimal, whatever the limit
        (12.5, 6, "13"),
    ],
)
def test_delay_logging_resolution_limit(seconds: float, decimals: int, text: str) -> None:
    assert delay_text(seconds, decimals) == text


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=6))
def test_delay_text_is_postfix_rounding(micros: int, decimals: int) -> None:
    """postconf(5) delay_logging_resolution_limit: at most ``decimals`` after
    the point and two significant digits; one decimal from 1 s, whole
    seconds from 10 s (or with 0 decimals); the place is chosen before
    rounding (half up); no trailing zeros, no exponent."""
    value = Decimal(micros) / 1_000_000
    if value >= 10 or decimals == 0:
        place = Decimal(1)
    elif value >= 1:
        place = Decimal("0.1")
    elif value == 0:
        place = Decimal(10) ** -decimals
    else:  # the second significant digit's place, unless finer than allowed
        place = max(Decimal(10) ** -decimals, Decimal(10) ** (value.adjusted() - 1))
    expected = value.quantize(place, rounding=ROUND_HALF_UP)
    written = delay_text(micros / 1_000_000, decimals)
    assert re.fullmatch(r"\d+(\.\d*[1-9])?", written), written
    assert Decimal(written) == expected
