"""The whole data set as one document: its schema, and the validation of a
document before ``mxgate import`` writes any of it.

Owns the document format (``format: mxgate-data``, ``version: 1``, then one
list of rows per table, every column included: password hashes and
comments too), the column rules of the migrated schema
(``directory/migrations/0001_routing_tables.sql``: types, NOT NULL, defaults,
varchar lengths), duplicate keys, and the tutorial's rule that a forward's
or relay's source is in one of our domains; the syntax of each value is
checked by ``core.transfer_rules``. A row is a tuple
in the table's column order; a data set maps table names to lists of rows.

Values are kept exactly as written, case included: an export imported into an
empty database gives identical rows, and rows stored with upper case (which
the tutorial's Postfix never matched) stay as they are; ``mxgate check``
reports them.

Pure: never does I/O, never parses YAML or JSON text (the CLI does) and never
writes; every problem is collected and reported with the offending value and
the rule it breaks, as a ``DocumentError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mxgate.core.transfer_rules import RULES, source_domain

FORMAT_NAME = "mxgate-data"
FORMAT_VERSION = 1

Value = str | int | None
Row = tuple[Value, ...]
DataSet = dict[str, list[Row]]

BIGINT_MAX = 2**63 - 1
MAX_PROBLEMS = 200
"""Problems kept for the report; the rest are only counted."""


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column as the migrated schema declares it.

    max_length: varchar(n) limit in characters, None for text and bigint
    required:   the document must give it (NOT NULL without a default)
    default:    the value used when the document leaves it out
    """

    name: str
    kind: str  # "text" or "bigint"
    max_length: int | None = None
    nullable: bool = True
    required: bool = False
    default: Value = None


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A routing table: columns in database order and the key (column indexes)."""

    name: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[int, ...]
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        # Frozen: set as the generated __init__ sets fields. Read per row.
        object.__setattr__(self, "names", tuple(c.name for c in self.columns))

    def key_of(self, row: Row) -> Row:
        return tuple(row[i] for i in self.key)


def _text(name: str, length: int | None, *, required: bool = False) -> ColumnSpec:
    return ColumnSpec(name, "text", length, nullable=not required, required=required)


COMMENT = _text("comment", 500)

SCHEMA: dict[str, TableSchema] = {
    t.name: t
    for t in (
        TableSchema(
            "domain", (_text("domain", 255, required=True), _text("node", 50), COMMENT), (0,)
        ),
        TableSchema(
            "forward",
            (
                _text("source", 254, required=True),
                _text("destination", None, required=True),
                COMMENT,
            ),
            (0, 1),
        ),
        TableSchema(
            "relay",
            (_text("source", 254, required=True), _text("node", 50, required=True), COMMENT),
            (0,),
        ),
        TableSchema(
            "mailbox",
            (
                _text("email", 254, required=True),
                _text("password", 255, required=True),
                ColumnSpec("quota", "bigint", default=10485760),
                _text("node", 50, required=True),
                COMMENT,
            ),
            (0,),
        ),
        TableSchema(
            "transport",
            (
                _text("domain", 255, required=True),
                ColumnSpec("transport", "text", 255, nullable=False, default=""),
                ColumnSpec("node", "text", 50, nullable=False, default=""),
                COMMENT,
            ),
            (0, 2),
        ),
    )
}
TABLES: tuple[str, ...] = tuple(SCHEMA)


class DocumentError(ValueError):
    """The document cannot be imported; ``problems`` says where and why."""

    def __init__(self, problems: Sequence[str], total: int | None = None) -> None:
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total
        more = self.total - len(self.problems)
        lines = self.problems + ([f"... and {more} more problems"] if more > 0 else [])
        super().__init__("\n".join(lines))


@dataclass
class _Problems:
    kept: list[str] = field(default_factory=list)
    total: int = 0

    def add(self, message: str) -> None:
        self.total += 1
        if len(self.kept) < MAX_PROBLEMS:
            self.kept.append(message)

    def raise_if_any(self) -> None:
        if self.total:
            raise DocumentError(self.kept, self.total)


def _type_problem(spec: ColumnSpec, value: object) -> str | None:
    if value is None:
        return None if spec.nullable else "must not be null"
    if spec.kind == "bigint":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be a whole number, not {type(value).__name__}"
        if not 0 <= value <= BIGINT_MAX:
            return f"must be between 0 and {BIGINT_MAX}"
        return None
    if not isinstance(value, str):
        return f"must be text, not {type(value).__name__} (quote it in YAML)"
    if "\x00" in value:
        return "must not contain a NUL character (PostgreSQL text cannot hold one)"
    if spec.max_length is not None and len(value) > spec.max_length:
        return f"is {len(value)} characters long; the column holds {spec.max_length}"
    return None


def _where(table: str, index: int, row: Mapping[str, object], schema: TableSchema) -> str:
    key = row.get(schema.columns[0].name)
    label = f" ({schema.columns[0].name} {key!r})" if isinstance(key, str) else ""
    return f"{table} row {index + 1}{label}"


_MISSING = object()
Check = tuple[ColumnSpec, Callable[[str], str | None] | None]
CHECKS: dict[str, tuple[Check, ...]] = {
    table: tuple((spec, RULES.get((table, spec.name))) for spec in schema.columns)
    for table, schema in SCHEMA.items()
}


def _read_row(
    table: str, index: int, raw: object, schema: TableSchema, problems: _Problems
) -> Row | None:
    """One row as a tuple, or None after reporting its problems. Runs once
    per row of a million-row import: the common case is kept short."""
    if not isinstance(raw, Mapping):
        problems.add(f"{table} row {index + 1}: must be a mapping of column names to values")
        return None
    found: list[str] = [
        f"unknown column {name!r} (columns: {', '.join(schema.names)})"
        for name in raw
        if name not in schema.names
    ]
    values: list[Value] = []
    for spec, rule in CHECKS[table]:
        value = raw.get(spec.name, _MISSING)
        problem: str | None = None
        if type(value) is str and "\x00" not in value:
            if spec.max_length is not None and len(value) > spec.max_length:
                problem = _type_problem(spec, value)
            elif rule is not None:
                problem = rule(value)
        elif value is _MISSING:
            if spec.required:
                found.append(f"column {spec.name!r} is missing (it is required)")
            values.append(spec.default)
            continue
        else:
            problem = _type_problem(spec, value)
        if problem is not None:
            found.append(f"{spec.name} {value!r}: {problem}")
        values.append(value)
    if found:
        where = _where(table, index, raw, schema)
        for problem in found:
            problems.add(f"{where}: {problem}")
        return None
    return tuple(values)


@dataclass(frozen=True, slots=True)
class Document:
    """A validated document: the rows of the tables it names (absent tables
    are not in ``tables``)."""

    tables: DataSet

    @property
    def domains(self) -> set[str]:
        return {str(row[0]).lower() for row in self.tables.get("domain", ())}


def read_document(
    doc: object,
    *,
    replace: bool = False,
    progress: Callable[[int], None] | None = None,
    consume: bool = False,
) -> Document:
    """Check a parsed YAML/JSON document and return its rows.

    Checks the header, every row's columns (types, NOT NULL, lengths, address
    syntax) and duplicate keys. With ``replace`` every table must be present
    (an empty list empties it) and forward and relay sources must be in a
    domain of the document; without it the caller checks sources against the
    document's and the database's domains (``foreign_sources``).
    ``progress`` is called with the number of rows checked, now and then.
    ``consume`` empties the document's row lists as they are read, so that
    a million parsed rows and their tuples never exist side by side.
    Raises ``DocumentError`` listing the problems.
    """
    problems = _Problems()
    if not isinstance(doc, Mapping):
        raise DocumentError(["the document must be a mapping (format, version and tables)"])
    if doc.get("format") != FORMAT_NAME:
        problems.add(f"format {doc.get('format')!r}: must be {FORMAT_NAME!r}")
    version = doc.get("version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        problems.add(f"version {version!r}: this mxgate reads format version {FORMAT_VERSION}")
    for name in doc:
        if name not in ("format", "version", *TABLES):
            problems.add(f"unknown top-level key {name!r} (tables: {', '.join(TABLES)})")
    tables: DataSet = {}
    done = 0
    for table, schema in SCHEMA.items():
        if table not in doc:
            if replace:
                problems.add(f"table {table!r} is missing: --replace needs every table")
            continue
        raw_rows = doc[table]
        if raw_rows is None:
            raw_rows = []
        if not isinstance(raw_rows, list):
            problems.add(f"table {table!r}: must be a list of rows")
            continue
        rows: list[Row] = []
        seen: dict[object, int] = {}
        single = len(schema.key) == 1
        for index, raw in enumerate(raw_rows):
            if consume:
                raw_rows[index] = None
            row = _read_row(table, index, raw, schema, problems)
            if row is not None:
                key = row[0] if single else schema.key_of(row)
                first = seen.setdefault(key, index)
                if first != index:
                    problems.add(
                        f"{table} row {index + 1}: key {key!r} repeats row {first + 1}"
                        " (the primary key must be unique)"
                    )
                rows.append(row)
            done += 1
            if progress is not None and done % 50_000 == 0:
                progress(done)
        tables[table] = rows
    if progress is not None:
        progress(done)
    problems.raise_if_any()
    document = Document(tables)
    foreign = foreign_sources(document, ())
    if replace and foreign:
        raise DocumentError(foreign[:MAX_PROBLEMS], len(foreign))
    return document


def foreign_sources(document: Document, more_domains: Iterable[str]) -> list[str]:
    """Forward and relay rows whose source is not in one of our domains: those
    of the document plus ``more_domains`` (the database's, when the import
    keeps them)."""
    ours = {source_domain("@" + d) for d in document.domains}
    ours.update(source_domain("@" + d) for d in more_domains)
    found: list[str] = []
    for table in ("forward", "relay"):
        for index, row in enumerate(document.tables.get(table, ())):
            source = str(row[0])
            domain = source_domain(source)
            if domain not in ours:
                found.append(
                    f"{table} row {index + 1}: source {source!r}: the domain {domain!r} is not"
                    " one of ours (a forward's or relay's source must be in table domain)"
                )
    return found
