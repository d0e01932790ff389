"""An asyncio transport that keeps what is written, and the settings of a
session whose clients come over loopback from outside mynetworks: for driving
a ``Session`` without the gateway around it (the profile-guided build's
training run, scripts/pgo_train.py; bench/session_cost.py; tests). Not used by
the gateway itself."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from typing import Any

from mxgate.core.routing import RoutingPolicy
from mxgate.server.transaction import SessionSettings


def loopback_settings(hostname: str, postmaster: str) -> SessionSettings:
    """Postfix's defaults for the limits; mynetworks holds only 127.0.0.254,
    so a client on 127.0.0.1 is a client from the internet (relaying refused)
    and the gateway's own address is 127.0.0.1."""
    policy = RoutingPolicy(
        myhostname=hostname,
        mynetworks=(ip_network("127.0.0.254/32"),),
        local_addresses=(ip_address("127.0.0.1"),),
        postmaster=postmaster,
    )
    return SessionSettings(
        hostname=hostname,
        banner="ESMTP mxgate",
        message_size_limit=30720000,
        smtpd_timeout=300.0,
        hard_error_limit=20,
        hopcount_limit=50,
        policy=policy,
    )


class RecordingTransport:
    """Enough of an asyncio transport for a session: writes are kept."""

    def __init__(self, peer: tuple[str, int] = ("203.0.113.7", 40000)) -> None:
        self.peer = peer
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
