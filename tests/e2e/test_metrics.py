"""metrics_listen on a running gateway: what the workers count reaches /metrics,
and /healthz and /readyz say what a load balancer needs (SPEC section 11)."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import GatewayFactory
from tests.e2e.gateway import (
    INSIDE,
    OUTSIDE,
    Gateway,
    client_tls_context,
    free_port,
    wait_until,
)
from tests.metrics.http import get, samples


def test_counts_of_both_workers_reach_the_metrics(start_gateway: GatewayFactory) -> None:
    port = free_port()
    gateway = start_gateway(workers=2, metrics_listen=f"{INSIDE}:{port}")
    base = f"http://{INSIDE}:{port}"
    wait_until(lambda: get(base + "/readyz") == (200, "ready\n"))
    assert get(base + "/healthz") == (200, "ok\n")
    sessions = 6  # spread over both workers by the kernel
    for _ in range(sessions):
        with gateway.smtp(OUTSIDE) as client:
            client.sendmail("a@example.org", ["james@server1.example.com"], b"Subject: x\r\n\r\nhi")
    with gateway.raw(OUTSIDE) as raw:
        assert raw.reply().code == 220
        assert raw.command("EHLO client.test").code == 250
        assert raw.command("MAIL FROM:<a@example.org>").code == 250
        assert raw.command("RCPT TO:<nobody@closed.example.net>").code == 550
        assert raw.command("QUIT").code == 221

    expected = {
        ("mxgate_smtpd_messages_total", ()): sessions,
        ("mxgate_smtpd_commands_total", (("command", "rcpt"),)): sessions + 1,
        ("mxgate_smtpd_rejected_commands_total", (("command", "rcpt"),)): 1,
    }
    # Each worker sends its counts once a second: wait for the last of them.
    wait_until(lambda: {k: samples(base).get(k) for k in expected} == expected, timeout=10)
    now = samples(base)
    # (and the harness's own connection that waited for the greeting)
    assert now[("mxgate_smtpd_connections_total", ())] >= sessions + 1
    assert now[("mxgate_smtpd_workers_ready", ())] == 2
    assert now[("mxgate_routing_snapshot_loaded", ())] == 1
    # The next hop is a black hole here: the messages wait in deferred/.
    deferred = ("mxgate_delivery_recipients_total", (("status", "deferred"),))
    wait_until(lambda: samples(base).get(deferred, 0) >= sessions, timeout=30)
    assert samples(base)[("mxgate_delivery_transactions_total", (("connection", "new"),))] >= 1
    # The same attempts by next hop: the relay of these tests' routes.
    now = samples(base)
    by_hop = {
        (dict(labels)["nexthop"], dict(labels)["status"]): value
        for (name, labels), value in now.items()
        if name == "mxgate_delivery_nexthop_recipients_total"
    }
    ((hop, status),) = by_hop
    assert re.fullmatch(r"smtp:\[127\.0\.0\.1\]:\d+", hop) and status == "deferred", by_hop
    assert by_hop[(hop, status)] == now[deferred]


def test_a_metrics_port_in_use_stops_serve_with_a_clear_line(
    tmp_path: Path, e2e_database: str
) -> None:
    with socket.create_server((INSIDE, 0)) as taken:
        port = taken.getsockname()[1]
        gateway = Gateway(tmp_path / "gw", e2e_database, metrics_listen=f"{INSIDE}:{port}")
        with pytest.raises(AssertionError, match="mxgate serve exited with 1"):
            gateway.start()
    log = gateway.log()
    assert re.search(rf"fatal: cannot listen on {INSIDE}:{port} \(metrics_listen\): ", log), log
    assert "Traceback" not in log


def test_counts_survive_a_reload(start_gateway: GatewayFactory) -> None:
    """Counters only grow: what the replaced workers counted stays in the sums."""
    port = free_port()
    gateway = start_gateway(workers=1, metrics_listen=f"{INSIDE}:{port}")
    base = f"http://{INSIDE}:{port}"
    messages = ("mxgate_smtpd_messages_total", ())

    def send(count: int) -> None:
        for _ in range(count):
            with gateway.smtp(OUTSIDE) as client:
                client.sendmail("a@example.org", ["james@server1.example.com"], b"Subject: x\r\n")

    send(3)
    wait_until(lambda: samples(base).get(messages, 0) == 3, timeout=10)
    old = gateway.worker_pids()
    mark = gateway.log_size()
    gateway.reload()
    gateway.wait_for_log(r"reload: new worker\(s\)", mark)
    wait_until(lambda: not (old & gateway.worker_pids()), timeout=30)
    send(2)
    wait_until(lambda: samples(base).get(messages, 0) == 5, timeout=10)


def test_tls_handshakes_and_connections_over_the_cap_are_counted(
    start_gateway: GatewayFactory, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    port = free_port()
    gateway = start_gateway(
        workers=1,
        metrics_listen=f"{INSIDE}:{port}",
        smtpd_tls_cert_file=str(cert),
        smtpd_tls_key_file=str(key),
        smtpd_client_connection_count_limit=2,
    )
    base = f"http://{INSIDE}:{port}"
    with gateway.smtp(OUTSIDE) as smtp:
        smtp.starttls(context=client_tls_context())
        assert smtp.ehlo()[0] == 250
    with gateway.raw(OUTSIDE) as raw:  # STARTTLS, then plaintext: no handshake
        assert raw.reply().code == 220
        assert raw.command("EHLO client.test").code == 250
        assert raw.command("STARTTLS").code == 220
        raw.send(b"this is not a TLS client hello\r\n" * 8)
        with contextlib.suppress(OSError):  # perhaps a TLS alert, then the close
            while raw.sock.recv(65536):
                pass
    held = [gateway.raw(OUTSIDE) for _ in range(3)]
    try:
        assert [client.reply().code for client in held] == [220, 220, 421]
    finally:
        for client in held:
            client.close()
    expected = {
        ("mxgate_smtpd_tls_handshakes_total", (("result", "ok"),)): 1,
        ("mxgate_smtpd_tls_handshakes_total", (("result", "failed"),)): 1,
        ("mxgate_smtpd_refused_connections_total", (("reason", "client_limit"),)): 1,
    }
    wait_until(lambda: {k: samples(base).get(k) for k in expected} == expected, timeout=10)


def test_busy_polls_reach_the_metrics(start_gateway: GatewayFactory, smtp_source: str) -> None:
    """smtp-source on loopback answers within microseconds: the worker polls
    for its commands (smtpd_busy_poll, on by default) and says so."""
    port = free_port()
    gateway = start_gateway(workers=1, metrics_listen=f"{INSIDE}:{port}")
    base = f"http://{INSIDE}:{port}"
    load = [smtp_source, "-s", "1", "-m", "100", "-l", "1000", "-f", "a@example.org"]
    load += ["-t", "james@server1.example.com", f"{INSIDE}:{gateway.port}"]
    subprocess.run(
        load,
        check=True,
        timeout=60,
    )
    caught = ("mxgate_smtpd_busy_polls_total", (("result", "caught"),))
    seconds = ("mxgate_smtpd_busy_poll_seconds_total", ())
    wait_until(lambda: samples(base).get(caught, 0) > 50, timeout=10)
    assert 0 < samples(base)[seconds] < 1.0
