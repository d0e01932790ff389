"""What an SMTP worker counts, and the master's sum over its workers.

A worker keeps plain integers (a session adds its command counts once, when
it closes: nothing on the per-command path) and sends its running totals to
the master as one line, ``M <json>``, at most once a second. The master keeps
the last line of every worker it has heard, under a key that names the
worker's process and start, so the totals of workers that have exited still
count: the sums only grow, as Prometheus counters must. A worker killed
between two lines loses at most a second of counts.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

PREFIX = b"M "


@dataclass
class SmtpCounts:
    """One worker's totals since it started."""

    connections: int = 0
    messages: int = 0  # answered 250 after DATA
    octets: int = 0  # their sizes
    commands: Counter[str] = field(default_factory=Counter)  # by verb, as logged
    rejected: Counter[str] = field(default_factory=Counter)  # refused, by verb
    # STARTTLS hand-offs by result ("ok", "failed"); connections turned away
    # before the greeting, by reason ("client_limit": over the per-client cap;
    # "proxy_header": a trusted proxy sent no valid PROXY header).
    tls: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    # The loop's busy poll (server/busy_poll.py): waits it saw end with input
    # ("caught") or that outlasted its window ("expired"), and its seconds.
    busy_polls: Counter[str] = field(default_factory=Counter)
    busy_poll_seconds: float = 0.0
    changes: int = 0  # bumped on every change: is a new line worth sending?

    def session_closed(self, commands: Mapping[str, int], rejected: Mapping[str, int]) -> None:
        # Not Counter.update: compiled, this loop costs less than its call.
        for verb, n in commands.items():
            self.commands[verb] = self.commands.get(verb, 0) + n
        for verb, n in rejected.items():
            self.rejected[verb] = self.rejected.get(verb, 0) + n
        self.changes += 1

    def accepted(self, size: int) -> None:
        self.messages += 1
        self.octets += size
        self.changes += 1

    def connected(self) -> None:
        self.connections += 1
        self.changes += 1

    def tls_handshake(self, ok: bool) -> None:
        key = "ok" if ok else "failed"
        self.tls[key] = self.tls.get(key, 0) + 1
        self.changes += 1

    def turned_away(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        self.changes += 1

    def busy_polled(self, caught: int, expired: int, seconds: float) -> None:
        """The poller's totals so far (it keeps them; read once a second)."""
        if seconds != self.busy_poll_seconds:
            self.busy_polls["caught"] = caught
            self.busy_polls["expired"] = expired
            self.busy_poll_seconds = seconds
            self.changes += 1

    def line(self, key: str) -> bytes:
        """The ``M`` line for the master (one line: JSON never holds a newline)."""
        document = {
            "key": key,
            "connections": self.connections,
            "messages": self.messages,
            "octets": self.octets,
            "commands": dict(self.commands),
            "rejected": dict(self.rejected),
            "tls": dict(self.tls),
            "refused": dict(self.refused),
            "busy_polls": dict(self.busy_polls),
            "busy_poll_seconds": self.busy_poll_seconds,
        }
        return PREFIX + json.dumps(document, separators=(",", ":")).encode() + b"\n"


class SmtpTotals:
    """The master's view: the latest counts of every worker it has heard."""

    def __init__(self) -> None:
        self._latest: dict[str, SmtpCounts] = {}

    def take_line(self, payload: bytes) -> bool:
        """Record one ``M`` line without its prefix; False when malformed."""
        try:
            document = json.loads(payload)
            counts = SmtpCounts(
                connections=int(document["connections"]),
                messages=int(document["messages"]),
                octets=int(document["octets"]),
                commands=Counter({str(k): int(v) for k, v in document["commands"].items()}),
                rejected=Counter({str(k): int(v) for k, v in document["rejected"].items()}),
                # Absent from the lines of a worker older than these counts
                # (one still finishing its sessions after an upgrade and reload).
                tls=Counter({str(k): int(v) for k, v in document.get("tls", {}).items()}),
                refused=Counter({str(k): int(v) for k, v in document.get("refused", {}).items()}),
                busy_polls=Counter(
                    {str(k): int(v) for k, v in document.get("busy_polls", {}).items()}
                ),
                busy_poll_seconds=float(document.get("busy_poll_seconds", 0.0)),
            )
            key = str(document["key"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        # A new dict each time: readers in another thread (the HTTP endpoint)
        # always see a whole one.
        self._latest = {**self._latest, key: counts}
        return True

    def total(self) -> SmtpCounts:
        result = SmtpCounts()
        for counts in self._latest.values():
            result.connections += counts.connections
            result.messages += counts.messages
            result.octets += counts.octets
            result.commands.update(counts.commands)
            result.rejected.update(counts.rejected)
            result.tls.update(counts.tls)
            result.refused.update(counts.refused)
            result.busy_polls.update(counts.busy_polls)
            result.busy_poll_seconds += counts.busy_poll_seconds
        return result
