"""The database goes away: the holder keeps serving, a restart serves the cache."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

from mxgate.directory import SnapshotHolder, migrate
from mxgate.directory.cache import CacheFile
from mxgate.embedded import EmbeddedPostgres
from tests.directory.helpers import execute, make_tutorial, snap, wait_until

D = "server1.example.com"


def test_outage_keeps_the_snapshot_and_a_restart_serves_the_cache(
    own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    dsn = own_postgres.dsn("mx")
    cache = tmp_path / "state" / "snapshot"

    def gateway() -> SnapshotHolder:
        return SnapshotHolder(
            dsn,
            cache_path=cache,
            poll_interval=0.1,
            retry_min=0.05,
            retry_max=0.2,
            cache_delay=0.05,
        )

    def cached_version() -> int | None:
        found = CacheFile(cache).read()
        return found[0].version if found else None

    async def run() -> None:
        await execute(own_postgres.dsn(), "CREATE DATABASE mx")
        await make_tutorial(dsn)
        await migrate(dsn)
        holder = gateway()
        await holder.start()
        try:
            await execute(
                dsn, f"INSERT INTO mailbox (email, password, node) VALUES ('ann@{D}', 'x', 'm')"
            )
            await wait_until(lambda: f"ann@{D}" in snap(holder).mailboxes)
            await wait_until(lambda: cached_version() == 1, timeout=2.0)
            before = copy.deepcopy(holder.current)

            await asyncio.to_thread(own_postgres.stop)
            await wait_until(lambda: holder.status().last_error is not None, timeout=3.0)
            status = holder.status()
            assert not status.connected
            assert status.source == "database"
            assert holder.current == before  # still answering as before

            # A restart while the database is still down serves the disk cache.
            restarted = gateway()
            await restarted.start()
            try:
                assert restarted.current == before
                status = restarted.status()
                assert status.source == "disk-cache"
                assert status.version == 1
                assert status.cache_saved_at is not None
                assert status.last_error is not None

                # The database returns: both catch up, and see new edits.
                await asyncio.to_thread(own_postgres.start)
                await execute(dsn, f"INSERT INTO relay (source, node) VALUES ('bob@{D}', 'm')")
                await wait_until(
                    lambda: (
                        f"bob@{D}" in snap(holder).relays and f"bob@{D}" in snap(restarted).relays
                    ),
                    timeout=5.0,
                )
                for h in (holder, restarted):
                    status = h.status()
                    assert status.source == "database"
                    assert status.connected
                    assert status.last_error is None
                    assert status.version == 2
            finally:
                await restarted.stop()
        finally:
            await holder.stop()

    asyncio.run(run())
