"""SRS keys in PostgreSQL: the first key, rotation, pruning, and the holder
that follows them (NOTIFY, polling, the disk copy when the database is down)."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import asyncpg
import pytest

from mxgate.core.srs_keys import SrsKeyRing
from mxgate.directory import (
    DirectoryError,
    SrsKeyCache,
    SrsKeyHolder,
    load_keys,
    migrate,
    rotate,
)
from tests.directory.helpers import closed_port_dsn, make_tutorial


async def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_migration_makes_one_random_key(pg_server, database_url: str) -> None:
    other = pg_server.create_database()
    try:

        async def run() -> tuple[SrsKeyRing, SrsKeyRing]:
            await migrate(database_url)
            await migrate(other)
            await migrate(database_url)  # idempotent: still one key
            return await load_keys(database_url), await load_keys(other)

        one, two = asyncio.run(run())
    finally:
        pg_server.drop_database(other)
    [key] = one.keys
    assert one.source == "database" and one.is_current(time.time())
    assert len(key.secret) == 64 and int(key.secret, 16) > 0
    assert key.retired_at is None and key.signs_from <= time.time() + 1
    assert two.keys[0].secret != key.secret  # random per database
    assert one.signing_key(time.time()) == key


def test_rotation_signs_with_the_new_key_and_retires_the_old_one(database_url: str) -> None:
    async def run() -> None:
        await migrate(database_url)
        [first] = (await load_keys(database_url)).keys
        done = await rotate(database_url, delay=0, grace=3600)
        assert done.retired == 1 and done.pruned == ()
        ring = await load_keys(database_url)
        old, new = ring.keys
        assert old.id == first.id and new.id == done.key_id
        assert old.retired_at == pytest.approx(new.signs_from)
        now = time.time()
        assert ring.signing_key(now) == new
        assert {k.id for k in ring.verifying(now, 3600)} == {old.id, new.id}
        assert {k.id for k in ring.verifying(new.signs_from + 3601, 3600)} == {new.id}

        # With a delay, the old key keeps signing until the new one starts.
        later = await rotate(database_url, delay=300, grace=3600)
        ring = await load_keys(database_url)
        signing = ring.signing_key(time.time())
        assert signing is not None and signing.id == new.id
        after = ring.signing_key(later.signs_from + 1)
        assert after is not None and after.id == later.key_id

        # A rotation deletes the keys whose grace period is over.
        await asyncio.sleep(0.05)
        pruned = await rotate(database_url, delay=0, grace=0)
        # The first key retired long enough ago; the second retires only when
        # the third was to start signing (in five minutes), which now never signs.
        assert pruned.pruned == (first.id,)
        ring = await load_keys(database_url)
        assert [k.id for k in ring.keys] == [new.id, later.key_id, pruned.key_id]
        for moment in (time.time(), later.signs_from + 1):
            signing = ring.signing_key(moment)
            assert signing is not None and signing.id == pruned.key_id

    asyncio.run(run())


def test_an_unmigrated_database_has_no_keys_and_cannot_rotate(database_url: str) -> None:
    async def run() -> None:
        await make_tutorial(database_url)
        ring = await load_keys(database_url)
        assert ring.keys == () and ring.loaded
        with pytest.raises(DirectoryError, match="db migrate"):
            await rotate(database_url, delay=0, grace=0)
        await migrate(database_url)
        with pytest.raises(DirectoryError, match="16 characters"):
            await rotate(database_url, delay=0, grace=0, secret="short")

    asyncio.run(run())


def test_the_holder_follows_rotations_and_keeps_a_private_disk_copy(
    database_url: str, tmp_path: Path
) -> None:
    cache = tmp_path / "state" / "srs-keys.cache"

    async def run() -> None:
        await migrate(database_url)
        holder = SrsKeyHolder(database_url, cache_path=cache, poll_interval=60)
        await holder.start()
        try:
            assert holder.ring.source == "database" and len(holder.ring.keys) == 1
            await wait_for(cache.exists)
            assert stat.S_IMODE(cache.stat().st_mode) == 0o600
            done = await rotate(database_url, delay=0, grace=3600)
            # NOTIFY wakes the holder long before its 60 s poll.
            await wait_for(lambda: len(holder.ring.keys) == 2)
            signing = holder.ring.signing_key(time.time())
            assert signing is not None and signing.id == done.key_id
            await wait_for(lambda: len((SrsKeyCache(cache).read() or SrsKeyRing()).keys) == 2)
        finally:
            await holder.stop()

        # The database is down: the disk copy, marked as such (not current).
        down = SrsKeyHolder(closed_port_dsn(), cache_path=cache, retry_max=0.1)
        await down.start()
        try:
            ring = down.ring
            assert ring.source == "disk-cache" and len(ring.keys) == 2
            assert not ring.is_current(time.time())
        finally:
            await down.stop()
        nothing = SrsKeyHolder(closed_port_dsn(), cache_path=tmp_path / "none", retry_max=0.1)
        await nothing.start()
        try:
            assert not nothing.ring.loaded and nothing.last_error is not None
        finally:
            await nothing.stop()

    asyncio.run(run())


def test_the_holder_polls_when_no_notify_comes(database_url: str) -> None:
    async def run() -> None:
        await migrate(database_url)
        holder = SrsKeyHolder(database_url, poll_interval=0.2)
        await holder.start()
        try:
            synced = holder.ring.synced_at
            conn = await asyncpg.connect(database_url)
            try:
                # A trigger-less change (as on a replica: no NOTIFY reaches us).
                await conn.execute("ALTER TABLE mxgate_srs_key DISABLE TRIGGER USER")
                await conn.execute(
                    "INSERT INTO mxgate_srs_key (secret) VALUES ('a key inserted by hand')"
                )
            finally:
                await conn.close()
            await wait_for(lambda: len(holder.ring.keys) == 2)
            assert (holder.ring.synced_at or 0) > (synced or 0)
        finally:
            await holder.stop()

    asyncio.run(run())


def test_a_damaged_key_cache_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "srs-keys.cache"
    for text in ("", "{", '{"format": "other"}', '{"format": "mxgate-srs-keys-1"}'):
        path.write_text(text)
        assert SrsKeyCache(path).read() is None
    assert SrsKeyCache(tmp_path / "missing").read() is None
