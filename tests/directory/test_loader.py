"""Full loads: tutorial data, key folding, COPY parsing, example data."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from mxgate.core.snapshot import RoutingData
from mxgate.directory import (
    NotEmptyError,
    is_empty,
    load_example_data,
    load_snapshot,
    migrate,
)
from mxgate.directory.fold import fold_single, parse_copy
from tests.directory.helpers import make_tutorial

TUTORIAL = RoutingData(
    domains={"server1.example.com": "maila", "other.example.com": "maila"},
    mailboxes={"james@server1.example.com": "maila"},
    relays={"david@server1.example.com": "maila", "@other.example.com": "maila"},
    forwards={"@server1.example.com": ("james@example.com",)},
    transports={"server1.example.com": {"": "smtp:[10.0.0.2]"}},
    version=0,
)


def test_loads_an_unmigrated_tutorial_database(database_url: str) -> None:
    async def run() -> RoutingData:
        await make_tutorial(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            return await load_snapshot(conn)
        finally:
            await conn.close()

    assert asyncio.run(run()) == TUTORIAL


def test_folds_case_merges_forwards_and_reads_the_change_log_position(database_url: str) -> None:
    async def run() -> RoutingData:
        await make_tutorial(database_url)
        await migrate(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                """
                INSERT INTO domain (domain, node) VALUES ('Third.Example.COM', NULL);
                INSERT INTO mailbox (email, password, node) VALUES
                    ('Ann@Third.example.com', 'x', 'upper'),
                    ('ann@third.example.com', 'x', 'lower'),
                    ('BOB@third.example.com', 'x', 'b2'),
                    ('Bob@third.example.com', 'x', 'b1');
                INSERT INTO forward (source, destination) VALUES
                    ('list@third.example.com', 'z@example.net'),
                    ('List@Third.example.com', 'a@example.net, b@example.net'),
                    ('odd@third.example.com', E'tab\\there\\\\back\\nline'),
                    ('empty@third.example.com', '');
                INSERT INTO transport (domain, transport, node) VALUES
                    ('Third.Example.COM', 'smtp:[10.0.0.3]', ''),
                    ('third.example.com', 'lmtp:[10.0.0.4]:24', 'maila');
                """
            )
            return await load_snapshot(conn)
        finally:
            await conn.close()

    data = asyncio.run(run())
    assert data.version == 11
    assert data.domains["third.example.com"] is None
    # The row already in lower case wins; otherwise the smallest raw key.
    assert data.mailboxes["ann@third.example.com"] == "lower"
    assert data.mailboxes["bob@third.example.com"] == "b2"
    assert data.forwards["list@third.example.com"] == (
        "a@example.net, b@example.net",
        "z@example.net",
    )
    assert data.forwards["odd@third.example.com"] == ("tab\there\\back\nline",)
    assert data.forwards["empty@third.example.com"] == ("",)
    assert data.transports["third.example.com"] == {
        "": "smtp:[10.0.0.3]",
        "maila": "lmtp:[10.0.0.4]:24",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", [[], []]),
        ("a\tb\nc\td\n", [["a", "c"], ["b", "d"]]),
        ("a\t\\N\n", [["a"], [None]]),
        ("a\\tb\tc\\\\d\\ne\n", [["a\tb"], ["c\\d\ne"]]),
        ("\\101\\x42\tx\\r\n", [["AB"], ["x\r"]]),
        ("a\t\n", [["a"], [""]]),
    ],
)
def test_parse_copy(text: str, expected: list[list[str | None]]) -> None:
    assert parse_copy(text, 2) == expected


def test_parse_copy_refuses_a_wrong_column_count() -> None:
    with pytest.raises(ValueError, match="columns"):
        parse_copy("a\tb\tc\n", 2)
    with pytest.raises(ValueError, match="columns"):
        parse_copy("a\tb\\\\\tc\n", 2)


def test_fold_single_is_independent_of_row_order() -> None:
    keys = ["X@d", "x@D", "x@d", "Y@d"]
    values = ["1", "2", "3", "4"]
    forward = fold_single(keys, values)
    backward = fold_single(keys[::-1], values[::-1])
    assert forward == backward == {"x@d": "3", "y@d": "4"}


def test_example_data_goes_into_an_empty_database_only(database_url: str) -> None:
    async def run() -> RoutingData:
        await migrate(database_url)
        conn = await asyncpg.connect(database_url)
        try:
            assert await is_empty(conn)
            await load_example_data(conn)
            assert not await is_empty(conn)
            with pytest.raises(NotEmptyError):
                await load_example_data(conn)
            assert await conn.fetchval("SELECT count(*) FROM domain") == 2
            return await load_snapshot(conn)
        finally:
            await conn.close()

    data = asyncio.run(run())
    data.version = 0
    # The tutorial's data, but its mailbox server is on this machine (example.py).
    example_transports = {"server1.example.com": {"": "smtp:[127.0.0.1]:2526"}}
    assert data == RoutingData(
        domains=TUTORIAL.domains,
        mailboxes=TUTORIAL.mailboxes,
        relays=TUTORIAL.relays,
        forwards=TUTORIAL.forwards,
        transports=example_transports,
    )


def test_is_empty_on_a_database_without_tables(database_url: str) -> None:
    async def run() -> bool:
        conn = await asyncpg.connect(database_url)
        try:
            return await is_empty(conn)
        finally:
            await conn.close()

    assert asyncio.run(run())
