"""The listening sockets, opened by the master and handed to the workers.

Why the master holds them: each SMTP worker accepts from a socket of its own
(SO_REUSEPORT: the kernel spreads clients across the workers), and a listening
socket that is closed while connections wait in its accept queue resets them.
When each worker opened its own, every reload (old workers exit) and every
crash reset the connections that had just arrived at that worker. Held by
the master, worker slot i always gets the same socket per endpoint: a worker
replaced by a reload, or restarted after a crash, finds the connections that
waited meanwhile, and none is reset.

Never accepts a connection itself.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence

BACKLOG = 1024


class ListenSockets:
    """For every endpoint, one listening socket per worker slot."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], slots: int) -> None:
        """Bind and listen on every endpoint. Raises OSError (nothing left open)."""
        self.endpoints = tuple(endpoints)
        self.slots = slots
        self._sockets: list[list[socket.socket]] = []
        try:
            for endpoint in self.endpoints:
                self._sockets.append(_open(endpoint, slots))
        except OSError:
            self.close()
            raise

    def fds(self, slot: int) -> list[int]:
        """The descriptors of worker slot ``slot``, one per endpoint."""
        return [group[slot].fileno() for group in self._sockets]

    def close(self) -> None:
        for group in self._sockets:
            for sock in group:
                sock.close()
        self._sockets = []


def _probe(host: str, port: int, family: socket.AddressFamily) -> None:
    """Bind, without SO_REUSEPORT, where our sockets will listen: this fails
    when anything listens there already, another mxgate serve included, which
    SO_REUSEPORT would otherwise let us share the port with (same user), so
    that the kernel splits the clients between two gateways, two spools."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: connections of a previous run in TIME_WAIT are no
        # obstacle, as for our own sockets; a listening socket still is.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((host, port))


def _open(endpoint: tuple[str, int], slots: int) -> list[socket.socket]:
    host, port = endpoint
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    group: list[socket.socket] = []
    try:
        if port:
            _probe(host, port, family)
        for _ in range(slots):
            sock = socket.socket(family, socket.SOCK_STREAM)
            group.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Port 0 (tests): the first socket picks one, the others join it.
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
    except OSError as exc:
        for sock in group:
            with contextlib.suppress(OSError):
                sock.close()
        raise OSError(exc.errno, f"{host}:{endpoint[1]}: {exc.strerror or exc}") from exc
    return group
