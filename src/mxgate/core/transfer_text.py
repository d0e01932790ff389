"""The text of an exported data set: one row per line, in YAML or JSON.

Owns the layout ``mxgate export`` writes. Both formats put each row on a
line of its own, as a JSON object (which is also a YAML flow mapping), so
that a data set kept in version control shows a changed row as one changed
line, and so that reading a million rows does not need a general YAML
parser: ``parse_own_yaml`` reads this layout, line by line, with the C JSON
decoder, about twenty times faster than PyYAML. Any other YAML (written or
edited by hand) is left to the caller's YAML parser.

Pure: never does I/O; the caller writes the lines and reads the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence

from mxgate.core.transfer import FORMAT_NAME, FORMAT_VERSION, SCHEMA, Row

# Characters a YAML reader refuses in a stream (PyYAML's non-printable set)
# or reads as a line break inside a quoted scalar; JSON allows them raw, so
# they are written as \\u escapes, which YAML and JSON read alike.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")

HEADER_COMMENT = (
    "# mxgate data set: every row of the five routing tables, password hashes included;",
    "# keep it private. Load it with: mxgate import FILE [--dry-run] [--replace]",
)


# How deep a hand-written YAML document may nest. A data set needs four
# levels (document, table, row, value); PyYAML's C composer recurses once per
# level and overflows the C stack near 100,000 (a segfault, not an error).
MAX_NESTING = 100
_FLOW_BRACKETS = re.compile(r"[\[\]{}]")
_BLOCK_INDENT = re.compile(r"^( *)((?:[-?] +)*)", re.MULTILINE)


class DuplicateKeyError(ValueError):
    """A mapping that names a key twice. JSON and YAML readers keep the last
    silently; for a data set that would drop a whole table's rows (and with
    ``--replace`` remove them from the database), so it is an error."""


def unique_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object from its pairs, refusing a repeated key."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(f"key {key!r} given twice in one object")
            seen.add(key)
    return obj


# One decoder for every row: json.loads with a hook would build one per call.
JSON_DECODER = json.JSONDecoder(object_pairs_hook=unique_object)


def nests_too_deep(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether YAML ``text`` may nest more than ``limit`` levels: in flow
    style (brackets, counted inside quoted strings too, so it errs on the
    safe side) or in block style (indentation and ``- `` markers)."""
    depth = 0
    for match in _FLOW_BRACKETS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        elif depth:
            depth -= 1
    return any(
        len(match.group(1)) + len(match.group(2).split()) > limit
        for match in _BLOCK_INDENT.finditer(text)
    )


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def row_json(names: Sequence[str], row: Row) -> str:
    """One row as a one-line JSON object that YAML reads the same way."""
    text = json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False)
    return _YAML_UNSAFE.sub(_escape, text)


def yaml_lines(data: Mapping[str, Sequence[Row]]) -> Iterator[str]:
    """The data set as YAML lines (without newlines)."""
    yield from HEADER_COMMENT
    yield f"format: {FORMAT_NAME}"
    yield f"version: {FORMAT_VERSION}"
    for table, schema in SCHEMA.items():
        rows = data.get(table, ())
        if not rows:
            yield f"{table}: []"
            continue
        yield f"{table}:"
        names = schema.names
        for row in rows:
            yield "- " + row_json(names, row)


def json_lines(data: Mapping[str, Sequence[Row]]) -> Iterator[str]:
    """The data set as JSON lines (without newlines): one object in all."""
    yield "{"
    yield f'  "format": "{FORMAT_NAME}",'
    yield f'  "version": {FORMAT_VERSION},'
    tables = list(SCHEMA.items())
    for position, (table, schema) in enumerate(tables):
        after = "," if position < len(tables) - 1 else ""
        rows = data.get(table, ())
        if not rows:
            yield f'  "{table}": []{after}'
            continue
        yield f'  "{table}": ['
        names = schema.names
        last = len(rows) - 1
        for index, row in enumerate(rows):
            yield "    " + row_json(names, row) + ("," if index < last else "")
        yield f"  ]{after}"
    yield "}"


_KEY_LINE = re.compile(r"([a-z_]+):(?: +(\S.*?))? *")
_PLAIN_WORD = re.compile(r"[a-z][a-z0-9-]*")
# Plain scalars that YAML 1.1 reads as something other than a string.
_YAML_WORDS = frozenset({"null", "true", "false", "yes", "no", "on", "off", "y", "n"})


def _scalar(text: str) -> tuple[bool, object]:
    """(understood, value) for the value of a top-level ``key: value`` line."""
    if text == "[]":
        return True, []
    if text.isdigit():
        return True, int(text)
    if _PLAIN_WORD.fullmatch(text) and text not in _YAML_WORDS:
        return True, text
    if text.startswith('"'):
        try:
            return True, json.loads(text)
        except ValueError:
            return False, None
    return False, None


def parse_own_yaml(text: str) -> dict[str, object] | None:
    """The document, when ``text`` has the layout ``yaml_lines`` writes
    (comments and blank lines anywhere); None otherwise, and the caller then
    parses it as YAML. Reads it as YAML would."""
    doc: dict[str, object] = {}
    bare: list[str] = []
    rows: list[object] | None = None
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if line.startswith("- "):
            if rows is None:
                return None
            try:
                rows.append(JSON_DECODER.decode(line[2:]))
            except (ValueError, RecursionError):
                return None  # the YAML parser then says what is wrong, and where
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _KEY_LINE.fullmatch(line)
        if match is None or match.group(1) in doc:
            return None
        key, value = match.group(1), match.group(2)
        if value is None:
            rows = []
            doc[key] = rows
            bare.append(key)
            continue
        understood, parsed = _scalar(value)
        if not understood:
            return None
        doc[key] = parsed
        rows = None
    for key in bare:
        if doc[key] == []:
            doc[key] = None  # "key:" with nothing under it is null in YAML
    return doc
