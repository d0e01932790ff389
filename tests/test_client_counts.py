"""The connection counts the SMTP workers share (client_counts.py): rows per
worker process, sums over rows, rows cleared when lent and given back."""

from __future__ import annotations

import subprocess
import sys
import zlib

import pytest

from mxgate.client_counts import (
    BUCKETS,
    ClientCounts,
    ClientTable,
    LocalCounts,
    bucket,
    parse_spec,
)


@pytest.fixture
def table() -> ClientTable:
    return ClientTable(rows=4)


def test_counts_of_every_row_add_up(table: ClientTable) -> None:
    first, second = table.take(), table.take()
    assert first is not None and second is not None and first != second
    a = ClientCounts(table.fd, first, table.rows)
    b = ClientCounts(table.fd, second, table.rows)
    for _ in range(3):
        a.add("192.0.2.1")
    b.add("192.0.2.1")
    b.add("2001:db8::1")
    assert a.count("192.0.2.1") == b.count("192.0.2.1") == 4
    assert a.count("2001:db8::1") == 1
    a.remove("192.0.2.1")
    assert b.count("192.0.2.1") == 3
    assert a.count("198.51.100.7") == 0  # another bucket


def test_removing_never_goes_below_zero(table: ClientTable) -> None:
    row = table.take()
    assert row is not None
    counts = ClientCounts(table.fd, row, table.rows)
    counts.remove("192.0.2.1")
    counts.add("192.0.2.1")
    assert counts.count("192.0.2.1") == 1


def test_a_row_given_back_is_cleared_and_lent_again(table: ClientTable) -> None:
    rows = [table.take() for _ in range(4)]
    assert sorted(r for r in rows if r is not None) == [0, 1, 2, 3]
    assert table.take() is None  # all lent: that worker counts alone
    gone = ClientCounts(table.fd, 2, table.rows)
    for _ in range(5):
        gone.add("192.0.2.1")
    reader = ClientCounts(table.fd, 0, table.rows)
    assert reader.count("192.0.2.1") == 5
    table.give_back(2)  # its process exited: its connections with it
    assert reader.count("192.0.2.1") == 0
    assert table.take() == 2


def test_the_bucket_is_the_same_in_every_process() -> None:
    """Python's str hash is salted per process; the bucket must not be."""
    code = "from mxgate.client_counts import bucket; print(bucket('192.0.2.1'))"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert int(other) == bucket("192.0.2.1") == zlib.crc32(b"192.0.2.1") % BUCKETS


def test_a_worker_in_another_process_sees_the_counts(table: ClientTable) -> None:
    row = table.take()
    assert row is not None
    mine = ClientCounts(table.fd, row, table.rows)
    mine.add("192.0.2.9")
    other_row = table.take()
    code = (
        "import sys; from mxgate.client_counts import ClientCounts;"
        f"c = ClientCounts({table.fd}, {other_row}, {table.rows});"
        "print(c.count('192.0.2.9')); c.add('192.0.2.9')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        pass_fds=(table.fd,),
    ).stdout
    assert int(out) == 1
    assert mine.count("192.0.2.9") == 2


@pytest.mark.parametrize("spec", ["3:0:4", "10:3:4"])
def test_parse_spec(spec: str) -> None:
    assert parse_spec(spec) == tuple(int(x) for x in spec.split(":"))


@pytest.mark.parametrize(
    "spec", ["", "3", "3:4:4", "3:-1:4", "-1:0:4", "3:0:0", "a:b:c", "1:2:3:4"]
)
def test_parse_spec_refuses_garbage(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_spec(spec)


def test_local_counts_count_this_workers_connections() -> None:
    counts = LocalCounts()
    counts.add("192.0.2.1")
    counts.add("192.0.2.1")
    counts.remove("192.0.2.1")
    counts.remove("198.51.100.7")  # never added: no negative count
    assert (counts.count("192.0.2.1"), counts.count("198.51.100.7")) == (1, 0)
    counts.remove("192.0.2.1")
    assert counts.count("192.0.2.1") == 0
