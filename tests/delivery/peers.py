"""Loopback next hops for the courier tests: a scripted SMTP/LMTP server and
a tiny DNS server.

``ScriptedPeer`` runs in the test's own event loop (TCP on 127.0.0.1 or a
UNIX socket). Its replies are data and small functions of the command
argument; it records every session (commands as received, messages with
their envelope and un-dot-stuffed body), counts accepted connections and
the most that were open at once. It can advertise STARTTLS with a real
certificate, or say 220 to STARTTLS and then break the handshake.

``ZoneServer`` answers UDP DNS queries on 127.0.0.1 from a dict, built with
dnspython's message API, in a thread: NOERROR with records, NODATA, NXDOMAIN,
SERVFAIL, or no answer at all (a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

Rule = Callable[[str], str]

DEFAULT_EXTENSIONS = ("PIPELINING", "SIZE 10240000", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES")


@dataclass
class Message:
    mail_from: str
    rcpts: list[str]
    data: bytes


@dataclass
class Session:
    commands: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    tls: bool = False
    reads: list[bytes] = field(default_factory=list)  # raw command-phase reads


def always(reply: str) -> Rule:
    return lambda _arg: reply


@dataclass
class Gauge:
    """How many sessions are inside the final-reply wait at once; may be
    shared by several peers (a global limit)."""

    now: int = 0
    most: int = 0


@dataclass
class PeerScript:
    lmtp: bool = False
    greeting: str = "220 peer.test ESMTP scripted"
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    ehlo_reply: str | None = None  # e.g. "502 5.5.2 no" to force HELO
    mail: Rule = field(default=always("250 2.1.0 Ok"))
    rcpt: Rule = field(default=always("250 2.1.5 Ok"))
    data: str = "354 End data with <CR><LF>.<CR><LF>"
    dot: Rule = field(default=always("250 2.0.0 Ok: queued as PEER1"))  # arg: MAIL FROM
    lmtp_dot: Rule = field(default=always("250 2.0.0 Saved"))  # arg: the recipient
    tls: ssl.SSLContext | None = None
    break_tls: bool = False  # 220 to STARTTLS, then garbage instead of a handshake
    starttls_reply: str = "220 2.0.0 Ready to start TLS"
    drop_at: str = ""  # close without a reply when this verb arrives
    greeting_delay: float = 0.0
    dot_delay: float = 0.0
    gauge: Gauge = field(default_factory=Gauge)


class ScriptedPeer:
    def __init__(self, script: PeerScript | None = None) -> None:
        self.script = script or PeerScript()
        self.sessions: list[Session] = []
        self.accepts = 0
        self.open = 0
        self.max_open = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def messages(self) -> list[Message]:
        return [m for s in self.sessions for m in s.messages]

    async def start(
        self, unix_path: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> ScriptedPeer:
        if unix_path is not None:
            self._server = await asyncio.start_unix_server(self._serve, unix_path)
        else:
            self._server = await asyncio.start_server(self._serve, host, port)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_all(self) -> None:
        """Close every open connection from the server side (idle timeout)."""
        for writer in list(self._writers):
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def __aenter__(self) -> ScriptedPeer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepts += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        session = Session()
        self.sessions.append(session)
        self._writers.add(writer)
        try:
            await self._converse(session, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            self.open -= 1
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _converse(
        self, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        s = self.script

        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        if s.greeting_delay:
            await asyncio.sleep(s.greeting_delay)
        say(s.greeting)
        if not s.greeting.startswith("220"):
            await writer.drain()
            await reader.read(1000)  # QUIT, then EOF
            return
        mail_from, rcpts, accepted = "", list[str](), list[str]()
        while True:
            await writer.drain()
            raw = await reader.readline()
            if not raw:
                return
            session.reads.append(raw)
            line = raw.decode().rstrip("\r\n")
            session.commands.append(line)
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            if verb == s.drop_at:
                return
            if verb in ("EHLO", "LHLO", "HELO"):
                if verb != "HELO" and s.ehlo_reply:
                    say(s.ehlo_reply)
                    continue
                if verb == "HELO":
                    say("250 peer.test")
                    continue
                caps = list(s.extensions) + (["STARTTLS"] if s.tls and not session.tls else [])
                lines = ["peer.test", *caps]
                for text in lines[:-1]:
                    say(f"250-{text}")
                say(f"250 {lines[-1]}")
            elif verb == "STARTTLS":
                say(s.starttls_reply)
                if not s.starttls_reply.startswith("220"):
                    continue
                await writer.drain()
                if s.break_tls or s.tls is None:
                    writer.write(b"this is not TLS\r\n" * 20)
                    await writer.drain()
                    return
                await writer.start_tls(s.tls)
                session.tls = True
            elif verb == "MAIL":
                mail_from, rcpts, accepted = arg, [], []
                say(s.mail(arg))
            elif verb == "RCPT":
                reply = s.rcpt(arg)
                rcpts.append(arg)
                if reply.startswith("2"):
                    accepted.append(_address(arg))
                say(reply)
            elif verb == "DATA":
                if not accepted:
                    say("554 5.5.1 Error: no valid recipients")
                    continue
                say(s.data)
                if not s.data.startswith("354"):
                    continue
                await writer.drain()
                data = await _read_body(reader)
                session.messages.append(Message(mail_from, list(accepted), data))
                s.gauge.now += 1
                s.gauge.most = max(s.gauge.most, s.gauge.now)
                try:
                    await asyncio.sleep(s.dot_delay)
                finally:
                    s.gauge.now -= 1
                if s.lmtp:
                    for rcpt in accepted:
                        say(s.lmtp_dot(rcpt))
                else:
                    say(s.dot(mail_from))
            elif verb == "RSET":
                mail_from, rcpts, accepted = "", [], []
                say("250 2.0.0 Ok")
            elif verb == "NOOP":
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                say("221 2.0.0 Bye")
                await writer.drain()
                return
            else:
                say("502 5.5.2 Error: command not recognized")


def _address(arg: str) -> str:
    start, end = arg.find("<"), arg.find(">")
    return arg[start + 1 : end]


async def _read_body(reader: asyncio.StreamReader) -> bytes:
    lines: list[bytes] = []
    while True:
        line = await reader.readline()
        if line in (b".\r\n", b""):
            return b"".join(lines)
        lines.append(line[1:] if line.startswith(b".") else line)


class ZoneServer:
    """DNS over UDP on 127.0.0.1. ``records`` maps (name, type) to the
    rdata texts, e.g. ("example.test", "MX"): ["10 mx1.example.test."]. A
    name with any record exists; names in ``nxdomain`` do not, names in
    ``servfail`` fail, names in ``silent`` are never answered."""

    def __init__(
        self,
        records: dict[tuple[str, str], list[str]],
        *,
        servfail: frozenset[str] = frozenset(),
        silent: frozenset[str] = frozenset(),
    ) -> None:
        self.records = {(n.lower().rstrip("."), t.upper()): v for (n, t), v in records.items()}
        self.names = {n for n, _ in self.records}
        self.servfail, self.silent = servfail, silent
        self.queries: list[tuple[str, str]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ZoneServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            answer = self._answer(query)
            if answer is not None:
                self._sock.sendto(answer.to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message | None:
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        if name in self.silent:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif (name, rdtype) in self.records:
            rrset = dns.rrset.from_text_list(
                name + ".", 300, "IN", rdtype, self.records[(name, rdtype)]
            )
            response.answer.append(rrset)
        return response
