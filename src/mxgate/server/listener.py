"""The listening sockets of one worker process and the sessions they accept.

Owns accepting connections (SO_REUSEPORT, so several worker processes share a
port and the kernel spreads clients across them), the per-client connection
cap, the registry of live sessions, and the shutdown order: stop accepting,
resolve ``closing`` (sessions between transactions then say 421 and hang up,
the others finish their transaction first), wait for the sessions, then cut
the ones that outstay the grace period.

Never speaks SMTP beyond the one 421 line it sends to a client over its cap.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from mxgate.maillog import MailLog, client_label

SessionRunner = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Listener:
    """Accepts on every endpoint and runs one session task per connection."""

    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        run_session: SessionRunner,
        *,
        hostname: str,
        per_client_limit: int,
        log: MailLog,
    ) -> None:
        self.endpoints = endpoints
        self.run_session = run_session
        self.hostname = hostname
        self.per_client_limit = per_client_limit
        self.log = log
        self.servers: list[asyncio.Server] = []
        self.sessions: set[asyncio.Task[None]] = set()
        self.per_client: Counter[str] = Counter()
        # Done once shutdown() starts; sessions wait on it beside their socket.
        self.closing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        for host, port in self.endpoints:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await asyncio.start_server(
                self._accept,
                host=host,
                port=port,
                family=family,
                reuse_port=True,
                backlog=1024,
            )
            self.servers.append(server)

    def bound(self) -> list[tuple[str, int]]:
        """The addresses actually bound (port 0 in settings means any free port)."""
        result = []
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                result.append((str(host), int(port)))
        return result

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("unknown", 0)
        ip = str(peer[0])
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Replies are small and already batched by the session (PIPELINING);
            # Nagle would only add latency to the next reply.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.per_client_limit and self.per_client[ip] >= self.per_client_limit:
            # Postfix's smtpd_client_connection_count_limit (per worker process here).
            self.log.line(
                "smtpd",
                f"warning: Connection concurrency limit exceeded: "
                f"{self.per_client[ip] + 1} from {client_label(None, ip)} for service smtp",
            )
            writer.write(
                f"421 4.7.0 {self.hostname} Error: too many connections from {ip}\r\n".encode()
            )
            await _close(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        self.per_client[ip] += 1
        try:
            await self.run_session(reader, writer)
        except asyncio.CancelledError:
            if not self.closing.done():
                raise
            # Cut by shutdown() after the grace period: an expected end, and
            # this task is the connection's own (nobody awaits it).
        finally:
            self.per_client[ip] -= 1
            if not self.per_client[ip]:
                del self.per_client[ip]
            self.sessions.discard(task)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, ask the sessions to end, wait up to ``grace`` seconds
        for them, then cancel them."""
        for server in self.servers:
            server.close()
        if not self.closing.done():
            self.closing.set_result(None)
        if self.sessions:
            _done, pending = await asyncio.wait(set(self.sessions), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)


async def _close(writer: asyncio.StreamWriter) -> None:
    try:
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass
