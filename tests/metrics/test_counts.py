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


def test_tls_handshakes_and_connections_turned_away_are_summed() -> None:
    totals = SmtpTotals()
    one, two = SmtpCounts(), SmtpCounts()
    one.tls_handshake(True)
    one.tls_handshake(True)
    two.tls_handshake(False)
    two.turned_away("client_limit")
    totals.take_line(one.line("11:1.0")[2:-1])
    totals.take_line(two.line("12:1.0")[2:-1])
    total = totals.total()
    assert total.tls == {"ok": 2, "failed": 1}
    assert total.refused == {"client_limit": 1}


def test_a_line_from_a_worker_before_tls_counts_is_still_taken() -> None:
    """After an upgrade and a reload, old workers finishing their sessions
    still send lines without the newer counts."""
    totals = SmtpTotals()
    old = (
        b'{"key":"9:1.0","connections":2,"messages":1,"octets":10,'
        b'"commands":{"ehlo":2},"rejected":{}}'
    )
    assert totals.take_line(old)
    assert totals.total().connections == 2
    assert totals.total().tls == {}


def test_busy_polls_are_summed_over_workers() -> None:
    totals = SmtpTotals()
    one, two = SmtpCounts(), SmtpCounts()
    one.busy_polled(caught=10, expired=2, seconds=0.5)
    one.busy_polled(caught=30, expired=3, seconds=1.25)  # totals, not increments
    two.busy_polled(caught=5, expired=0, seconds=0.25)
    totals.take_line(one.line("11:1.0")[2:-1])
    totals.take_line(two.line("12:1.0")[2:-1])
    total = totals.total()
    assert total.busy_polls == {"caught": 35, "expired": 3}
    assert total.busy_poll_seconds == 1.5


def test_unchanged_busy_polls_send_no_new_line() -> None:
    counts = SmtpCounts()
    counts.busy_polled(caught=1, expired=0, seconds=0.001)
    before = counts.changes
    counts.busy_polled(caught=1, expired=0, seconds=0.001)
    assert counts.changes == before
    counts.busy_polled(caught=2, expired=0, seconds=0.002)
    assert counts.changes == before + 1


def test_a_line_without_busy_polls_is_still_taken() -> None:
    totals = SmtpTotals()
    old = (
        b'{"key":"9:1.0","connections":2,"messages":1,"octets":10,'
        b'"commands":{"ehlo":2},"rejected":{},"tls":{},"refused":{}}'
    )
    assert totals.take_line(old)
    assert totals.total().busy_polls == {}
    assert totals.total().busy_poll_seconds == 0.0
