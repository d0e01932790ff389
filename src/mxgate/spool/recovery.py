"""Recovery after a crash, quarantine of unusable records, and reading records safely.

Owns the rules that decide what in a spool directory is a message: a record in
a live queue that decodes, names its own queue id, and whose body in data/ has
the size (optionally the checksum) the record states. Everything else is either
debris of an unacknowledged message (tmp/ files, bodies without a record), which
is deleted, or damage, which is moved to corrupt/ with a log line and never
delivered.

Never runs while a writer may be active: ``Spool.recover`` calls ``recover``
only while it holds the spool lock exclusively.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mxgate.spool.errors import (
    MessageNotFoundError,
    SpoolCorruptError,
    SpoolError,
    from_os_error,
)
from mxgate.spool.format import Record, decode
from mxgate.spool.fsio import FileSystem, unlink_quietly
from mxgate.spool.layout import LIVE_QUEUES, Layout, Queue, is_queue_id

log = logging.getLogger("mxgate.spool")


@dataclass(slots=True)
class RecoveryReport:
    """What ``recover`` found and did."""

    tmp_removed: int = 0
    requeued: list[str] = field(default_factory=list)  # active/ -> incoming/
    corrupt: list[str] = field(default_factory=list)  # moved to corrupt/
    orphans_removed: int = 0  # bodies without a record (never acknowledged)
    messages: int = 0  # intact messages in the queues afterwards


def read_record(fs: FileSystem, layout: Layout, queue: Queue, queue_id: str) -> Record:
    """The record of ``queue_id`` in ``queue``.

    Raises MessageNotFoundError, SpoolCorruptError (torn or invalid), SpoolError.
    """
    try:
        data = fs.read(layout.record(queue, queue_id))
    except FileNotFoundError:
        raise MessageNotFoundError(f"{queue_id}: not in {queue.value}/") from None
    except OSError as err:
        raise from_os_error(err, f"{queue_id}: read") from err
    try:
        return decode(data)
    except SpoolCorruptError as err:
        raise SpoolCorruptError(f"{queue_id}: {err}") from None


def recover(fs: FileSystem, layout: Layout, *, verify_bodies: bool) -> RecoveryReport:
    """Clean the spool after a crash (see ``Spool.recover``). Raises OSError."""
    report = RecoveryReport()
    for name in fs.listdir(layout.tmp):
        unlink_quietly(fs, layout.tmp / name)
        report.tmp_removed += 1
    for name in sorted(fs.listdir(layout.queue_dir(Queue.ACTIVE))):
        fs.rename(layout.record(Queue.ACTIVE, name), layout.record(Queue.INCOMING, name))
        report.requeued.append(name)
    live: set[str] = set()
    for queue in LIVE_QUEUES:
        for name in sorted(fs.listdir(layout.queue_dir(queue))):
            problem = _check(fs, layout, queue, name, verify_bodies)
            if problem is None:
                live.add(name)
            else:
                quarantine(fs, layout, queue, name, problem)
                report.corrupt.append(name)
    for name in fs.listdir(layout.data):
        if name not in live:
            unlink_quietly(fs, layout.data / name)
            report.orphans_removed += 1
    for directory in layout.all_dirs():
        fs.fsync_dir(directory)
    report.messages = len(live)
    if report.requeued:
        log.info("recovery: %d message(s) returned from active/", len(report.requeued))
    return report


def _check(fs: FileSystem, layout: Layout, queue: Queue, name: str, verify: bool) -> str | None:
    """Why the record ``name`` in ``queue`` is unusable, None if it is sound."""
    if not is_queue_id(name):
        return "not a queue file name"
    try:
        record = read_record(fs, layout, queue, name)
    except SpoolError as err:
        return str(err)
    if record.envelope.queue_id != name:
        return f"record is for {record.envelope.queue_id}"
    body = layout.body(name)
    try:
        size = fs.size(body)
    except FileNotFoundError:
        return "body missing"
    if size != record.body_size:
        return f"body is {size} bytes, record says {record.body_size}"
    if verify and _sha256(body) != record.body_sha256:
        return "body checksum mismatch"
    return None


def quarantine(fs: FileSystem, layout: Layout, queue: Queue, name: str, reason: str) -> None:
    """Move the record ``name`` (and its body, if any) to corrupt/, with a log line.

    Not fsynced: the caller syncs corrupt/ (losing a move only brings the
    record back where the next recovery finds it again).
    """
    corrupt = layout.queue_dir(Queue.CORRUPT)
    target = corrupt / name
    suffix = 0
    while target.exists():  # keep earlier evidence
        suffix += 1
        target = corrupt / f"{name}.{suffix}"
    fs.rename(layout.queue_dir(queue) / name, target)
    if is_queue_id(name) and layout.body(name).exists():
        fs.rename(layout.body(name), corrupt / f"{target.name}.body")
    log.warning("%s: corrupt queue file moved to corrupt/ (%s)", name, reason)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as body:
        for block in iter(lambda: body.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
