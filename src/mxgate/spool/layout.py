"""Where things live under ``spool_dir``, and how queue ids are made.

Owns the directory names, the path of every file, and queue id generation.
Never reads or writes a file.

Layout::

    spool_dir/
      lock        flock: shared while a Spool is open, exclusive during recover()
      tmp/        records being written; anything here was never acknowledged
      data/       message bodies, data/<QUEUEID>, written once and never moved
      incoming/   envelope records just accepted, not yet seen by the queue manager
      active/     records claimed by the queue manager for a delivery attempt
      deferred/   records waiting for their next attempt
      hold/       records held by the operator
      corrupt/    torn or unreadable records (and their bodies, <QUEUEID>.body)
      journal/    segments of accepted small messages, one per SMTP worker
                  (<SEGMENT>), and the list of those finished (<SEGMENT>.done)

A message exists when its envelope record is in one of incoming/, active/,
deferred/ or hold/; the record's arrival there is the commit point. Only the
record moves between queues (one atomic rename); the body stays in data/, so
a state change never copies or rewrites message content.

Or it exists as a frame in a journal segment not listed in that segment's done
file (``journal.py``): small messages are accepted that way, delivered from
there, and written out as the files above only when they must wait for a retry
(``journal_index.py``).

Queue ids are 20 characters of Crockford base32 (digits and upper-case letters
without I, L, O, U): 11 for the time in microseconds, 5 for the process id,
4 for a per-process counter. They sort by arrival time, are valid in file names
and log lines, and are unique across the worker processes sharing a spool; the
body file is created with O_EXCL, so even a clock stepping back cannot make one
message overwrite another (the newcomer fails and is answered 451).
"""

from __future__ import annotations

import enum
import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

QUEUE_ID_RE = re.compile(r"^[0-9A-Z]{6,40}$")
"""What a queue id (generated or supplied by a caller) must look like."""

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class Queue(enum.Enum):
    """The directories an envelope record can be in."""

    INCOMING = "incoming"
    ACTIVE = "active"
    DEFERRED = "deferred"
    HOLD = "hold"
    CORRUPT = "corrupt"


LIVE_QUEUES = (Queue.INCOMING, Queue.ACTIVE, Queue.DEFERRED, Queue.HOLD)
"""The queues whose records are messages still to deliver (all but corrupt/)."""


class Layout:
    """Path helpers for one spool directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.data = self.root / "data"
        self.lock = self.root / "lock"

    def all_dirs(self) -> list[Path]:
        return [self.tmp, self.data, *(self.queue_dir(q) for q in Queue)]

    def queue_dir(self, queue: Queue) -> Path:
        return self.root / queue.value

    def record(self, queue: Queue, queue_id: str) -> Path:
        return self.root / queue.value / queue_id

    def body(self, queue_id: str) -> Path:
        return self.data / queue_id

    def corrupt_body(self, queue_id: str) -> Path:
        return self.root / Queue.CORRUPT.value / f"{queue_id}.body"


def is_queue_id(text: str) -> bool:
    return QUEUE_ID_RE.match(text) is not None


_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]
"""Every 10-bit value as its two characters: an id is a few lookups, not 20 divisions."""


def _pid_chars(pid: int) -> str:
    """The 5 characters of a 25-bit process id."""
    return _ALPHABET[pid >> 20] + _PAIRS[(pid >> 10) & 1023] + _PAIRS[pid & 1023]


class QueueIdSource:
    """Makes queue ids: time (microseconds) + process id + counter.

    The process id is read at every call, so a child forked after the source was
    built still makes ids of its own. Thread-safe.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        pid: Callable[[], int] = os.getpid,
    ) -> None:
        self._clock = clock
        self._pid = pid
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self._pid_part = (-1, "")  # the last pid and its characters, swapped whole

    def new(self) -> str:
        with self._lock:
            count = next(self._counter)
        # 11 chars hold 55 bits of microseconds (until year 3111); 5 chars hold any
        # Linux pid (pid_max <= 2**22); the counter wraps at 2**20 per process.
        # Each part is spelled on its own: every value stays below 2**62, which
        # compiled code handles as a machine word (one 100-bit number, shifted
        # ten times, cost 9,000 instructions per id).
        micros = int(self._clock() * 1_000_000) % 32**11
        pid = self._pid() % 32**5
        part = self._pid_part
        if part[0] != pid:
            part = self._pid_part = (pid, _pid_chars(pid))
        count %= 32**4
        pairs = _PAIRS
        return (
            f"{_ALPHABET[micros >> 50]}{pairs[(micros >> 40) & 1023]}"
            f"{pairs[(micros >> 30) & 1023]}{pairs[(micros >> 20) & 1023]}"
            f"{pairs[(micros >> 10) & 1023]}{pairs[micros & 1023]}"
            f"{part[1]}{pairs[count >> 10]}{pairs[count & 1023]}"
        )
