"""The master's HTTP endpoint over loopback: /metrics, /healthz, /readyz."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mxgate.metrics.counts import SmtpCounts, SmtpTotals
from mxgate.metrics.endpoint import STALL, GatewayView, MetricsEndpoint
from tests.metrics.http import get, samples


class Now:
    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, list[GatewayView], Now]]:
    for queue, files in (("incoming", 2), ("deferred", 3), ("hold", 0)):
        (tmp_path / queue).mkdir()
        for i in range(files):
            (tmp_path / queue / f"Q{i}").write_bytes(b"")
    totals = SmtpTotals()
    counts = SmtpCounts()
    counts.connected()
    counts.accepted(4096)
    counts.session_closed({"ehlo": 1, "mail": 1, "rcpt": 2, "data": 1}, {"rcpt": 1})
    counts.tls_handshake(True)
    counts.tls_handshake(False)
    counts.turned_away("client_limit")
    counts.busy_polled(caught=40, expired=3, seconds=0.0125)
    totals.take_line(counts.line("7:1.0")[2:-1])
    now = Now()
    view = [
        GatewayView(
            heartbeat=now.value,
            workers_ready=2,
            snapshot_version=42,
            in_flight=1,
            waiting_to_record=3,
            recipients={"sent": 5, "deferred": 1},
            recipients_by_nexthop={
                ("smtp:[10.0.0.2]:25", "sent"): 4,
                ("smtp:$domain", "sent"): 1,
                ("smtp:$domain", "deferred"): 1,
            },
            transactions={"new": 1, "reused": 4},
        )
    ]
    endpoint = MetricsEndpoint("127.0.0.1", 0, tmp_path, totals, lambda: view[0], clock=now)
    host, port = endpoint.start()
    try:
        yield f"http://{host}:{port}", view, now
    finally:
        endpoint.stop()


def test_metrics_in_the_prometheus_text_format(
    served: tuple[str, list[GatewayView], Now],
) -> None:
    base, _view, _now = served
    found = samples(base)
    assert found[("mxgate_smtpd_connections_total", ())] == 1
    assert found[("mxgate_smtpd_messages_total", ())] == 1
    assert found[("mxgate_smtpd_message_octets_total", ())] == 4096
    assert found[("mxgate_smtpd_commands_total", (("command", "rcpt"),))] == 2
    assert found[("mxgate_smtpd_rejected_commands_total", (("command", "rcpt"),))] == 1
    assert found[("mxgate_smtpd_tls_handshakes_total", (("result", "ok"),))] == 1
    assert found[("mxgate_smtpd_tls_handshakes_total", (("result", "failed"),))] == 1
    assert found[("mxgate_smtpd_refused_connections_total", (("reason", "client_limit"),))] == 1
    assert found[("mxgate_smtpd_busy_polls_total", (("result", "caught"),))] == 40
    assert found[("mxgate_smtpd_busy_polls_total", (("result", "expired"),))] == 3
    assert found[("mxgate_smtpd_busy_poll_seconds_total", ())] == 0.0125
    assert found[("mxgate_delivery_recipients_total", (("status", "sent"),))] == 5
    assert found[("mxgate_delivery_transactions_total", (("connection", "reused"),))] == 4
    by_hop = "mxgate_delivery_nexthop_recipients_total"
    assert found[(by_hop, (("nexthop", "smtp:[10.0.0.2]:25"), ("status", "sent")))] == 4
    assert found[(by_hop, (("nexthop", "smtp:$domain"), ("status", "deferred")))] == 1
    assert found[("mxgate_queue_messages", (("queue", "deferred"),))] == 3
    assert found[("mxgate_queue_messages", (("queue", "incoming"),))] == 2
    assert found[("mxgate_queue_messages", (("queue", "hold"),))] == 0
    assert found[("mxgate_qmgr_messages_in_flight", ())] == 1
    assert found[("mxgate_qmgr_messages_waiting_to_record", ())] == 3
    assert found[("mxgate_smtpd_workers_ready", ())] == 2
    assert found[("mxgate_routing_snapshot_loaded", ())] == 1
    assert found[("mxgate_routing_snapshot_version", ())] == 42


def test_health_follows_the_heartbeat(served: tuple[str, list[GatewayView], Now]) -> None:
    base, _view, now = served
    assert get(base + "/healthz") == (200, "ok\n")
    now.value += STALL + 1
    status, text = get(base + "/healthz")
    assert status == 503 and "has not turned for 11 s" in text


def test_readiness_needs_routing_data_and_a_worker(
    served: tuple[str, list[GatewayView], Now],
) -> None:
    base, view, now = served
    assert get(base + "/readyz") == (200, "ready\n")
    view[0] = GatewayView(heartbeat=now.value, workers_ready=2, snapshot_version=None)
    status, text = get(base + "/readyz")
    assert status == 503 and text.startswith("no routing data")
    view[0] = GatewayView(heartbeat=now.value, workers_ready=0, snapshot_version=1)
    assert get(base + "/readyz") == (503, "no SMTP worker listening yet\n")
    view[0] = GatewayView(heartbeat=now.value, workers_ready=2, snapshot_version=1, stopping=True)
    assert get(base + "/readyz") == (503, "stopping\n")
    assert get(base + "/other")[0] == 404
