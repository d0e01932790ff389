"""SnapshotHolder against a live database: edits by plain SQL reach it within a second."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from mxgate.core.snapshot import RoutingData
from mxgate.directory import SnapshotHolder, load_snapshot, migrate
from mxgate.directory.cache import CacheFile
from mxgate.directory.changes import NeedsReload, poll
from tests.directory.helpers import closed_port_dsn, execute, make_tutorial, snap, wait_until

D = "server1.example.com"
Check = Callable[[RoutingData], bool]

# (SQL run by an administrator, what the gateway must then see)
EDITS: list[tuple[str, Check]] = [
    (
        f"INSERT INTO mailbox (email, password, node) VALUES ('Mary@{D.upper()}', 'x', 'maila')",
        lambda d: d.mailboxes.get(f"mary@{D}") == "maila",
    ),
    (
        f"UPDATE mailbox SET node = 'mailb' WHERE email = 'Mary@{D.upper()}'",
        lambda d: d.mailboxes.get(f"mary@{D}") == "mailb",
    ),
    (  # an UPDATE that changes the key: the old group goes, the new one comes
        f"UPDATE mailbox SET email = 'maria@{D}' WHERE email = 'Mary@{D.upper()}'",
        lambda d: f"mary@{D}" not in d.mailboxes and d.mailboxes.get(f"maria@{D}") == "mailb",
    ),
    (
        f"DELETE FROM mailbox WHERE email = 'maria@{D}'",
        lambda d: f"maria@{D}" not in d.mailboxes,
    ),
    (  # a case variant of an existing mailbox: the lower-case row keeps winning
        f"INSERT INTO mailbox (email, password, node) VALUES ('James@{D}', 'x', 'variant')",
        lambda d: d.mailboxes.get(f"james@{D}") == "maila" and d.version == 5,
    ),
    (
        f"DELETE FROM mailbox WHERE email = 'james@{D}'",
        lambda d: d.mailboxes.get(f"james@{D}") == "variant",
    ),
    (
        "INSERT INTO domain (domain, node) VALUES ('New.Example.ORG', NULL)",
        lambda d: "new.example.org" in d.domains and d.domains["new.example.org"] is None,
    ),
    (
        "UPDATE domain SET node = 'maila' WHERE domain = 'New.Example.ORG'",
        lambda d: d.domains.get("new.example.org") == "maila",
    ),
    (
        "DELETE FROM domain WHERE domain = 'other.example.com'",
        lambda d: "other.example.com" not in d.domains,
    ),
    (
        "INSERT INTO relay (source, node) VALUES ('@New.example.org', 'maila')",
        lambda d: d.relays.get("@new.example.org") == "maila",
    ),
    (
        "UPDATE relay SET source = 'postmaster@new.example.org' WHERE source = '@New.example.org'",
        lambda d: "@new.example.org" not in d.relays and "postmaster@new.example.org" in d.relays,
    ),
    (
        "DELETE FROM relay",
        lambda d: not d.relays,
    ),
    (  # several rows for one source, in one transaction
        f"INSERT INTO forward (source, destination) VALUES"
        f" ('list@{D}', 'b@example.net'), ('list@{D}', 'a@example.net')",
        lambda d: d.forwards.get(f"list@{D}") == ("a@example.net", "b@example.net"),
    ),
    (
        f"INSERT INTO forward (source, destination) VALUES ('LIST@{D}', 'c@example.net')",
        lambda d: (
            d.forwards.get(f"list@{D}") == ("a@example.net", "b@example.net", "c@example.net")
        ),
    ),
    (
        "UPDATE forward SET destination = 'z@example.net' WHERE destination = 'a@example.net'",
        lambda d: (
            d.forwards.get(f"list@{D}") == ("b@example.net", "c@example.net", "z@example.net")
        ),
    ),
    (
        f"UPDATE forward SET source = 'other@{D}' WHERE source = 'LIST@{D}'",
        lambda d: (
            d.forwards.get(f"list@{D}") == ("b@example.net", "z@example.net")
            and d.forwards.get(f"other@{D}") == ("c@example.net",)
        ),
    ),
    (
        f"DELETE FROM forward WHERE source = 'list@{D}'",
        lambda d: f"list@{D}" not in d.forwards,
    ),
    (  # a node row next to the gateway row of one domain
        f"INSERT INTO transport (domain, transport, node) VALUES ('{D}', 'lmtp:[::1]:24', 'maila')",
        lambda d: d.transports.get(D) == {"": "smtp:[10.0.0.2]", "maila": "lmtp:[::1]:24"},
    ),
    (
        f"UPDATE transport SET transport = 'smtp:[10.0.0.9]' WHERE domain = '{D}' AND node = ''",
        lambda d: d.transports[D][""] == "smtp:[10.0.0.9]",
    ),
    (
        f"UPDATE transport SET domain = '.Example.com' WHERE domain = '{D}' AND node = 'maila'",
        lambda d: (
            d.transports.get(D) == {"": "smtp:[10.0.0.9]"}
            and d.transports.get(".example.com") == {"maila": "lmtp:[::1]:24"}
        ),
    ),
    (
        f"DELETE FROM transport WHERE domain = '{D}'",
        lambda d: D not in d.transports,
    ),
]


async def migrated_tutorial(dsn: str) -> None:
    await make_tutorial(dsn)
    await migrate(dsn)


def test_sql_edits_reach_a_running_holder_within_a_second(database_url: str, tmp_path) -> None:
    async def run() -> None:
        await migrated_tutorial(database_url)
        conn = await asyncpg.connect(database_url)
        changes: list[int] = []
        # A long poll interval: only the NOTIFY wake-up can make it in time.
        holder = SnapshotHolder(
            database_url,
            cache_path=tmp_path / "snapshot",
            poll_interval=30.0,
            on_change=lambda d: changes.append(d.version),
        )
        await holder.start()
        try:
            assert holder.status().source == "database"
            assert holder.status().change_capture is True
            for sql, check in EDITS:
                await conn.execute(sql)

                def seen(check: Check = check) -> bool:
                    return check(snap(holder))

                await wait_until(seen, timeout=1.0)
            assert holder.current == await load_snapshot(conn)
            assert changes[0] == 0 and changes[-1] == snap(holder).version
        finally:
            await holder.stop()
            await conn.close()
        # The last change was written to the disk cache on stop.
        cached = CacheFile(tmp_path / "snapshot").read()
        assert cached is not None and cached[0] == holder.current

    asyncio.run(run())


def test_polling_alone_finds_changes_without_notify(database_url: str) -> None:
    """As on a replica: the log row arrives, the NOTIFY does not."""

    async def run() -> None:
        await migrated_tutorial(database_url)
        holder = SnapshotHolder(database_url, poll_interval=0.2)
        await holder.start()
        try:
            await execute(
                database_url,
                "SET session_replication_role = replica",  # no triggers: no NOTIFY
                f"INSERT INTO mailbox (email, password, node) VALUES ('quiet@{D}', 'x', 'maila')",
                f"INSERT INTO mxgate_change_log (table_name, op, new_key) "
                f"VALUES ('mailbox', 'I', 'quiet@{D}')",
            )
            await wait_until(lambda: f"quiet@{D}" in snap(holder).mailboxes, timeout=1.0)
        finally:
            await holder.stop()

    asyncio.run(run())


def test_a_transaction_committing_after_a_later_one_is_not_missed(database_url: str) -> None:
    async def run() -> None:
        await migrated_tutorial(database_url)
        early = await asyncpg.connect(database_url)
        late = await asyncpg.connect(database_url)
        holder = SnapshotHolder(database_url, poll_interval=0.1)
        await holder.start()
        try:
            slow = early.transaction()
            await slow.start()
            await early.execute(f"INSERT INTO relay (source, node) VALUES ('slow@{D}', 'maila')")
            await late.execute(f"INSERT INTO relay (source, node) VALUES ('fast@{D}', 'maila')")
            await wait_until(lambda: f"fast@{D}" in snap(holder).relays, timeout=1.0)
            assert snap(holder).version == 2  # past the id of the uncommitted row

            await slow.commit()
            await wait_until(lambda: f"slow@{D}" in snap(holder).relays, timeout=1.0)
        finally:
            await holder.stop()
            await early.close()
            await late.close()

    asyncio.run(run())


def test_truncate_triggers_a_full_reload(database_url: str, caplog) -> None:
    async def run() -> None:
        await migrated_tutorial(database_url)
        holder = SnapshotHolder(database_url)
        await holder.start()
        try:
            before = snap(holder)
            await execute(database_url, "TRUNCATE forward")
            await wait_until(lambda: not snap(holder).forwards, timeout=1.0)
            assert holder.current is not before  # swapped, not patched
            assert snap(holder).mailboxes == before.mailboxes
        finally:
            await holder.stop()

    with caplog.at_level(logging.INFO, logger="mxgate.directory"):
        asyncio.run(run())
    assert "table forward truncated" in caplog.text


def test_poll_asks_for_a_reload_when_the_log_cannot_tell(database_url: str) -> None:
    async def run() -> None:
        await migrated_tutorial(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            for n in range(3):
                await conn.execute(f"INSERT INTO domain (domain) VALUES ('d{n}.example')")
            assert not isinstance(await poll(conn, 1, frozenset()), NeedsReload)
            # Pruned: ids 1-3 are gone and a 'P' entry (id 4) says so.
            assert await conn.fetchval("SELECT mxgate_prune_change_log('0 seconds')") == 3
            pruned = await poll(conn, 2, frozenset())
            assert isinstance(pruned, NeedsReload) and "pruned" in pruned.reason
            caught_up = await poll(conn, 3, frozenset())
            assert not isinstance(caught_up, NeedsReload) and caught_up.version == 4
            ahead = await poll(conn, 7, frozenset())
            assert isinstance(ahead, NeedsReload) and "restored" in ahead.reason
            big = await poll(conn, 3, frozenset(), limit=0)
            assert isinstance(big, NeedsReload) and "more than" in big.reason
        finally:
            await conn.close()

    asyncio.run(run())


def test_unmigrated_database_is_reloaded_periodically(database_url: str) -> None:
    async def run() -> None:
        await make_tutorial(database_url)
        holder = SnapshotHolder(database_url, poll_interval=0.1, reload_interval=0.3)
        await holder.start()
        try:
            assert holder.status().change_capture is False
            assert snap(holder).version == 0
            await execute(database_url, "INSERT INTO domain (domain) VALUES ('late.example')")
            await wait_until(lambda: "late.example" in snap(holder).domains, timeout=1.0)
            # Migrating under a running gateway switches it to the change log.
            await migrate(database_url)
            await wait_until(lambda: holder.status().change_capture is True, timeout=1.0)
            await execute(database_url, "INSERT INTO domain (domain) VALUES ('later.example')")
            await wait_until(lambda: "later.example" in snap(holder).domains, timeout=1.0)
            assert snap(holder).version == 1
        finally:
            await holder.stop()

    asyncio.run(run())


def test_no_database_and_no_cache_means_no_snapshot(tmp_path: Path) -> None:
    async def run() -> None:
        holder = SnapshotHolder(closed_port_dsn(), cache_path=tmp_path / "none")
        await holder.start()
        try:
            assert holder.current is None
            st = holder.status()
            assert st.source == "none"
            assert st.version is None
            assert not st.connected
            assert st.last_error is not None
        finally:
            await holder.stop()
        assert not (tmp_path / "none").exists()

    asyncio.run(run())


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_cache_is_not_served(database_url: str, tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "snapshot"

    async def run() -> None:
        await migrated_tutorial(database_url)
        async with SnapshotHolder(database_url, cache_path=cache) as holder:
            await wait_until(lambda: cache.exists(), timeout=2.0)
            assert holder.current is not None
        blob = cache.read_bytes()
        cache.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else b"\0" * len(blob))
        async with SnapshotHolder(closed_port_dsn(), cache_path=cache) as offline:
            assert offline.current is None
            assert offline.status().source == "none"

    asyncio.run(run())
