"""Incremental following of the change log: what changed since ``version``.

Owns the read side of change capture. ``poll`` reads the change-log entries
after the snapshot's version, re-reads every key group they name (one query
per table per batch, in the same REPEATABLE READ snapshot as the entries) and
returns a ``Batch`` that ``Batch.apply`` folds into the snapshot in one
synchronous step. When the log cannot tell what changed (a TRUNCATE, a 'P'
entry saying that entries after our version were pruned, a log that ends
before our version, a very large batch) it returns ``NeedsReload`` and the
caller does a full load instead.

Never mutates a snapshot while awaiting: everything is fetched first, and
``apply`` does not await, so the asyncio SMTP sessions see either the whole
batch or none of it.

Why ``in_progress``: log ids come from a sequence at write time, but
transactions commit in any order, so after we applied up to id 11, id 10 may
still become visible (its transaction was in progress when we read). Every
transaction that can still add an entry with an id at or below our version
was in progress in the snapshot we read it with (a later one draws its ids
later); we remember those transaction ids and read their entries again
(``txid = ANY(...)``) until they are over. No writer ever waits on a lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import asyncpg

from mxgate.core.snapshot import RoutingData
from mxgate.directory.fold import Column, replace_groups
from mxgate.directory.queries import BY_NAME, CHANGES, POSITION


@dataclass(frozen=True, slots=True)
class NeedsReload:
    """The change log cannot bring the snapshot up to date; load it whole."""

    reason: str


@dataclass(frozen=True, slots=True)
class Batch:
    """Fresh rows for every key group changed since the previous version.

    groups: table -> (folded keys to replace, columns of their current rows)
    """

    version: int
    in_progress: frozenset[int]
    entries: int = 0
    groups: Mapping[str, tuple[frozenset[str], list[Column]]] = field(default_factory=dict)

    def apply(self, data: RoutingData) -> None:
        """Replace the changed groups and bump the version. Never awaits."""
        for table, (wanted, columns) in self.groups.items():
            replace_groups(data, table, wanted, columns)
        data.version = self.version


@dataclass(frozen=True, slots=True)
class _Position:
    newest: int
    in_progress: frozenset[int]


async def _position(conn: asyncpg.Connection, timeout: float | None) -> _Position:
    row = await conn.fetchrow(POSITION, timeout=timeout)
    return _Position(int(row["newest"]), frozenset(row["in_progress"]))


def _unusable(position: _Position, version: int) -> str | None:
    if position.newest < version:
        return (
            f"change log ends at {position.newest}, before this snapshot's {version}"
            " (database restored or replaced?)"
        )
    return None


async def poll(
    conn: asyncpg.Connection,
    version: int,
    pending: frozenset[int],
    *,
    limit: int = 50_000,
    timeout: float | None = None,
) -> Batch | NeedsReload:
    """What changed after ``version``; ``pending`` as returned by the last poll or load.

    ``conn`` must not be inside a transaction.
    """
    # Fast path, one round trip: nothing new and every transaction we wait
    # for is still running, so none of its entries can be visible yet.
    position = await _position(conn, timeout)
    reason = _unusable(position, version)
    if reason is not None:
        return NeedsReload(reason)
    if position.newest == version and pending <= position.in_progress:
        return Batch(version=version, in_progress=position.in_progress)

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        position = await _position(conn, timeout)
        reason = _unusable(position, version)
        if reason is not None:
            return NeedsReload(reason)
        rows = await conn.fetch(CHANGES, version, list(pending), limit + 1, timeout=timeout)
        if len(rows) > limit:
            return NeedsReload(f"more than {limit} changes to apply")
        folded: dict[str, set[str]] = {}
        raw: dict[str, set[str]] = {}
        new_version = version
        for row in rows:
            new_version = max(new_version, int(row["id"]))
            table = str(row["table_name"])
            if row["op"] == "T":
                return NeedsReload(f"table {table} truncated")
            if row["op"] == "P":
                if int(row["new_key"]) > version:
                    return NeedsReload(f"change log pruned past this snapshot's version {version}")
                continue
            if table not in BY_NAME:
                continue  # written by a newer mxgate; nothing we route on
            for key in (row["old_key"], row["new_key"]):
                if key is not None:
                    folded.setdefault(table, set()).add(key.lower())
                    raw.setdefault(table, set()).add(key)
        groups: dict[str, tuple[frozenset[str], list[Column]]] = {}
        for table, keys in folded.items():
            spec = BY_NAME[table]
            found = await conn.fetch(
                spec.group_query, sorted(keys), sorted(raw[table]), timeout=timeout
            )
            columns: list[Column] = [list(c) for c in zip(*found, strict=True)] or [
                [] for _ in spec.columns
            ]
            groups[table] = (frozenset(keys), columns)
    return Batch(
        version=new_version, in_progress=position.in_progress, entries=len(rows), groups=groups
    )


async def prune(conn: asyncpg.Connection, keep_seconds: int) -> int:
    """Delete change-log entries older than ``keep_seconds`` (through the
    migration's ``mxgate_prune_change_log``, which leaves the 'P' entry that
    sends a gateway that was away longer to a full reload); how many went."""
    deleted = await conn.fetchval(
        "SELECT mxgate_prune_change_log(make_interval(secs => $1))", float(keep_seconds)
    )
    return int(deleted or 0)
