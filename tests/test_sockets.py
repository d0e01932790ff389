"""The master's listening sockets: one per worker slot and endpoint, on one
port, and a connection waiting in a slot's queue outlives a worker's copy."""

from __future__ import annotations

import os
import socket

import pytest

from mxgate.sockets import ListenSockets


def test_one_socket_per_slot_on_the_same_port() -> None:
    sockets = ListenSockets([("127.0.0.1", 0)], 3)
    try:
        fds = [fd for slot in range(3) for fd in sockets.fds(slot)]
        ports = set()
        for fd in fds:
            with socket.socket(fileno=os.dup(fd)) as copy:
                ports.add(copy.getsockname()[1])
        assert len(ports) == 1 and 0 not in ports
        assert len(set(fds)) == 3
    finally:
        sockets.close()


def test_a_waiting_connection_outlives_a_worker_copy_of_the_socket() -> None:
    sockets = ListenSockets([("127.0.0.1", 0)], 1)
    try:
        (fd,) = sockets.fds(0)
        worker_copy = socket.socket(fileno=os.dup(fd))  # what a worker inherits
        port = worker_copy.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        worker_copy.close()  # the old worker leaves without accepting it
        successor = socket.socket(fileno=os.dup(fd))  # the next worker of the slot
        accepted, _ = successor.accept()
        client.sendall(b"EHLO x\r\n")
        assert accepted.recv(16) == b"EHLO x\r\n"
        for s in (accepted, successor, client):
            s.close()
    finally:
        sockets.close()


def test_a_port_in_use_fails_with_nothing_left_open() -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        port = squatter.getsockname()[1]
        with pytest.raises(OSError, match=rf"127.0.0.1:{port}: .*in use"):
            ListenSockets([("127.0.0.1", 0), ("127.0.0.1", port)], 2)


def test_a_port_another_gateway_listens_on_is_in_use() -> None:
    """Another mxgate serve (SO_REUSEPORT, same user) on the port: the
    kernel would let the second share it and split the clients between two
    gateways; the start fails instead, and a port freed by a stop is free."""
    first = ListenSockets([("127.0.0.1", 0)], 1)
    with socket.socket(fileno=os.dup(first.fds(0)[0])) as copy:
        port = copy.getsockname()[1]
    try:
        with pytest.raises(OSError, match=rf"127.0.0.1:{port}: .*in use"):
            ListenSockets([("127.0.0.1", port)], 1)
        with pytest.raises(OSError, match="in use"):
            ListenSockets([("0.0.0.0", port)], 1)  # the wildcard overlaps it too
        # A connection the server closed first leaves it in TIME_WAIT: no
        # obstacle to the next start (a restart right after a stop).
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            with socket.socket(fileno=os.dup(first.fds(0)[0])) as listener:
                listener.settimeout(5)
                served, _ = listener.accept()
            served.close()
            client.recv(1)
    finally:
        first.close()
    again = ListenSockets([("127.0.0.1", port)], 2)
    again.close()
