"""The listening sockets of one worker process and the sessions they accept.

Owns accepting connections (on sockets the master opened, see sockets.py, or
on its own; SO_REUSEPORT either way, so several worker processes share a port
and the kernel spreads clients across them), the per-client connection
cap (over all workers when the master shares its table, client_counts.py;
else over this worker's own connections), the registry of live sessions, and
the shutdown order: stop accepting, tell every session to end (those between
transactions say 421 and hang up, the others finish their transaction first),
wait for the sessions, then cut the ones that outstay the grace period.

Never speaks SMTP beyond the one 421 line it sends to a client over its cap.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

from mxgate.client_counts import ClientCounts, LocalCounts
from mxgate.maillog import MailLog, client_label
from mxgate.server.busy_poll import BusyPoller
from mxgate.server.session import Session
from mxgate.sockets import BACKLOG

SessionFactory = Callable[[], Session]


class Listener:
    """Accepts on every endpoint; one ``Session`` protocol per connection."""

    def __init__(
        self,
        endpoints: list[tuple[str, int]],
        new_session: SessionFactory,
        *,
        hostname: str,
        per_client_limit: int,
        log: MailLog,
        inherited: tuple[int, ...] = (),
        shared_counts: ClientCounts | None = None,
        busy_poll: float = 0.0,
    ) -> None:
        """``inherited``: listening sockets from the master (sockets.py), used
        instead of binding ``endpoints``. ``shared_counts``: the connections of
        every worker, for the per-client cap (client_counts.py). ``busy_poll``:
        the longest poll of the loop before it sleeps, in seconds (busy_poll.py;
        0: never)."""
        self.endpoints = endpoints
        self.inherited = inherited
        self.new_session = new_session
        self.hostname = hostname
        self.per_client_limit = per_client_limit
        self.log = log
        self.servers: list[asyncio.Server] = []
        self.sessions: set[Session] = set()
        # Connections per client address: over all workers, or this one's alone.
        self.client_counts: ClientCounts | LocalCounts = shared_counts or LocalCounts()
        self.closing = False
        self.busy_poll = busy_poll
        self.poller: BusyPoller | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.busy_poll > 0:
            self.poller = BusyPoller(loop, self.busy_poll)
        for fd in self.inherited:
            sock = socket.socket(fileno=fd)
            # The backlog again: create_server listens anew, with 100 by default.
            server = await loop.create_server(self._protocol, sock=sock, backlog=BACKLOG)
            self.servers.append(server)
        if self.inherited:
            return
        for host, port in self.endpoints:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = await loop.create_server(
                self._protocol,
                host=host,
                port=port,
                family=family,
                reuse_port=True,
                backlog=BACKLOG,
            )
            self.servers.append(server)

    def bound(self) -> list[tuple[str, int]]:
        """The addresses actually bound (port 0 in settings means any free port)."""
        result = []
        for server in self.servers:
            # uvloop gives a list of sockets, asyncio a tuple (as typed).
            for sock in cast(Any, server).sockets:
                name = sock.getsockname()
                result.append((str(name[0]), int(name[1])))
        return result

    def _protocol(self) -> Session:
        session = self.new_session()
        session.registry = self
        session.poller = self.poller
        session.closing = self.closing
        return session

    # -- SessionRegistry ----------------------------------------------------------
    def track(self, session: Session) -> None:
        """A connection that waits for its PROXY header: the shutdown waits for
        it (and a reload lets it go on); counted once admitted."""
        self.sessions.add(session)

    def admit(self, session: Session) -> bool:
        """Sign a new connection in, or refuse it (over the per-client cap)."""
        ip = session.client_ip
        limit = self.per_client_limit
        # Postfix's smtpd_client_connection_count_limit.
        count = self.client_counts.count(ip) if limit else 0
        if limit and count >= limit:
            if session.worker_counts is not None:
                session.worker_counts.turned_away("client_limit")
            self.log.line(
                "smtpd",
                f"warning: Connection concurrency limit exceeded: "
                f"{count + 1} from {client_label(None, ip)} for service smtp",
            )
            transport = session.transport
            if transport is not None:
                transport.write(
                    f"421 4.7.0 {self.hostname} Error: too many connections from {ip}\r\n".encode()
                )
                transport.close()
            return False
        self.sessions.add(session)
        self.client_counts.add(ip)
        # XCLIENT may rename the client later; the count stays with this one.
        session.counted_ip = ip
        return True

    def forget(self, session: Session) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        if session.counted_ip:  # "" while only tracked (a PROXY header awaited)
            self.client_counts.remove(session.counted_ip)
            session.counted_ip = ""

    async def shutdown(self, grace: float, *, drain: bool = False) -> None:
        """Stop accepting, ask the sessions to end, wait up to ``grace`` seconds
        for them, then cut them (with a 421). ``drain``: other workers took
        over (a reload), so sessions are not asked to end: they go on to their
        QUIT, and only those left at the end of the grace are cut."""
        for server in self.servers:
            server.close()
        self.closing = not drain
        if not drain:
            for session in list(self.sessions):
                session.shutdown()
        if self.sessions:
            waiting = {session.done for session in self.sessions}
            _done, pending = await asyncio.wait(waiting, timeout=grace)
            if pending:
                for session in list(self.sessions):
                    session.abort()
                await asyncio.wait({s.done for s in self.sessions} or pending, timeout=5)
