"""What ``mxgate import`` changes: the difference between the database's rows
and a document's, per table, and its human and JSON renderings.

Owns the comparison (rows are matched by primary key, exactly as PostgreSQL
compares them, so case variants are different rows) and the meaning of
``--replace``: without it rows absent from the document are kept, with it
they are removed. The result is what gets applied, so a dry run shows
exactly what the real run would do.

Pure: never does I/O. Never prints a password hash: a changed password is
shown as changed, nothing more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mxgate.core.transfer import SCHEMA, DataSet, Row, TableSchema, Value

HIDDEN_COLUMNS = frozenset({"password"})
HIDDEN = "(hidden)"


@dataclass(slots=True)
class TableDiff:
    """One table's changes.

    changed:   (old row, new row) pairs with equal keys
    unchanged: rows the document has exactly as the database has them
    kept:      database rows absent from the document, left alone (no --replace)
    """

    table: str
    added: list[Row] = field(default_factory=list)
    removed: list[Row] = field(default_factory=list)
    changed: list[tuple[Row, Row]] = field(default_factory=list)
    unchanged: int = 0
    kept: int = 0

    @property
    def writes(self) -> int:
        return len(self.added) + len(self.removed) + len(self.changed)


@dataclass(slots=True)
class Diff:
    """Every table's changes, in the order of ``SCHEMA``."""

    tables: dict[str, TableDiff]
    replace: bool

    @property
    def writes(self) -> int:
        return sum(t.writes for t in self.tables.values())


def table_diff(
    schema: TableSchema, current: Sequence[Row], wanted: Sequence[Row] | None, replace: bool
) -> TableDiff:
    """The changes that turn ``current`` into ``wanted`` (None: the document
    does not name the table, which is left as it is)."""
    result = TableDiff(schema.name)
    if wanted is None:
        result.kept = len(current)
        return result
    key_of = schema.key_of
    if schema.key == (0,):
        have: dict[object, Row] = {row[0]: row for row in current}
        want_keys: list[object] = [row[0] for row in wanted]
    else:
        have = {key_of(row): row for row in current}
        want_keys = [key_of(row) for row in wanted]
    for key, row in zip(want_keys, wanted, strict=True):
        old = have.pop(key, None)
        if old is None:
            result.added.append(row)
        elif old != row:
            result.changed.append((old, row))
        else:
            result.unchanged += 1
    if replace:
        result.removed = list(have.values())
    else:
        result.kept = len(have)
    return result


def compute_diff(current: Mapping[str, Sequence[Row]], wanted: DataSet, replace: bool) -> Diff:
    """The changes an import applies, table by table."""
    return Diff(
        {
            name: table_diff(schema, current.get(name, ()), wanted.get(name), replace)
            for name, schema in SCHEMA.items()
        },
        replace,
    )


def _shown(column: str, value: Value) -> Value:
    return HIDDEN if column in HIDDEN_COLUMNS and value is not None else value


def _key_text(schema: TableSchema, row: Row) -> str:
    parts = [str(row[i]) if row[i] is not None else "NULL" for i in schema.key]
    if schema.name == "transport":
        return f"{parts[0]} (node {parts[1]!r})"
    return " -> ".join(parts)


def changed_columns(schema: TableSchema, old: Row, new: Row) -> dict[str, tuple[Value, Value]]:
    """column -> (old, new) for the columns that differ, hashes hidden."""
    return {
        c.name: (_shown(c.name, a), _shown(c.name, b))
        for c, a, b in zip(schema.columns, old, new, strict=True)
        if a != b
    }


def _change_text(schema: TableSchema, old: Row, new: Row) -> str:
    parts = []
    for column, (a, b) in changed_columns(schema, old, new).items():
        if column in HIDDEN_COLUMNS:
            parts.append(f"{column} changed")
        else:
            parts.append(f"{column} {a!r} -> {b!r}")
    return ", ".join(parts)


def summary_line(t: TableDiff) -> str:
    return (
        f"{t.table:<10} +{len(t.added)} added  ~{len(t.changed)} changed"
        f"  -{len(t.removed)} removed  ({t.unchanged} unchanged, {t.kept} kept)"
    )


def diff_lines(diff: Diff, limit: int = 20) -> list[str]:
    """The diff for people: one summary line per table, then up to ``limit``
    rows of each kind (``--json`` has them all)."""
    lines = [summary_line(t) for t in diff.tables.values()]
    for name, t in diff.tables.items():
        schema = SCHEMA[name]
        lines += [f"  + {name} {_key_text(schema, row)}" for row in t.added[:limit]]
        lines += [
            f"  ~ {name} {_key_text(schema, new)}: {_change_text(schema, old, new)}"
            for old, new in t.changed[:limit]
        ]
        lines += [f"  - {name} {_key_text(schema, row)}" for row in t.removed[:limit]]
        hidden = sum(max(0, n - limit) for n in (len(t.added), len(t.changed), len(t.removed)))
        if hidden:
            lines.append(f"  ... and {hidden} more {name} changes (--json lists them all)")
    if not diff.writes:
        lines.append("no changes")
    return lines


def _row_dict(schema: TableSchema, row: Row) -> dict[str, Value]:
    return {c.name: _shown(c.name, v) for c, v in zip(schema.columns, row, strict=True)}


def _key_dict(schema: TableSchema, row: Row) -> dict[str, Value]:
    return {schema.columns[i].name: row[i] for i in schema.key}


def diff_json(diff: Diff) -> dict[str, object]:
    """The diff for programs: counts and every row, per table."""
    tables: dict[str, object] = {}
    for name, t in diff.tables.items():
        schema = SCHEMA[name]
        tables[name] = {
            "added": len(t.added),
            "changed": len(t.changed),
            "removed": len(t.removed),
            "unchanged": t.unchanged,
            "kept": t.kept,
            "rows": {
                "added": [_row_dict(schema, row) for row in t.added],
                "changed": [
                    {
                        "key": _key_dict(schema, new),
                        "columns": {
                            column: {"old": a, "new": b}
                            for column, (a, b) in changed_columns(schema, old, new).items()
                        },
                    }
                    for old, new in t.changed
                ],
                "removed": [_key_dict(schema, row) for row in t.removed],
            },
        }
    return {"replace": diff.replace, "writes": diff.writes, "tables": tables}
