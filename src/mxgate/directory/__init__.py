"""The routing database: schema, bulk load, change capture and the live snapshot.

The only package that talks to PostgreSQL (and the only one importing
asyncpg). The rest of mxgate sees ``SnapshotHolder.current``, a
``mxgate.core.snapshot.RoutingData``, and never waits on the database.

    connect.py    one-shot connections; DirectoryError, the error callers catch
    migrate.py    migrations, ``db status``, GRANTs for a read-only role
    queries.py    table names, columns and read queries
    loader.py     full load in one snapshot (COPY)
    fold.py       rows -> snapshot entries (pure; key folding lives here)
    changes.py    incremental catch-up from the change log
    cache.py      the on-disk copy of the last good snapshot
    follower.py   SnapshotHolder: load, follow, reconnect, serve from cache
    example.py    the tutorial's example rows
    srs_keys.py   the SRS keys: read, rotate (``mxgate srs``)
    srs_holder.py SrsKeyHolder: the keys of a running gateway, and their disk copy
"""

from mxgate.directory.connect import DirectoryError
from mxgate.directory.example import NotEmptyError, is_empty, load_example_data
from mxgate.directory.follower import HolderStatus, SnapshotHolder
from mxgate.directory.loader import load_snapshot
from mxgate.directory.migrate import (
    MigrationError,
    SchemaStatus,
    grant_statements,
    migrate,
    status,
)
from mxgate.directory.queries import CHANNEL
from mxgate.directory.srs_holder import SrsKeyCache, SrsKeyHolder
from mxgate.directory.srs_keys import Rotation, load_keys, rotate

__all__ = [
    "CHANNEL",
    "DirectoryError",
    "HolderStatus",
    "MigrationError",
    "NotEmptyError",
    "Rotation",
    "SchemaStatus",
    "SnapshotHolder",
    "SrsKeyCache",
    "SrsKeyHolder",
    "grant_statements",
    "is_empty",
    "load_example_data",
    "load_keys",
    "load_snapshot",
    "migrate",
    "rotate",
    "status",
]
