"""The workers' SMTP counts and the master's sums (pure)."""

from __future__ import annotations

from mxgate.metrics.counts import PREFIX, SmtpCounts, SmtpTotals


def worker(connections: int, messages: int) -> SmtpCounts:
    counts = SmtpCounts()
    for _ in range(connections):
        counts.connected()
    for _ in range(messages):
        counts.accepted(1000)
    counts.session_closed({"ehlo": 1, "rcpt": 3}, {"rcpt": 2})
    return counts


def test_a_line_carries_a_workers_totals_and_the_master_sums_them() -> None:
    totals = SmtpTotals()
    one, two = worker(3, 2), worker(1, 1)
    for key, counts in (("11:1.0", one), ("12:1.0", two)):
        line = counts.line(key)
        assert line.startswith(PREFIX) and line.endswith(b"\n") and line.count(b"\n") == 1
        assert totals.take_line(line[len(PREFIX) : -1])
    total = totals.total()
    assert (total.connections, total.messages, total.octets) == (4, 3, 3000)
    assert total.commands == {"ehlo": 2, "rcpt": 6}
    assert total.rejected == {"rcpt": 4}


def test_a_newer_line_of_a_worker_replaces_its_older_one_and_gone_workers_still_count() -> None:
    totals = SmtpTotals()
    counts = worker(1, 0)
    totals.take_line(counts.line("11:1.0")[2:-1])
    counts.connected()
    totals.take_line(counts.line("11:1.0")[2:-1])
    totals.take_line(worker(5, 0).line("11:2.0")[2:-1])  # the same pid, restarted
    assert totals.total().connections == 2 + 5


def test_malformed_lines_are_ignored() -> None:
    totals = SmtpTotals()
    for payload in (b"", b"{", b"[]", b'{"key":"k"}', b'{"key":"k","connections":"x"}'):
        assert not totals.take_line(payload)
    assert totals.total().connections == 0
