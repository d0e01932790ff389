"""``mxgate db status``'s text (the database side is in tests/directory/test_migrate.py)."""

from __future__ import annotations

from mxgate.cli.db import describe
from mxgate.directory.migrate import SchemaStatus


def test_row_counts_stand_in_one_column_after_the_longest_table_name() -> None:
    status = SchemaStatus(
        version=3,
        applied=("0001_routing_tables",),
        pending=(),
        modified=(),
        tutorial=False,
        missing_tables=(),
        change_capture=True,
        row_counts={"domain": 2, "mxgate_change_log": 7, "mxgate_srs_key": 1},
    )
    rows = [line for line in describe(status) if line.startswith("rows in ")]
    assert rows == [
        "rows in domain:            2",
        "rows in mxgate_change_log: 7",
        "rows in mxgate_srs_key:    1",
    ]
