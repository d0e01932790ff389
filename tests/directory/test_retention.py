"""The change log's retention on a real PostgreSQL: what is pruned, what the
gateway's timer does with a database that is down or not migrated."""

from __future__ import annotations

import asyncio

import asyncpg

from mxgate.directory import migrate
from mxgate.directory.changes import NeedsReload, poll
from mxgate.directory.retention import keep_pruning, prune_change_log
from tests.directory.helpers import closed_port_dsn, make_tutorial


async def _three_edits_two_old(dsn: str) -> None:
    await make_tutorial(dsn, data=False)
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        for n in range(3):
            await conn.execute(f"INSERT INTO domain (domain) VALUES ('d{n}.example')")
        await conn.execute(
            "UPDATE mxgate_change_log SET changed_at = now() - interval '2 days' WHERE id <= 2"
        )
    finally:
        await conn.close()


def test_old_entries_go_and_a_gateway_behind_them_reloads(database_url: str) -> None:
    async def run() -> None:
        await _three_edits_two_old(database_url)
        assert await prune_change_log(database_url, 86400) == 2
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT id, op, new_key FROM mxgate_change_log ORDER BY id")
            assert [(r["id"], r["op"]) for r in rows] == [(3, "I"), (4, "P")]
            assert rows[1]["new_key"] == "2"  # deleted through id 2
            # A gateway that had applied id 1 cannot know what id 2 was: reload.
            behind = await poll(conn, 1, frozenset())
            assert isinstance(behind, NeedsReload)
            # One that had applied id 2 goes on incrementally.
            assert not isinstance(await poll(conn, 2, frozenset()), NeedsReload)
        finally:
            await conn.close()
        assert await prune_change_log(database_url, 86400) == 0  # nothing more is old

    asyncio.run(run())


def test_a_database_without_change_log_has_nothing_to_prune(database_url: str) -> None:
    async def run() -> None:
        await make_tutorial(database_url, data=False)  # the tutorial's tables, not migrated
        assert await prune_change_log(database_url, 86400) is None
        lines: list[str] = []
        stop = asyncio.Event()
        await asyncio.wait_for(
            keep_pruning(database_url, 86400, lines.append, stop, interval=0.01, first_delay=0),
            timeout=10,
        )  # ends by itself: there is no change log to keep small
        assert lines == ["no change log in the database (run mxgate db migrate); nothing to prune"]

    asyncio.run(run())


def test_the_timer_prunes_retries_after_errors_and_stops(database_url: str) -> None:
    async def run() -> None:
        await _three_edits_two_old(database_url)
        lines: list[str] = []
        stop = asyncio.Event()
        task = asyncio.create_task(
            keep_pruning(database_url, 86400, lines.append, stop, interval=0.05, first_delay=0)
        )
        for _ in range(200):
            if lines:
                break
            await asyncio.sleep(0.01)
        assert lines == ["change log: 2 entries older than 86400 s deleted"]
        await asyncio.sleep(0.2)  # later runs find nothing old: no more lines
        assert len(lines) == 1
        stop.set()
        await asyncio.wait_for(task, timeout=5)

        down: list[str] = []
        stop = asyncio.Event()
        task = asyncio.create_task(
            keep_pruning(closed_port_dsn(), 86400, down.append, stop, interval=0.05, first_delay=0)
        )
        for _ in range(500):
            if len(down) >= 2:
                break
            await asyncio.sleep(0.01)
        assert len(down) >= 2  # it said so, and tried again
        assert all(line.startswith("warning: change log not pruned: ") for line in down)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(run())
