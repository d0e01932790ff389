"""Next hops of the end-to-end tests: scripted SMTP/LMTP servers in threads.

``ThreadedPeer`` runs a ``tests.delivery.peers.ScriptedPeer`` on an event loop
of its own, in a daemon thread, so that a test (synchronous, talking to a real
``mxgate serve`` in another process) can read what arrived. It listens on a
TCP port of a loopback address or on a UNIX socket.

``RecipientRule`` answers RCPT (or an LMTP recipient's final reply) by
address: 550 for local parts starting with ``reject``, 451 for ``defer``,
250 otherwise, unless the test sets a reply for one address.

``ClosedPort`` keeps a port of 127.0.0.1 refusing connections (bound, never
listening) until a test releases it to start a peer there.

Tests talk to loopback only.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.delivery.peers import PeerScript, ScriptedPeer

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Arrived:
    """One transaction as the peer saw it (body dot-unstuffed)."""

    mail_from: str  # the argument of MAIL: "FROM:<a@b> SIZE=123 ..."
    rcpts: list[str]  # the recipients the peer accepted, bare addresses
    data: bytes

    @property
    def sender(self) -> str:
        """The reverse-path of MAIL FROM, without brackets ('' for <>)."""
        return bare_address(self.mail_from)

    @property
    def message_id(self) -> str:
        """The Message-ID header of the body, as written ('' without one)."""
        message = email.message_from_bytes(self.data, policy=email.policy.compat32)
        return str(message.get("Message-ID", "")).strip()


def bare_address(arg: str) -> str:
    """The address of a MAIL/RCPT argument ("TO:<a@b> NOTIFY=..." -> "a@b"),
    or the argument itself when it has no angle brackets (an LMTP recipient)."""
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1 : end] if 0 <= start < end else arg.strip()


class RecipientRule:
    """A peer's reply to one recipient, by address (see the module text):
    called with a RCPT argument; ``at_dot`` is the same rule for an LMTP
    server's reply per recipient after the body (RFC 2033 4.2)."""

    def __init__(self, ok: str = "250 2.1.5 Ok") -> None:
        self.ok = ok
        self.replies: dict[str, str] = {}

    @property
    def at_dot(self) -> RecipientRule:
        """The rule for LMTP's replies after the dot: same verdicts, 2.0.0 for success."""
        rule = RecipientRule("250 2.0.0 Ok: delivered")
        rule.replies = self.replies  # shared: set() on either applies to both
        return rule

    def set(self, address: str, reply: str | None) -> None:
        """Reply ``reply`` to ``address`` from now on (None: back to the default)."""
        if reply is None:
            self.replies.pop(address.lower(), None)
        else:
            self.replies[address.lower()] = reply

    def __call__(self, arg: str) -> str:
        address = bare_address(arg).lower()
        reply = self.replies.get(address)
        if reply is not None:
            return reply
        local = address.partition("@")[0]
        if local.startswith("reject"):
            return f"550 5.1.1 <{address}>: no such user here"
        if local.startswith("defer"):
            return f"451 4.2.0 <{address}>: mailbox busy, try later"
        return self.ok


class ThreadedPeer:
    """A ScriptedPeer serving from its own event loop in a thread.

    ``host``/``port`` pick the TCP address (port 0: any free one);
    ``unix_path`` makes it a UNIX socket server instead.
    """

    def __init__(
        self,
        script: PeerScript,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        unix_path: str | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.peer = ScriptedPeer(script)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = self.peer.start(unix_path=unix_path, host=host, port=port)
        try:
            asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        except BaseException:
            self._stop_loop()
            raise
        self.host = host
        self.unix_path = unix_path

    @property
    def port(self) -> int:
        return self.peer.port

    def set(self, **changes: object) -> None:
        """Change fields of the peer's script (in the peer's thread)."""

        def apply() -> None:
            for name, value in changes.items():
                setattr(self.peer.script, name, value)

        self._call(apply)

    def _call(self, function: Callable[[], None]) -> None:
        """Run ``function`` in the peer's thread; return when it has run."""

        async def run() -> None:
            function()

        asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def messages(self) -> list[tuple[str, list[str], bytes]]:
        """Every transaction so far: (MAIL argument, accepted recipients, body)."""
        return [(a.mail_from, a.rcpts, a.data) for a in self.arrivals()]

    def arrivals(self) -> list[Arrived]:
        async def take() -> list[Arrived]:
            return [Arrived(m.mail_from, list(m.rcpts), m.data) for m in self.peer.messages]

        return asyncio.run_coroutine_threadsafe(take(), self.loop).result(10)

    def commands(self) -> list[str]:
        """Every command line received, in every session, in order."""

        async def take() -> list[str]:
            return [line for s in self.peer.sessions for line in s.commands]

        return asyncio.run_coroutine_threadsafe(take(), self.loop).result(10)

    def waiting_at_dot(self) -> int:
        """Sessions that have the body and have not replied yet (``dot_delay``)."""

        async def take() -> int:
            return self.peer.script.gauge.now

        return asyncio.run_coroutine_threadsafe(take(), self.loop).result(10)

    def wait_messages(
        self, count: int, timeout: float = 20.0
    ) -> list[tuple[str, list[str], bytes]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def wait_for(self, message_id: str, count: int = 1, timeout: float = 20.0) -> list[Arrived]:
        """The transactions carrying ``message_id`` once there are ``count``
        of them; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.with_id(message_id)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(found)} of {count} transactions with {message_id} arrived "
                    f"at the peer on {self.unix_path or self.port}"
                )
            time.sleep(0.05)

    def with_id(self, message_id: str) -> list[Arrived]:
        return [a for a in self.arrivals() if a.message_id == message_id]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.peer.stop(), self.loop).result(10)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class ClosedPort:
    """A port of 127.0.0.1 that refuses connections until ``release()``."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])

    def release(self) -> None:
        """Free the port (for a peer to listen on it)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
