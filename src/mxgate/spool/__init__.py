"""The durable spool: owns every byte under ``spool_dir``; knows nothing of SMTP or SQL.

A session streams a message in with ``Spool.begin`` -> ``SpoolWriter.write`` ...
-> ``await SpoolWriter.commit(envelope)`` and answers 250 only after the commit
returned; the queue manager finds, claims, updates, moves and removes messages
through the other ``Spool`` methods. See ``store.py`` for the guarantees and
``layout.py`` for the directories.
"""

from mxgate.spool.errors import (
    MessageNotFoundError,
    SpoolBusyError,
    SpoolCorruptError,
    SpoolError,
    SpoolFullError,
)
from mxgate.spool.fsio import FileSystem
from mxgate.spool.layout import LIVE_QUEUES, Queue, QueueIdSource, is_queue_id
from mxgate.spool.recovery import RecoveryReport
from mxgate.spool.store import QueuedMessage, QueueEntry, Spool
from mxgate.spool.writer import SpoolWriter

__all__ = [
    "LIVE_QUEUES",
    "FileSystem",
    "MessageNotFoundError",
    "Queue",
    "QueueEntry",
    "QueueIdSource",
    "QueuedMessage",
    "RecoveryReport",
    "Spool",
    "SpoolBusyError",
    "SpoolCorruptError",
    "SpoolError",
    "SpoolFullError",
    "SpoolWriter",
    "is_queue_id",
]
