"""One client at a time: how much the rate depends on where the scheduler runs the two ends.

With one SMTP client and no pipelining, every reply waits for the one before
it, so the rate is the sum of round trips. On a virtual machine whose idle
virtual CPUs halt (no guest halt-polling), a round trip between processes on
two different vCPUs costs two cross-CPU wake-ups; between processes on the same
vCPU it costs two context switches. This measures both, for the floor
(``floor.py``: fixed replies and one fdatasync per message, started here) and,
when it runs, for mxgate's SMTP worker(s): each server pinned to one CPU with
the client pinned to the same CPU ("together") or to another ("apart"), and
neither pinned ("free", what the scheduler chose). It also times each reply of
a session from a small Python client, so the cost of one round trip shows.

    python bench/placement.py [--mxgate 127.0.0.1:2525] [--seconds 5] [--rounds 2]

Pinning is a measuring device here, not advice: mxgate does not pin itself.
Restores every affinity it changed. Loopback only; stops only what it started.
Needs ``smtp-source`` (Debian's postfix package) and two CPUs. Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
BODY = b"Subject: placement\r\n\r\n" + b"x" * 76 * 50
STEPS = ("connect + banner", "EHLO", "MAIL", "RCPT", "DATA", "message + dot", "QUIT")


def mxgate_workers(port: int) -> list[int]:
    """The PIDs of the mxgate SMTP workers (``python -m mxgate worker``) that
    listen on ``port`` (the master holds the same sockets and is left out)."""
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        listening = conn.status == psutil.CONN_LISTEN and isinstance(conn.laddr, tuple)
        if listening and conn.laddr and conn.laddr[1] == port and conn.pid:
            with contextlib.suppress(psutil.Error):
                cmdline = psutil.Process(conn.pid).cmdline()
                if "mxgate" in cmdline and "worker" in cmdline:
                    found.add(conn.pid)
    return sorted(found)


@contextmanager
def pinned(pids: list[int], cpu: int | None) -> Iterator[None]:
    """Pin ``pids`` (and their threads) to ``cpu`` for the block; None: leave them."""
    saved = {pid: os.sched_getaffinity(pid) for pid in pids}
    try:
        if cpu is not None:
            for pid in pids:
                for thread in psutil.Process(pid).threads():
                    os.sched_setaffinity(thread.id, {cpu})
        yield
    finally:
        for pid, mask in saved.items():
            for thread in psutil.Process(pid).threads():
                os.sched_setaffinity(thread.id, mask)


def client_affinity(cpu: int | None) -> Callable[[], None] | None:
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def source_rate(port: int, seconds: float, cpu: int | None, recipient: str) -> float:
    """Messages per second that smtp-source (one session at a time) got 250 for."""
    command = [
        "smtp-source", "-c", "-s", "1", "-m", "10000000", "-l", "3900", "-N",
        "-f", "load@outside.example", "-t", recipient, f"{LOOPBACK}:{port}",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as counter:
        proc = subprocess.Popen(
            command,
            stdout=counter,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            preexec_fn=client_affinity(cpu),
        )
        started = time.monotonic()
        try:
            proc.wait(timeout=seconds)
            raise RuntimeError(f"smtp-source stopped early (exit {proc.returncode})")
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=30)
        elapsed = time.monotonic() - started
        counter.seek(0)
        numbers = re.findall(rb"(\d+)\r", counter.read())
    return (int(numbers[-1]) if numbers else 0) / elapsed


def _reply(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and lines[-2][3:4] == b" ":
            return data


def step_times(port: int, sessions: int, cpu: int | None, recipient: str) -> list[float]:
    """Median microseconds of each step of a session, this process as the client."""
    saved = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    samples: list[list[float]] = [[] for _ in STEPS]
    try:
        for n in range(sessions):
            rcpt = recipient.replace("user@", f"{n % 1000 + 1}user@", 1)
            commands = [
                b"EHLO client.example\r\n",
                b"MAIL FROM:<load@outside.example>\r\n",
                f"RCPT TO:<{rcpt}>\r\n".encode(),
                b"DATA\r\n",
                BODY + b"\r\n.\r\n",
                b"QUIT\r\n",
            ]
            t0 = time.perf_counter()
            sock = socket.create_connection((LOOPBACK, port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _reply(sock)
            samples[0].append(time.perf_counter() - t0)
            for i, command in enumerate(commands, start=1):
                t0 = time.perf_counter()
                sock.sendall(command)
                answer = _reply(sock)
                samples[i].append(time.perf_counter() - t0)
                if answer[:1] not in (b"2", b"3"):
                    raise RuntimeError(f"{STEPS[i]}: {answer!r}")
            sock.close()
    finally:
        os.sched_setaffinity(0, saved)
    return [statistics.median(s) * 1e6 for s in samples]


def placements() -> dict[str, tuple[int | None, int | None]]:
    """Each placement's (server CPU, client CPU); None: not pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise RuntimeError("needs two CPUs")
    a, b = cpus[0], cpus[1]
    return {"together": (a, a), "apart": (a, b), "free": (None, None)}


def placed_rate(
    port: int, pids: list[int], placement: str, seconds: float, recipient: str
) -> float:
    """smtp-source's rate with the server processes ``pids`` and the client
    placed as ``placement`` says (see ``placements``)."""
    server_cpu, client_cpu = placements()[placement]
    with pinned(pids, server_cpu):
        return source_rate(port, seconds, client_cpu, recipient)


def start_floor(port: int, directory: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "floor.py"), "--port", str(port), "--dir", str(directory)],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120  # it zeroes its file first
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
                sock.recv(100)
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("floor.py did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mxgate", help="HOST:PORT of a running mxgate (its workers are found)")
    p.add_argument("--recipient", default="user@d0.bench.example", help="smtp-source -t")
    p.add_argument("--floor-port", type=int, default=2998)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="floor.py's file")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--sessions", type=int, default=1000, help="for the step times")
    args = p.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("placement.py: needs two CPUs")
    floor = start_floor(args.floor_port, args.dir)
    servers: list[tuple[str, int, list[int]]] = [("floor", args.floor_port, [floor.pid])]
    if args.mxgate:
        port = int(args.mxgate.rpartition(":")[2])
        workers = mxgate_workers(port)
        if not workers:
            sys.exit(f"placement.py: no mxgate worker listens on port {port}")
        servers.append(("mxgate", port, workers))
    try:
        for name, port, pids in servers:
            for placement, (server_cpu, client_cpu) in placements().items():
                rates = [
                    placed_rate(port, pids, placement, args.seconds, args.recipient)
                    for _ in range(args.rounds)
                ]
                with pinned(pids, server_cpu):
                    steps = step_times(port, args.sessions, client_cpu, args.recipient)
                shown = ", ".join(f"{r:,.0f}" for r in rates)
                print(f"{name:6s} {placement:8s} messages/s {shown}")
                times = ", ".join(f"{s} {t:.0f}" for s, t in zip(STEPS, steps, strict=True))
                print(f"       {times} us")
                sys.stdout.flush()
    finally:
        floor.send_signal(signal.SIGTERM)
        floor.wait(timeout=30)


if __name__ == "__main__":
    main()
