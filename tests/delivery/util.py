"""Small builders shared by the courier tests."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from mxgate.core.envelope import Envelope, Notify, Recipient
from mxgate.core.transport import Route, RouteKind, parse_transport
from mxgate.delivery import CourierConfig, DeliveryResult, PoolConfig, Timeouts
from mxgate.delivery.courier import OpenBody

T = TypeVar("T")
Results = dict[str, DeliveryResult]

BODY = b"Subject: test\r\nFrom: s@src.test\r\n\r\nHello.\r\n.leading dot\r\n"

FAST = Timeouts(connect=2.0, greeting=2.0, command=2.0, data=2.0)


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run one test's coroutine; a hang fails the test instead of the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def route(text: str) -> Route:
    parsed = parse_transport(text)
    assert isinstance(parsed, Route), parsed
    return parsed


def recipients(*addresses: str, notify: frozenset[Notify] = frozenset()) -> list[Recipient]:
    return [Recipient(address=a, original=a, notify=notify) for a in addresses]


def envelope(rcpts: Sequence[Recipient], **fields: Any) -> Envelope:
    values: dict[str, Any] = {
        "queue_id": "4ABCDEF",
        "sender": "s@src.test",
        "arrival": 0.0,
        "client_address": "192.0.2.9",
        "client_helo": "client.test",
        "client_hostname": "unknown",
        "size": len(BODY),
        "recipients": tuple(rcpts),
    }
    values.update(fields)
    return Envelope(**values)


def body(data: bytes = BODY) -> OpenBody:
    return lambda: io.BytesIO(data)


def config(**fields: Any) -> CourierConfig:
    values: dict[str, Any] = {
        "helo_name": "gw.test",
        "timeouts": FAST,
        "smtp_tls_security_level": "none",
        "pool": PoolConfig(idle_timeout=5.0),
    }
    values.update(fields)
    return CourierConfig(**values)


def mx_route(port: int) -> Route:
    """``smtp:`` (MX of each recipient's domain) on a test port, which the
    transport syntax cannot say."""
    return Route(RouteKind.SMTP, "smtp", port=port, mx_lookup=True)
