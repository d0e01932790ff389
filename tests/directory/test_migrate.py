"""Migrations: tutorial upgrade in place, fresh creation, idempotence, status, grants."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from mxgate.directory import (
    DirectoryError,
    MigrationError,
    grant_statements,
    load_snapshot,
    migrate,
    status,
)
from mxgate.directory.migrate import migrations
from tests.directory.helpers import (
    TABLES,
    all_rows,
    as_user,
    closed_port_dsn,
    execute,
    make_tutorial,
    schema_dump,
)

ALL = ["0001_routing_tables", "0002_change_capture", "0003_srs_keys"]
SHA512_CRYPT = "{SHA512-CRYPT}$6$" + "s" * 16 + "$" + "h" * 86


def test_shipped_migrations_are_numbered_in_order() -> None:
    assert [m.name for m in migrations()] == ALL
    assert [m.version for m in migrations()] == [1, 2, 3]


def test_tutorial_database_upgrades_in_place(database_url: str) -> None:
    async def run() -> None:
        await make_tutorial(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            before = await all_rows(conn)
            assert await migrate(conn) == ALL
            assert await all_rows(conn) == before

            # Now possible: several forward rows for one source, a gateway
            # row and a node row for one transport domain, real hashes,
            # RFC 5321-sized names.
            await conn.execute(
                "INSERT INTO forward (source, destination)"
                " VALUES ('@server1.example.com', 'other@example.net')"
            )
            await conn.execute(
                "INSERT INTO transport (domain, transport, node)"
                " VALUES ('server1.example.com', 'lmtp:[127.0.0.1]:24', 'maila')"
            )
            await conn.execute(
                "UPDATE mailbox SET password = $1 WHERE email = 'james@server1.example.com'",
                SHA512_CRYPT,
            )
            long_domain = ".".join(["a" * 63] * 3) + "." + "b" * 61  # 253 octets
            await conn.execute("INSERT INTO domain (domain) VALUES ($1)", long_domain)
            long_address = "x" * 64 + "@" + long_domain[: 254 - 65]
            await conn.execute(
                "INSERT INTO mailbox (email, password, node) VALUES ($1, 'x', 'maila')",
                long_address,
            )
            # A transport row without a node is a gateway row, as before.
            await conn.execute(
                "INSERT INTO transport (domain, transport) VALUES ('other.example.com', 'relay:')"
            )
            assert (
                await conn.fetchval("SELECT node FROM transport WHERE domain = 'other.example.com'")
                == ""
            )

            # The keys still refuse true duplicates.
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO forward (source, destination)"
                    " VALUES ('@server1.example.com', 'james@example.com')"
                )
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.execute(
                    "INSERT INTO transport (domain, transport, node)"
                    " VALUES ('server1.example.com', 'smtp:[10.0.0.9]', '')"
                )
            with pytest.raises(asyncpg.NotNullViolationError):
                await conn.execute(
                    "INSERT INTO transport (domain, transport, node) VALUES ('x', 'smtp:', NULL)"
                )
        finally:
            await conn.close()

    asyncio.run(run())


def test_fresh_and_upgraded_schemas_are_identical(pg_server, database_url: str) -> None:
    """An empty database migrated and a tutorial one upgraded end up the same."""
    other = pg_server.create_database()
    try:

        async def run() -> None:
            await make_tutorial(database_url, data=False)
            assert await migrate(database_url) == ALL
            assert await migrate(other) == ALL
            a = await asyncpg.connect(database_url)
            b = await asyncpg.connect(other)
            try:
                assert await schema_dump(a) == await schema_dump(b)
                assert {t[0] for t in (await schema_dump(b))["columns"]} == {
                    *TABLES,
                    "mxgate_change_log",
                    "mxgate_schema_version",
                    "mxgate_srs_key",
                }
            finally:
                await a.close()
                await b.close()

        asyncio.run(run())
    finally:
        pg_server.drop_database(other)


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    async def run() -> None:
        await make_tutorial(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
            schema, rows = await schema_dump(conn), await all_rows(conn)
            versions = await conn.fetch("SELECT * FROM mxgate_schema_version ORDER BY version")
            assert await migrate(conn) == []
            assert await schema_dump(conn) == schema
            assert await all_rows(conn) == rows
            assert await conn.fetch("SELECT * FROM mxgate_schema_version ORDER BY version") == (
                versions
            )
            # Each file is also re-runnable on its own (someone may run one by
            # hand): its catalog checks make the second run a no-op.
            log_before = await conn.fetchval("SELECT count(*) FROM mxgate_change_log")
            for migration in migrations():
                await conn.execute(migration.sql)
            assert await schema_dump(conn) == schema
            assert await all_rows(conn) == rows
            assert await conn.fetchval("SELECT count(*) FROM mxgate_change_log") == log_before
        finally:
            await conn.close()

    asyncio.run(run())


def test_concurrent_migrations_are_serialised(database_url: str) -> None:
    async def run() -> None:
        await make_tutorial(database_url)
        results = await asyncio.gather(migrate(database_url), migrate(database_url))
        assert sorted(results, key=len) == [[], ALL]
        st = await status(database_url)
        assert st.applied == tuple(ALL)
        assert st.pending == ()

    asyncio.run(run())


def test_status_reports_pending_and_applied(database_url: str) -> None:
    async def run() -> None:
        empty = await status(database_url)
        assert empty.version == 0
        assert empty.pending == tuple(ALL)
        assert set(empty.missing_tables) == set(TABLES)
        assert not empty.tutorial
        assert not empty.change_capture

        await make_tutorial(database_url)
        tutorial = await status(database_url)
        assert tutorial.tutorial
        assert tutorial.missing_tables == ()
        assert tutorial.pending == tuple(ALL)
        assert tutorial.row_counts == {
            "domain": 2,
            "forward": 1,
            "relay": 2,
            "mailbox": 1,
            "transport": 1,
        }

        await migrate(database_url)
        done = await status(database_url)
        assert done.version == 3
        assert done.applied == tuple(ALL)
        assert done.pending == ()
        assert done.modified == ()
        assert not done.tutorial
        assert done.change_capture
        assert done.row_counts["mailbox"] == 1
        assert done.row_counts["mxgate_change_log"] == 0
        assert done.row_counts["mxgate_srs_key"] == 1  # the first SRS key

    asyncio.run(run())


def test_failed_migration_leaves_the_database_as_it_was(database_url: str) -> None:
    async def run() -> None:
        # A view on mailbox.password blocks ALTER COLUMN TYPE: the migration
        # fails, names its file, and leaves nothing half-done.
        await make_tutorial(database_url)
        await execute(database_url, "CREATE VIEW v AS SELECT password FROM mailbox")
        with pytest.raises(MigrationError, match="0001_routing_tables"):
            await migrate(database_url)
        st = await status(database_url)
        assert st.tutorial
        assert st.applied == ()

    asyncio.run(run())


def test_row_changes_are_logged_and_only_routing_columns_count(database_url: str) -> None:
    async def run() -> None:
        await make_tutorial(database_url)
        await migrate(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE mailbox SET password = 'new', quota = 1, comment = 'c'")
            assert await conn.fetchval("SELECT count(*) FROM mxgate_change_log") == 0
            await conn.execute(
                "UPDATE mailbox SET email = 'jim@server1.example.com', node = 'mailb'"
            )
            await conn.execute("DELETE FROM relay WHERE source = '@other.example.com'")
            await conn.execute("INSERT INTO domain (domain) VALUES ('Third.Example.com')")
            await conn.execute("TRUNCATE forward")
            logged = [
                tuple(r)
                for r in await conn.fetch(
                    "SELECT table_name, op, old_key, new_key FROM mxgate_change_log ORDER BY id"
                )
            ]
            assert logged == [
                ("mailbox", "U", "james@server1.example.com", "jim@server1.example.com"),
                ("relay", "D", "@other.example.com", None),
                ("domain", "I", None, "Third.Example.com"),
                ("forward", "T", None, None),
            ]
            pruned = await conn.fetchval("SELECT mxgate_prune_change_log(interval '0 seconds')")
            assert pruned == 4
            assert [
                tuple(r) for r in await conn.fetch("SELECT op, new_key FROM mxgate_change_log")
            ] == [("P", "4")]
        finally:
            await conn.close()

    asyncio.run(run())


def test_read_only_role_can_serve_and_writers_need_no_log_privilege(
    pg_server, database_url: str
) -> None:
    reader = f"mxgate_reader_{os.getpid()}"
    writer = f"mxgate_writer_{os.getpid()}"

    async def run() -> None:
        await make_tutorial(database_url)
        await migrate(database_url)
        await execute(
            database_url,
            f'CREATE ROLE "{reader}" LOGIN',
            f'CREATE ROLE "{writer}" LOGIN',
            *grant_statements(reader),
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON mailbox TO "{writer}"',
        )
        as_reader = await asyncpg.connect(as_user(database_url, reader))
        as_writer = await asyncpg.connect(as_user(database_url, writer))
        try:
            data = await load_snapshot(as_reader)
            assert data.mailboxes == {"james@server1.example.com": "maila"}
            assert (await status(as_reader)).applied == tuple(ALL)
            assert len(await as_reader.fetch("SELECT secret FROM mxgate_srs_key")) == 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_reader.fetch("SELECT password FROM mailbox")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await as_reader.execute("DELETE FROM domain")
            await as_writer.execute(
                "INSERT INTO mailbox (email, password, node)"
                " VALUES ('w@server1.example.com', 'x', 'maila')"
            )
            assert (await load_snapshot(as_reader)).version == 1
        finally:
            await as_reader.close()
            await as_writer.close()
            await execute(
                database_url,
                f'DROP OWNED BY "{reader}", "{writer}"',
                f'DROP ROLE "{reader}"',
                f'DROP ROLE "{writer}"',
            )

    asyncio.run(run())


def test_grant_statements_quote_names() -> None:
    statements = grant_statements('gate"way', schema="mail")
    assert statements[0] == 'GRANT USAGE ON SCHEMA "mail" TO "gate""way";'
    assert all(s.endswith('TO "gate""way";') for s in statements)
    assert not any("INSERT" in s or "UPDATE" in s or "password" in s for s in statements)


def test_unreachable_database_is_a_directory_error() -> None:
    dsn = closed_port_dsn()
    for operation in (migrate, status, load_snapshot):
        with pytest.raises(DirectoryError, match="Error"):
            asyncio.run(operation(dsn))
