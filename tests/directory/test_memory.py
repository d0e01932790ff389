"""A big snapshot kept cheap: COPY parsed in pieces, repeated values shared,
keys not copied, freed heap released, the snapshot out of the collector's way."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.core.snapshot import RoutingData
from mxgate.directory import SnapshotHolder, load_snapshot, loader, memory, migrate
from mxgate.directory.cache import decode, encode
from mxgate.directory.fold import CopyReader, build, fold_keys, parse_copy
from tests.directory.helpers import execute, make_tutorial


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Tests that freeze leave the collector as they found it."""
    yield
    gc.unfreeze()


# -- COPY in pieces --------------------------------------------------------------

FIELD = st.text(st.sampled_from(["a", "B", "é", "例", "\t", "\n", "\\", " ", "x"]), max_size=6)
ROWS = st.lists(st.tuples(FIELD, FIELD | st.none(), FIELD), max_size=20)


def copy_text(rows: list[tuple[str, str | None, str]]) -> str:
    """Rows as PostgreSQL's COPY text format writes them."""

    def field(value: str | None) -> str:
        if value is None:
            return "\\N"
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")

    return "".join("\t".join(map(field, row)) + "\n" for row in rows)


@settings(max_examples=300, deadline=None)
@given(ROWS, st.lists(st.integers(0, 400), max_size=8))
def test_pieces_cut_anywhere_parse_as_the_whole(
    rows: list[tuple[str, str | None, str]], cuts: list[int]
) -> None:
    text = copy_text(rows)
    raw = text.encode("utf-8")
    reader = CopyReader(3, shared_columns=(1, 2))
    start = 0
    for cut in sorted(c for c in cuts if c <= len(raw)):  # inside UTF-8 sequences too
        reader.feed(raw[start:cut])
        start = cut
    reader.feed(raw[start:])
    expected = [[row[i] for row in rows] for i in range(3)]
    assert parse_copy(text, 3) == expected
    assert reader.finish() == expected


def test_a_torn_last_row_is_refused() -> None:
    reader = CopyReader(2)
    reader.feed(b"a\tb\nc\t")
    with pytest.raises(ValueError, match="complete row"):
        reader.finish()


def test_repeated_values_become_one_object() -> None:
    reader = CopyReader(2, shared_columns=(1,))
    for n in range(3):
        reader.feed(f"user{n}@x.example\tmaila\n".encode())
    keys, nodes = reader.finish()
    assert len({id(v) for v in nodes}) == 1
    assert len({id(k) for k in keys}) == 3


def test_folding_keeps_lower_case_keys_and_copies_the_others() -> None:
    keys = ["a@x.example", "B@x.example", "ß@x.example"]
    folded = fold_keys(keys)
    assert folded == ["a@x.example", "b@x.example", "ß@x.example"]
    assert folded[0] is keys[0] and folded[2] is keys[2]


def test_a_built_snapshot_shares_node_names_and_transports() -> None:
    def copies(text: str, n: int) -> list[str | None]:
        return ["".join(text) for _ in range(n)]  # equal texts, distinct objects

    tables = {
        "domain": [["a.example", "b.example"], copies("maila", 2)],
        "mailbox": [[f"u{n}@a.example" for n in range(5)], copies("maila", 5)],
        "relay": [["@b.example"], copies("maila", 1)],
        "forward": [[], []],
        "transport": [["a.example", "b.example"], copies("", 2), copies("smtp:[10.0.0.1]", 2)],
    }
    data = build(tables, 7)  # type: ignore[arg-type]
    values = [*data.domains.values(), *data.mailboxes.values(), *data.relays.values()]
    assert len({id(v) for v in values}) == 1
    assert len({id(rows[""]) for rows in data.transports.values()}) == 1


def test_the_disk_cache_gives_back_shared_values() -> None:
    data = RoutingData(
        domains={"a.example": "".join("maila"), "b.example": None},
        mailboxes={f"u{n}@a.example": "".join("maila") for n in range(100)},
        transports={f"d{n}.example": {"": "".join("smtp:")} for n in range(100)},
    )
    decoded, _ = decode(b"".join(encode(data, 1.0)))
    assert decoded == data
    values = [*decoded.mailboxes.values(), decoded.domains["a.example"]]
    assert len({id(v) for v in values}) == 1
    assert len({id(rows[""]) for rows in decoded.transports.values()}) == 1


# -- the heap and the collector ------------------------------------------------------


def test_releasing_the_heap_is_safe_and_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    assert memory.release_freed_heap() is sys.platform.startswith("linux")
    memory._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert memory.release_freed_heap() is False
    finally:
        monkeypatch.undo()
        memory._malloc_trim.cache_clear()


def test_freezing_takes_what_is_alive_out_of_collections(unfrozen: None) -> None:
    kept = [[n] for n in range(1000)]
    memory.freeze_long_lived()
    assert gc.get_freeze_count() >= len(kept)
    memory.freeze_long_lived()  # again, as at the next full load: no error, still frozen
    assert gc.get_freeze_count() >= len(kept)


# -- against a database ----------------------------------------------------------------


def test_a_load_in_many_pieces_equals_one_in_a_single_piece(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> tuple[RoutingData, RoutingData]:
        await make_tutorial(database_url)
        await execute(
            database_url,
            """INSERT INTO mailbox (email, password, node)
               SELECT 'User' || g || '@server1.example.com', 'x', 'maila'
               FROM generate_series(1, 500) AS g""",
            """INSERT INTO forward (source, destination) VALUES
               ('odd@server1.example.com', E'tab\\there\\\\back\\nline, ü@例.example')""",
        )
        whole = await load_snapshot(database_url)
        monkeypatch.setattr(loader, "PIECE", 7)
        return whole, await load_snapshot(database_url)

    whole, pieces = asyncio.run(run())
    assert pieces == whole
    assert pieces.mailboxes["user500@server1.example.com"] == "maila"
    assert pieces.forwards["odd@server1.example.com"] == ("tab\there\\back\nline, ü@例.example",)
    assert len({id(v) for v in pieces.mailboxes.values()}) == 1


def test_the_holder_freezes_its_snapshot_after_a_full_load(
    database_url: str, unfrozen: None
) -> None:
    async def run() -> int:
        await make_tutorial(database_url)
        await migrate(database_url)
        gc.unfreeze()
        async with SnapshotHolder(database_url) as holder:
            assert holder.current is not None
            return gc.get_freeze_count()

    assert asyncio.run(run()) > 0


def test_a_snapshot_repr_gives_sizes_not_contents() -> None:
    """asyncio.run (Python 3.11) formats its task's result when it restores
    the SIGINT handler: for a snapshot of a million rows that was a 100 MB
    string, twice, at the end of every ``asyncio.run(load_snapshot(...))``."""
    data = RoutingData(mailboxes={f"u{n}@x.example": "maila" for n in range(10_000)}, version=9)
    assert repr(data) == (
        "RoutingData(version=9, domains=0, mailboxes=10000, relays=0, forwards=0, transports=0)"
    )

    async def load() -> RoutingData:
        return data

    assert asyncio.run(load()) is data
