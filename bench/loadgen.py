"""SMTP load client for bench/compare.py: many sessions, one message per connection.

smtp-source(1) cannot choose its source address, draw recipients at random
or time single replies, so the gateway comparison uses this client instead
(smtp-source still measures the loopback limit). Each of ``--concurrency``
sessions loops until ``--duration`` seconds have passed (or ``--messages``
were started): connect from one of the ``--sources`` addresses (round robin
by session, so that no address carries more than its share of the
connections), EHLO, MAIL FROM, then one RCPT TO at a time (never pipelined,
so that every RCPT reply is timed on its own), and, in ``deliver`` mode,
DATA with a ``--size`` byte message (headers included), then QUIT.

Recipients, with mailbox ``n`` named ``user{n}@d{n % domains}.bench.example``:

  deliver   ``--rcpts`` distinct mailboxes drawn uniformly from the
            ``--mailboxes``; all recipients of one message lie on the same
            next hop (domain parity, see compare.py), so that each accepted
            message arrives at the sinks as exactly one message
  unknown   ``--rcpts`` addresses that exist nowhere
            (``nobody{random}@d{k}``, domains without catch-alls): the
            dictionary attack; no DATA

With ``--rate R`` the sessions start messages on an open-loop schedule,
message k at k/R seconds (the latency workload: a load both gateways carry,
so that latencies are service times rather than queueing at saturation).

It prints one JSON object: counts of replies by class, messages accepted
after DATA, elapsed wall time, its own CPU time, and latency percentiles
(microseconds, from writing to reading the whole reply) of RCPT replies, for
accepted and rejected recipients, and of the reply to the end of DATA.

Usage: python bench/loadgen.py --target 127.0.0.1:2525 [--sources 127.0.0.2-127.0.0.6]
       [--concurrency 10] [--duration 10 | --messages N] [--rcpts 1] [--size 4096]
       [--mode deliver|unknown] [--mailboxes 1000000] [--domains 1000] [--seed 1]
       [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import socket
import sys
import time
from array import array
from typing import Any

try:
    import uvloop
except ImportError:  # pragma: no cover - mxgate depends on it
    uvloop = None  # type: ignore[assignment]

DOMAIN_SUFFIX = ".bench.example"
SENDER_DOMAIN = "outside.example"  # not ours: the client is "the internet"


def mailbox(n: int, domains: int) -> str:
    return f"user{n}@d{n % domains}{DOMAIN_SUFFIX}"


def catch_all_domain(k: int) -> bool:
    """Domains whose unknown addresses are accepted (forward or relay catch-all)."""
    return k % 100 in (98, 99)


class Reply(Exception):
    """An unexpected reply that ends the session."""

    def __init__(self, code: int, text: bytes) -> None:
        super().__init__(code)
        self.code = code
        self.text = text


class ClientProtocol(asyncio.Protocol):
    """Splits the byte stream into SMTP replies and hands them to ``read``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.lines: list[bytes] = []
        self.replies: list[tuple[int, bytes]] = []
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            line = self.buffer[:end]
            self.buffer = self.buffer[end + 2 :]
            self.lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                code = int(line[:3]) if line[:3].isdigit() else 0
                self.replies.append((code, b"\n".join(self.lines)))
                self.lines = []
        if self.replies and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self) -> tuple[int, bytes]:
        while not self.replies:
            if self.closed:
                raise ConnectionResetError("connection closed by the server")
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
            self.waiter = None
        return self.replies.pop(0)

    async def wait_closed(self, timeout: float) -> None:
        """Let the server close first (after 221), so that the TIME_WAIT state
        stays on its side and our source ports are free again at once."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.closed:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self.waiter, remaining)
            except TimeoutError:
                return
            finally:
                self.waiter = None

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def command(self, data: bytes) -> tuple[int, bytes]:
        self.write(data)
        return await self.read()


class Stats:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.rcpt_ok_ns = array("q")
        self.data_ok_ns = array("q")  # end of data to the 250 (the gateway's commit)
        self.rcpt_rejected_ns = array("q")
        self.rcpt_tempfail_ns = array("q")
        self.samples: dict[str, str] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def sample(self, key: str, text: bytes) -> None:
        if key not in self.samples:
            self.samples[key] = text.decode("ascii", "replace")[:200]


def percentiles(values: array[int]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.5) - 1))] / 1000.0

    return {
        "n": n,
        "p50_us": at(0.50),
        "p90_us": at(0.90),
        "p99_us": at(0.99),
        "p999_us": at(0.999),
        "max_us": ordered[-1] / 1000.0,
        "mean_us": sum(ordered) / n / 1000.0,
    }


def make_body(size: int) -> tuple[bytes, bytes]:
    """Head and tail of a ``size``-byte message around a per-message header line."""
    head = (
        f"From: <load@{SENDER_DOMAIN}>\r\n"
        "To: <undisclosed-recipients:;>\r\n"
        "Subject: mxgate benchmark\r\n"
        "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
    ).encode()
    id_line_len = len(b"Message-ID: <0000000000.000000@load.outside.example>\r\n")
    fill = max(0, size - len(head) - id_line_len - 2)  # 2: blank line after headers
    lines = []
    while fill > 0:
        width = min(76, max(0, fill - 2))
        lines.append(b"x" * width + b"\r\n")
        fill -= width + 2
    tail = b"\r\n" + b"".join(lines) + b".\r\n"
    return head, tail


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        host, port = args.target.rsplit(":", 1)
        self.host = host
        self.port = int(port)
        self.sources = parse_sources(args.sources)
        self.stats = Stats()
        self.deadline = 0.0
        self.t0 = 0.0
        self.started_messages = 0
        self.head, self.tail = make_body(args.size)
        self.mail_from = f"MAIL FROM:<load@{SENDER_DOMAIN}>\r\n".encode()
        self.ehlo = b"EHLO load.outside.example\r\n"
        self.counter = 0
        self.clean_domains = [k for k in range(args.domains) if not catch_all_domain(k)]

    def more(self) -> bool:
        if self.args.messages and self.started_messages >= self.args.messages:
            return False
        if self.args.duration and time.monotonic() >= self.deadline:
            return False
        self.started_messages += 1
        return True

    def pause(self) -> float:
        """With --rate: seconds until the slot of the message just started
        (an open-loop schedule: message k starts at k / rate)."""
        if not self.args.rate:
            return 0.0
        rate: float = self.args.rate  # argparse.Namespace: untyped
        slot = self.t0 + (self.started_messages - 1) / rate
        return max(0.0, slot - time.monotonic())

    def recipients(self, rng: random.Random) -> list[str]:
        a = self.args
        if a.mode == "unknown":
            out = []
            for _ in range(a.rcpts):
                k = rng.choice(self.clean_domains)
                out.append(f"nobody{rng.randrange(10**9)}@d{k}{DOMAIN_SUFFIX}")
            return out
        # One next hop per message: every mailbox of a message has the same
        # domain parity (domain k goes to sink k % 2; domains is even).
        parity = rng.randrange(2) if a.domains % 2 == 0 else None
        chosen: set[int] = set()
        while len(chosen) < a.rcpts:
            n = rng.randrange(a.mailboxes)
            if parity is not None and n % 2 != parity:
                n = n + 1 if n + 1 < a.mailboxes else n - 1
            chosen.add(n)
        return [mailbox(n, a.domains) for n in chosen]

    async def session(self, index: int) -> None:
        a = self.args
        stats = self.stats
        loop = asyncio.get_running_loop()
        rng = random.Random(a.seed * 1_000_003 + index)
        source = self.sources[index % len(self.sources)]
        while self.more():
            wait = self.pause()
            if wait:
                await asyncio.sleep(wait)
            proto = ClientProtocol()
            try:
                await connect(loop, proto, self.host, self.port, source)
            except OSError as exc:
                stats.add("connect_error")
                stats.sample("connect_error", str(exc).encode())
                await asyncio.sleep(0.01)
                continue
            stats.add("connections")
            try:
                await self.transaction(proto, rng)
            except Reply as exc:
                stats.add(f"unexpected_{exc.code // 100}xx")
                stats.sample(f"unexpected_{exc.code}", exc.text)
            except (ConnectionError, OSError) as exc:
                stats.add("connection_lost")
                stats.sample("connection_lost", str(exc).encode())
            finally:
                if proto.transport is not None:
                    proto.transport.close()

    async def transaction(self, proto: ClientProtocol, rng: random.Random) -> None:
        stats = self.stats
        code, text = await proto.read()
        if code != 220:
            stats.add(f"greeting_{code}")
            stats.sample(f"greeting_{code}", text)
            return
        code, text = await proto.command(self.ehlo)
        if code != 250:
            raise Reply(code, text)
        code, text = await proto.command(self.mail_from)
        if code != 250:
            raise Reply(code, text)
        stats.add("messages_attempted")
        accepted = 0
        perf = time.perf_counter_ns
        for rcpt in self.recipients(rng):
            line = f"RCPT TO:<{rcpt}>\r\n".encode()
            t0 = perf()
            code, text = await proto.command(line)
            dt = perf() - t0
            stats.add("rcpt_attempted")
            if code // 100 == 2:
                accepted += 1
                stats.add("rcpt_2xx")
                stats.rcpt_ok_ns.append(dt)
            elif code // 100 == 5:
                stats.add("rcpt_5xx")
                stats.rcpt_rejected_ns.append(dt)
                stats.sample(f"rcpt_{code}", text)
            elif code // 100 == 4:
                stats.add("rcpt_4xx")
                stats.rcpt_tempfail_ns.append(dt)
                stats.sample(f"rcpt_{code}", text)
            else:
                raise Reply(code, text)
        if self.args.mode == "deliver" and accepted:
            code, text = await proto.command(b"DATA\r\n")
            if code != 354:
                raise Reply(code, text)
            self.counter += 1
            msgid = f"Message-ID: <{self.counter:010d}.{os.getpid() % 1000000:06d}"
            t0 = perf()
            proto.write(self.head + msgid.encode() + b"@load.outside.example>\r\n" + self.tail)
            code, text = await proto.read()
            if code // 100 == 2:
                stats.data_ok_ns.append(perf() - t0)
                stats.add("messages_accepted")
                stats.add("rcpt_delivered", accepted)
            else:
                stats.add(f"data_{code // 100}xx")
                stats.sample(f"data_{code}", text)
        code, text = await proto.command(b"QUIT\r\n")
        stats.add("quit_ok" if code == 221 else "quit_other")
        await proto.wait_closed(1.0)

    async def run(self) -> dict[str, Any]:
        a = self.args
        t_wall = time.time()
        t0 = self.t0 = time.monotonic()
        self.deadline = t0 + a.duration if a.duration else float("inf")
        cpu0 = time.process_time()
        await asyncio.gather(*(self.session(i) for i in range(a.concurrency)))
        elapsed = time.monotonic() - t0
        s = self.stats
        return {
            "target": a.target,
            "mode": a.mode,
            "concurrency": a.concurrency,
            "rcpts_per_message": a.rcpts,
            "size": a.size,
            "sources": self.sources,
            "started_at": t_wall,
            "elapsed_s": elapsed,
            "client_cpu_s": time.process_time() - cpu0,
            "counts": s.counts,
            "samples": s.samples,
            "rcpt_latency_ok": percentiles(s.rcpt_ok_ns),
            "data_latency_ok": percentiles(s.data_ok_ns),
            "rcpt_latency_rejected": percentiles(s.rcpt_rejected_ns),
            "rcpt_latency_tempfail": percentiles(s.rcpt_tempfail_ns),
        }


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


async def connect(
    loop: asyncio.AbstractEventLoop, proto: ClientProtocol, host: str, port: int, source: str
) -> None:
    """Connect from ``source``. IP_BIND_ADDRESS_NO_PORT defers the choice of the
    source port to connect(), which then only needs the 4-tuple to be unique
    (and may reuse loopback TIME_WAIT ports): tens of thousands of connections
    a minute from five addresses never run out of ports."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setblocking(False)
        sock.bind((source, 0))
        await loop.sock_connect(sock, (host, port))
        await loop.create_connection(lambda: proto, sock=sock)
    except BaseException:
        sock.close()
        raise


def parse_sources(text: str) -> list[str]:
    out: list[str] = []
    for part in text.split(","):
        if "-" in part:
            first, last = (ipaddress.IPv4Address(x.strip()) for x in part.split("-"))
            out.extend(str(ipaddress.IPv4Address(i)) for i in range(int(first), int(last) + 1))
        elif part.strip():
            out.append(str(ipaddress.IPv4Address(part.strip())))
    for address in out:
        if not ipaddress.IPv4Address(address).is_loopback:
            raise SystemExit(f"loadgen: {address} is not a loopback address")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--target", required=True, help="host:port (loopback)")
    p.add_argument("--sources", default="127.0.0.2-127.0.0.6")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--duration", type=float, default=0.0, help="seconds (0: use --messages)")
    p.add_argument("--messages", type=int, default=0, help="messages to start (0: no limit)")
    p.add_argument("--rcpts", type=int, default=1)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--mode", choices=("deliver", "unknown"), default="deliver")
    p.add_argument("--mailboxes", type=int, default=1_000_000)
    p.add_argument("--domains", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="messages per second in all (0: no pacing)",
    )
    args = p.parse_args()
    if not args.duration and not args.messages:
        p.error("give --duration or --messages")
    if not ipaddress.ip_address(args.target.rsplit(":", 1)[0]).is_loopback:
        p.error("the target must be a loopback address")
    runner = uvloop.run if uvloop is not None else asyncio.run
    result = runner(Load(args).run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
