"""The master's HTTP port (``metrics_listen``): Prometheus metrics and health.

``/metrics``: the text format of prometheus_client, from a collector that
reads the gateway's numbers when scraped; ``/healthz``: 200 while the
master's event loop turns (its heartbeat is at most ``STALL`` seconds old),
else 503; ``/readyz``: 200 when the gateway can take mail (routing data
loaded, at least one SMTP worker listening, not stopping), else 503 with the
reason. Anything else is 404.

Served by wsgiref in a thread of its own, so that a scrape never waits for the
event loop and a stalled loop can still be reported. That thread only reads:
the loop publishes a fresh ``GatewayView`` (an immutable value) every second,
the workers' sums come from ``SmtpTotals`` (replaced whole on each update),
and the queue sizes are counted from the spool's directories at each scrape.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from mxgate.metrics.counts import SmtpTotals

STALL = 10.0  # seconds without a heartbeat before /healthz says 503
QUEUES = ("incoming", "active", "deferred", "hold", "corrupt")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True, slots=True)
class GatewayView:
    """What the master's loop knows, published once a second."""

    heartbeat: float  # time.monotonic() of the loop's last beat
    workers_ready: int = 0
    snapshot_version: int | None = None  # None: no routing data at all
    in_flight: int = 0  # messages the queue manager is delivering
    waiting_to_record: int = 0  # delivery passes over, outcome waiting for disk room
    recipients: Mapping[str, int] = field(default_factory=dict)  # outcomes by status
    # The same by (next hop, status): Route.metric_label, so a bounded set.
    recipients_by_nexthop: Mapping[tuple[str, str], int] = field(default_factory=dict)
    transactions: Mapping[str, int] = field(default_factory=dict)  # by connection: new, reused
    stopping: bool = False


class _GatewayCollector(Collector):
    def __init__(
        self, spool_dir: Path, totals: SmtpTotals, view: Callable[[], GatewayView]
    ) -> None:
        self.spool_dir = spool_dir
        self.totals = totals
        self.view = view

    def collect(self) -> Iterator[Metric]:
        smtp = self.totals.total()
        view = self.view()
        yield CounterMetricFamily(
            "mxgate_smtpd_connections", "SMTP connections accepted", value=smtp.connections
        )
        yield CounterMetricFamily(
            "mxgate_smtpd_messages", "messages accepted (250 after DATA)", value=smtp.messages
        )
        yield CounterMetricFamily(
            "mxgate_smtpd_message_octets", "size of the messages accepted", value=smtp.octets
        )
        yield _by_label("mxgate_smtpd_commands", "SMTP commands received", "command", smtp.commands)
        yield _by_label(
            "mxgate_smtpd_rejected_commands",
            "SMTP commands refused (4xx/5xx), recipients included",
            "command",
            smtp.rejected,
        )
        yield _by_label(
            "mxgate_smtpd_tls_handshakes",
            "STARTTLS handshakes, by result (ok, failed)",
            "result",
            smtp.tls,
        )
        yield _by_label(
            "mxgate_smtpd_refused_connections",
            "connections turned away before the greeting, by reason"
            " (client_limit: smtpd_client_connection_count_limit;"
            " proxy_header: no valid PROXY protocol header)",
            "reason",
            smtp.refused,
        )
        yield _by_label(
            "mxgate_smtpd_busy_polls",
            "waits for a client's next command that the workers polled for, by"
            " result (caught: the input came within the window; expired: the"
            " loop slept after the window, smtpd_busy_poll)",
            "result",
            smtp.busy_polls,
        )
        yield CounterMetricFamily(
            "mxgate_smtpd_busy_poll_seconds",
            "time the workers' loops spent polling for input instead of sleeping",
            value=smtp.busy_poll_seconds,
        )
        yield _by_label(
            "mxgate_delivery_recipients",
            "delivery attempts per recipient, by outcome",
            "status",
            view.recipients,
        )
        by_hop = CounterMetricFamily(
            "mxgate_delivery_nexthop_recipients",
            "delivery attempts per recipient, by next hop (transport:nexthop;"
            " $domain: the recipient's domain, by MX; none: no route) and outcome",
            labels=["nexthop", "status"],
        )
        for (hop, status), n in sorted(view.recipients_by_nexthop.items()):
            by_hop.add_metric([hop, status], n)
        yield by_hop
        yield _by_label(
            "mxgate_delivery_transactions",
            "outbound transactions, on a new or a reused connection",
            "connection",
            view.transactions,
        )
        queued = GaugeMetricFamily(
            "mxgate_queue_messages", "messages in the spool's queues", labels=["queue"]
        )
        for queue in QUEUES:
            queued.add_metric([queue], _entries(self.spool_dir / queue))
        yield queued
        yield GaugeMetricFamily(
            "mxgate_qmgr_messages_in_flight",
            "messages being delivered now",
            value=view.in_flight,
        )
        yield GaugeMetricFamily(
            "mxgate_qmgr_messages_waiting_to_record",
            "messages whose delivery outcome waits for room on the disk",
            value=view.waiting_to_record,
        )
        yield GaugeMetricFamily(
            "mxgate_smtpd_workers_ready", "SMTP worker processes listening",
            value=view.workers_ready,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "mxgate_routing_snapshot_loaded",
            "1 when routing data is loaded (from the database or the local copy)",
            value=int(view.snapshot_version is not None),
        )
        if view.snapshot_version is not None:
            yield GaugeMetricFamily(
                "mxgate_routing_snapshot_version",
                "change-log position of the routing data in force",
                value=view.snapshot_version,
            )


def _by_label(name: str, doc: str, label: str, values: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key in sorted(values):
        family.add_metric([key], values[key])
    return family


def _entries(directory: Path) -> int:
    try:
        with os.scandir(directory) as entries:
            return sum(1 for entry in entries if not entry.name.startswith("."))
    except OSError:
        return 0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would drown the mail log


class MetricsEndpoint:
    """The HTTP endpoint; ``start`` binds (OSError when it cannot), ``stop`` ends it."""

    def __init__(
        self,
        host: str,
        port: int,
        spool_dir: Path,
        totals: SmtpTotals,
        view: Callable[[], GatewayView],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.view = view
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_GatewayCollector(spool_dir, totals, view))
        self._metrics = make_wsgi_app(self.registry)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> tuple[str, int]:
        """Bind and serve in a thread; the address bound (port 0: any free one)."""

        class Server(ThreadingWSGIServer):
            address_family = _family(self.host)

        self._server = make_server(self.host, self.port, self.app, Server, _QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the WSGI application --------------------------------------------------------
    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics(environ, start_response)
            return result
        if path == "/healthz":
            return _text(start_response, *self.health())
        if path == "/readyz":
            return _text(start_response, *self.readiness())
        return _text(start_response, False, "not found: try /metrics, /healthz or /readyz", 404)

    def health(self) -> tuple[bool, str]:
        age = self.clock() - self.view().heartbeat
        if age > STALL:
            return False, f"the master's event loop has not turned for {age:.0f} s"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        view = self.view()
        if view.stopping:
            return False, "stopping"
        if view.snapshot_version is None:
            return False, "no routing data (database unreachable since start, no local copy)"
        if view.workers_ready < 1:
            return False, "no SMTP worker listening yet"
        return True, "ready"


def _text(start_response: StartResponse, ok: bool, text: str, failure: int = 503) -> list[bytes]:
    status = "200 OK" if ok else ("404 Not Found" if failure == 404 else "503 Service Unavailable")
    body = (text + "\n").encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    )
    return [body]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
