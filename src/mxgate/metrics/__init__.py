"""Prometheus metrics and health endpoints of ``mxgate serve`` (SPEC section 11).

``counts``: what the SMTP workers count and how their totals reach the master
(a line on the worker's channel, about once a second); ``endpoint``: the
master's HTTP port (``metrics_listen``) with ``/metrics``, ``/healthz`` and
``/readyz``. The workers import ``counts`` only: prometheus_client is the
master's alone.
"""
