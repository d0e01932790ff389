"""Outbound delivery: the qmgr + smtp(8)/lmtp(8) of mxgate.

Public surface: ``Courier`` / ``CourierConfig`` (deliver one message over one
route), ``DeliveryResult`` / ``Status`` / ``Relay`` / ``Timing`` (what an
attempt says per recipient), the next-hop resolvers (``DnsResolver``,
``StaticResolver``) and the ``ConnectionPool`` settings. Depends on
``mxgate.smtp``, ``mxgate.core`` and ``mxgate.spool`` only.
"""

from __future__ import annotations

from .courier import Courier, CourierConfig, OpenBody
from .nexthop import (
    Candidate,
    DnsError,
    DnsResolver,
    NameResolver,
    NoNextHop,
    StaticResolver,
    resolve_nexthop,
)
from .pool import ConnectionPool, PoolConfig
from .result import DeliveryResult, Relay, Status, Timing
from .session import Timeouts, TlsLevel, client_tls_context

__all__ = [
    "Candidate",
    "ConnectionPool",
    "Courier",
    "CourierConfig",
    "DeliveryResult",
    "DnsError",
    "DnsResolver",
    "NameResolver",
    "NoNextHop",
    "OpenBody",
    "PoolConfig",
    "Relay",
    "StaticResolver",
    "Status",
    "Timeouts",
    "Timing",
    "TlsLevel",
    "client_tls_context",
    "resolve_nexthop",
]
