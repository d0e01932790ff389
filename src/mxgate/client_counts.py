"""Connections per client address, counted over every SMTP worker at once.

Postfix counts ``smtpd_client_connection_count_limit`` in anvil, one process
for the whole system. mxgate's workers each accept on their own, so a count
kept by each worker let a client have the limit once per worker. Here the
master makes one table in shared memory (an anonymous memfd that the workers
inherit, as they inherit the listening sockets): one row per worker process,
one 16-bit counter per bucket of client addresses. A worker writes only its
own row, so no lock is needed, and admits a connection while the sum of the
client's bucket over all rows is under the limit.

Two things make the cap approximate, and only ever by little:
- Addresses are hashed into 65,536 buckets; two addresses in one bucket share a
  count. That can only make the cap stricter for them (a 421, which the client
  retries), never looser, and only once their connections together reach it.
- Between reading the sum and writing its own row, another worker may admit a
  connection of the same client: for an instant the cap can be passed by one
  connection per worker (anvil avoids that by being a single process).

The master hands each worker process a row of its own, cleared, and clears it
again when that process has exited (its connections went with it), so a crash
leaves no stale count behind. There are four rows per worker: a reload runs
the old and the new set side by side until the old sessions end, and another
reload may come before they have.
"""

from __future__ import annotations

import mmap
import os
import zlib

BUCKETS = 1 << 16
_COUNTER = 2  # bytes: "H"
_MAX = 0xFFFF


def bucket(ip: str) -> int:
    """The bucket of a client address, the same in every process (Python's own
    string hash is salted per process, so it cannot serve)."""
    return zlib.crc32(ip.encode("ascii", "replace")) & (BUCKETS - 1)


class ClientTable:
    """The master's side: creates the shared table and lends out its rows."""

    def __init__(self, rows: int) -> None:
        """Raises OSError when shared memory cannot be had (the workers then
        count alone, as they did before)."""
        self.rows = rows
        if not hasattr(os, "memfd_create"):  # Linux only
            raise OSError("no memfd_create on this system")
        self.fd = os.memfd_create("mxgate-client-counts", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, rows * BUCKETS * _COUNTER)
            self._map = mmap.mmap(self.fd, rows * BUCKETS * _COUNTER)
        except OSError:
            os.close(self.fd)
            raise
        self._free = list(range(rows))
        self._used: set[int] = set()  # rows that may hold counts (a new file is zeros)

    def take(self) -> int | None:
        """A cleared row for a new worker process; None when all are lent."""
        if not self._free:
            return None
        row = self._free.pop(0)
        self._clear(row)
        self._used.add(row)
        return row

    def give_back(self, row: int) -> None:
        """The worker process of ``row`` has exited: its connections are gone."""
        self._clear(row)
        if row not in self._free:
            self._free.append(row)

    def _clear(self, row: int) -> None:
        # Rows never lent are still zeros, and untouched pages cost no memory.
        if row in self._used:
            size = BUCKETS * _COUNTER
            self._map[row * size : (row + 1) * size] = bytes(size)

    def close(self) -> None:
        self._map.close()
        os.close(self.fd)


class ClientCounts:
    """A worker's side: its own row to write, every row to read."""

    def __init__(self, fd: int, row: int, rows: int) -> None:
        self._map = mmap.mmap(fd, rows * BUCKETS * _COUNTER)
        self._view = memoryview(self._map).cast("H")
        self.row = row
        self.rows = rows

    def count(self, ip: str) -> int:
        """Connections of ``ip`` (of its bucket) over all workers."""
        view, b = self._view, bucket(ip)
        return sum(view[r * BUCKETS + b] for r in range(self.rows))

    def add(self, ip: str) -> None:
        index = self.row * BUCKETS + bucket(ip)
        if self._view[index] < _MAX:
            self._view[index] += 1

    def remove(self, ip: str) -> None:
        index = self.row * BUCKETS + bucket(ip)
        if self._view[index] > 0:
            self._view[index] -= 1


class LocalCounts:
    """The same interface over this worker's own connections alone (a worker
    the master gave no row, or one started without a master)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def count(self, ip: str) -> int:
        return self._counts.get(ip, 0)

    def add(self, ip: str) -> None:
        self._counts[ip] = self._counts.get(ip, 0) + 1

    def remove(self, ip: str) -> None:
        left = self._counts.get(ip, 0) - 1
        if left > 0:
            self._counts[ip] = left
        else:
            self._counts.pop(ip, None)


def parse_spec(spec: str) -> tuple[int, int, int]:
    """``FD:ROW:ROWS`` (the worker's ``--clients`` option) -> the three numbers."""
    fd, row, rows = [int(part) for part in spec.split(":")]
    if fd < 0 or rows <= 0 or not 0 <= row < rows:
        raise ValueError(spec)
    return fd, row, rows
