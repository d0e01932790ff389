"""Retention of the change log: a running gateway deletes old entries itself.

The migration's triggers add an entry to ``mxgate_change_log`` for every edit,
and nothing else ever removes one, so without this the table grows for as
long as the database lives. The master calls ``mxgate_prune_change_log`` once
an hour (the first time a minute after it starts) with the configured
retention; a gateway that was away longer than that finds the 'P' entry the
function leaves and reloads in full (changes.py). Several gateways sharing a
database each prune: what one deleted, the others find gone.

Never raises for a database that is down or not migrated: it says so in the
log and tries again at the next hour.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from mxgate.directory.changes import prune
from mxgate.directory.connect import DirectoryError, connection

PRUNE_INTERVAL = 3600.0
FIRST_PRUNE_DELAY = 60.0


async def prune_change_log(dsn: str, keep_seconds: int) -> int | None:
    """Delete the entries older than ``keep_seconds``; how many, or None when
    the database has no change log (not migrated). Raises DirectoryError."""
    async with connection(dsn, "pruning the change log") as conn:
        try:
            return await prune(conn, keep_seconds)
        except asyncpg.UndefinedFunctionError:
            return None


async def keep_pruning(
    dsn: str,
    keep_seconds: int,
    log: Callable[[str], None],
    stop: asyncio.Event,
    *,
    interval: float = PRUNE_INTERVAL,
    first_delay: float = FIRST_PRUNE_DELAY,
) -> None:
    """Prune every ``interval`` seconds until ``stop`` is set."""
    delay = first_delay
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return
        delay = interval
        try:
            deleted = await prune_change_log(dsn, keep_seconds)
        except DirectoryError as exc:
            log(f"warning: change log not pruned: {exc}")
            continue
        if deleted is None:
            log("no change log in the database (run mxgate db migrate); nothing to prune")
            return
        if deleted:
            log(f"change log: {deleted} entries older than {keep_seconds} s deleted")
