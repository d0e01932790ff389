"""The last good snapshot on local disk, for starting while the database is down.

Owns one file: its format (magic, format number, marshal version, payload
length, CRC-32 of the payload, then the payload) and its atomic replacement
(write a temporary file, fsync it, rename it over the old one, fsync the
directory). A torn, truncated or otherwise damaged file fails the length or
checksum test and is ignored, never half-loaded.

Never decides when to write (the follower debounces) and never raises on a
bad file: ``read`` returns None and logs why.

Why marshal: for a million mailboxes it dumps in ~0.05 s and loads in ~0.3 s,
where pickle takes ~0.7 s to dump (and holds the GIL meanwhile). Its format
may change between Python versions; the header records the marshal version
and a file from another version is ignored (the next database load rewrites
it). Trust: like pickle, marshal must only read data we wrote ourselves. The
file lives in the gateway's own state directory; ``read`` refuses a file
that is not owned by our user or that others may write to.
"""

from __future__ import annotations

import logging
import marshal
import os
import stat
import struct
import threading
import zlib
from pathlib import Path

from mxgate.core.snapshot import RoutingData
from mxgate.directory.fold import share_snapshot_values

log = logging.getLogger("mxgate.directory")

MAGIC = b"MXGATE-SNAPSHOT\n"
FORMAT = 1
# magic, format, marshal version, payload length, CRC-32 of the payload
_HEADER = struct.Struct("<16sHHQI")


class CacheError(ValueError):
    """The file is not a complete snapshot written by this format."""


def encode(data: RoutingData, saved_at: float) -> list[bytes]:
    """Header and payload of the file (a list, so they are written without a copy).

    Runs on the event loop: marshal.dumps is one C call, so the snapshot
    cannot change under it, and for a million entries it takes ~0.05 s.
    """
    payload = marshal.dumps(
        (
            data.version,
            saved_at,
            data.domains,
            data.mailboxes,
            data.relays,
            data.forwards,
            data.transports,
        )
    )
    header = _HEADER.pack(MAGIC, FORMAT, marshal.version, len(payload), zlib.crc32(payload))
    return [header, payload]


def decode(blob: bytes) -> tuple[RoutingData, float]:
    """The snapshot and the time it was saved; CacheError if anything is off."""
    if len(blob) < _HEADER.size:
        raise CacheError("file shorter than its header")
    magic, fmt, marshal_version, length, crc = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise CacheError("not a snapshot file")
    if fmt != FORMAT or marshal_version != marshal.version:
        raise CacheError(f"written by another version (format {fmt}, marshal {marshal_version})")
    payload = memoryview(blob)[_HEADER.size :]
    if len(payload) != length:
        raise CacheError(f"truncated or torn: {len(payload)} of {length} payload bytes")
    if zlib.crc32(payload) != crc:
        raise CacheError("checksum mismatch")
    try:
        fields = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as exc:
        raise CacheError(f"payload unreadable: {exc}") from exc
    if not (
        isinstance(fields, tuple)
        and len(fields) == 7
        and isinstance(fields[0], int)
        and isinstance(fields[1], float)
        and all(isinstance(f, dict) for f in fields[2:])
    ):
        raise CacheError("payload has an unexpected shape")
    version, saved_at, domains, mailboxes, relays, forwards, transports = fields
    data = RoutingData(
        domains=domains,
        mailboxes=mailboxes,
        relays=relays,
        forwards=forwards,
        transports=transports,
        version=version,
    )
    try:
        share_snapshot_values(data)  # as after a database load (fold.py)
    except (TypeError, AttributeError) as exc:
        raise CacheError(f"payload has an unexpected shape: {exc}") from exc
    return data, saved_at


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheFile:
    """The snapshot file at ``path``; ``write`` is safe to call from threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._written = -1

    def write(self, parts: list[bytes], seq: int) -> bool:
        """Atomically replace the file, unless a newer ``seq`` was written already.

        ``seq`` orders the writes of one holder: a write still running in a
        worker thread when a newer one starts must not land after it.
        """
        with self._lock:
            if seq <= self._written:
                return False
            directory = self.path.parent
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = directory / f".{self.path.name}.{os.getpid()}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
            fd = os.open(tmp, flags, 0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    for part in parts:
                        f.write(part)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            # Without this the rename itself may not survive a power loss.
            _fsync_dir(directory)
            self._written = seq
            return True

    def read(self) -> tuple[RoutingData, float] | None:
        """The saved snapshot and its save time, or None (missing or unusable)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            log.info("no snapshot cache at %s", self.path)
            return None
        except OSError as exc:
            log.warning("snapshot cache %s unreadable: %s", self.path, exc)
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                log.warning("snapshot cache %s ignored: not ours or writable by others", self.path)
                return None
            blob = f.read()
        try:
            return decode(blob)
        except CacheError as exc:
            log.warning("snapshot cache %s ignored: %s", self.path, exc)
            return None
