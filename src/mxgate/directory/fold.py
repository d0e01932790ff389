"""Raw rows to ``RoutingData`` entries: the one place where keys are folded.

Owns the parsing of PostgreSQL's COPY text output (whole, or piece by piece
as it arrives), the folding of keys to lower case, the sharing of repeated
values, the choice among case variants of a key, and the replacement of
whole key groups in a snapshot. The bulk load and the incremental refresh
both go through these functions, so that a snapshot kept current change by
change equals a fresh full load (a test checks this).

Never does I/O and never awaits: ``replace_groups`` mutates a live snapshot
and must finish in one synchronous step.

Folding is Python's ``str.lower`` on the whole key, the same function the
routing core applies to the address it looks up. Domains are assumed to be
stored as IDNA A-labels (ASCII), as the CLI stores them; a U-label typed in by
hand is lower-cased but not converted.

Memory: a million mailboxes on two nodes are a million copies of two node
names unless the copies are shared; value columns that repeat (node names,
transports) therefore go through ``sys.intern``, and a key already in lower
case is kept as it is rather than copied by ``str.lower``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import TypeVar, cast

from mxgate.core.snapshot import RoutingData

Column = list[str | None]
V = TypeVar("V")

# COPY text format (PostgreSQL docs, "File Formats"): backslash escapes, \N
# for NULL. The server only emits the single-letter escapes, but the octal and
# hex forms are part of the format, so they are understood too.
_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))", re.DOTALL)
_LETTERS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape_match(match: re.Match[str]) -> str:
    octal, hexa, char = match.groups()
    if octal is not None:
        return chr(int(octal, 8))
    if hexa is not None:
        return chr(int(hexa, 16))
    return _LETTERS.get(char, char)


def _field(raw: str) -> str | None:
    if raw == "\\N":
        return None
    return _ESCAPE.sub(_unescape_match, raw) if "\\" in raw else raw


def parse_copy(text: str, ncols: int) -> list[Column]:
    """Split ``COPY ... TO STDOUT`` text output into columns."""
    if "\\" not in text:
        # Fast path, the common case: no escapes and no NULLs, so every tab and
        # newline is a separator. Splitting once in C is several times faster
        # than splitting line by line.
        fields: Column = list(text.replace("\n", "\t").split("\t"))
        fields.pop()  # the empty string after the final newline
        if len(fields) % ncols:
            raise ValueError("COPY output does not have the expected number of columns")
        return [fields[i::ncols] for i in range(ncols)]
    columns: list[Column] = [[] for _ in range(ncols)]
    for line in text.split("\n")[:-1]:
        parts = line.split("\t")
        if len(parts) != ncols:
            raise ValueError("COPY output does not have the expected number of columns")
        for column, raw in zip(columns, parts, strict=True):
            column.append(_field(raw))
    return columns


# The value columns whose texts repeat across rows, by table (indexes as in
# queries.TABLES): node names, and transports (a few values for many domains).
SHARED_COLUMNS: dict[str, tuple[int, ...]] = {
    "domain": (1,),
    "mailbox": (1,),
    "relay": (1,),
    "transport": (1, 2),
}


def shared(column: Sequence[str | None]) -> Column:
    """The column with equal texts as one object each (NULLs kept)."""
    if None in column:
        return [None if v is None else sys.intern(v) for v in column]
    return list(map(sys.intern, cast(Sequence[str], column)))


def shared_text(column: Sequence[str]) -> list[str]:
    """``shared`` for a column without NULLs."""
    return list(map(sys.intern, column))


def share_snapshot_values(data: RoutingData) -> None:
    """Share the repeated values (node names, transports) of a snapshot that
    was not built here, such as one read from the disk cache, in place.

    A cache written by this version has them shared already (marshal keeps
    interned strings interned), so a sample of each table decides whether
    the full pass is needed. Raises TypeError on a value that is not text.
    """
    texts: list[dict[str, str]] = [data.mailboxes, data.relays, *data.transports.values()]
    sample = [v for m in texts[:66] for v in islice(m.values(), 64)]
    sample += [v for v in islice(data.domains.values(), 64) if v is not None]
    if all(sys.intern(v) is v for v in sample):
        return
    for mapping in texts:
        for key, value in mapping.items():
            mapping[key] = sys.intern(value)
    domains = data.domains
    for key, node in domains.items():
        if node is not None:
            domains[key] = sys.intern(node)


class CopyReader:
    """Parses one table's ``COPY ... TO STDOUT`` output piece by piece, as it
    arrives, sharing the repeated values of each piece at once: the whole
    text and a million duplicate node names never exist side by side.

    ``feed`` takes bytes cut anywhere (a row may span two pieces); ``finish``
    returns the columns, as ``parse_copy`` would for the whole output.
    """

    def __init__(self, ncols: int, shared_columns: Sequence[int] = ()) -> None:
        self.ncols = ncols
        self.shared_columns = tuple(shared_columns)
        self.columns: list[Column] = [[] for _ in range(ncols)]
        self._rest = b""

    def feed(self, data: bytes) -> None:
        # A raw newline only ever ends a row (one inside a value is written
        # as backslash-n) and is never part of a multi-byte UTF-8 sequence,
        # so the text up to the last newline decodes and parses on its own.
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            self._rest += data
            return
        head = self._rest + data[:cut] if self._rest else data[:cut]
        self._rest = data[cut:]
        self._add(head.decode("utf-8"))  # asyncpg always sets client_encoding to UTF8

    def finish(self) -> list[Column]:
        if self._rest:
            # COPY output ends with a newline; anything after it is a torn row.
            raise ValueError("COPY output does not end with a complete row")
        return self.columns

    def _add(self, text: str) -> None:
        parts = parse_copy(text, self.ncols)
        for i in self.shared_columns:
            parts[i] = shared(parts[i])
        for column, part in zip(self.columns, parts, strict=True):
            column.extend(part)


def fold_keys(keys: Sequence[str]) -> list[str]:
    """Keys in lower case. A key that already is stays the same object: the
    keys of a bulk load are nearly all lower case, and a million copies would
    cost their size again at the peak, and holes in the heap afterwards."""
    return [k if (folded := k.lower()) == k else folded for k in keys]


def _keys(column: Column) -> list[str]:
    # Key columns are primary keys or NOT NULL in the tutorial's schema and in
    # ours, so a NULL cannot occur; check anyway, cheaply, rather than crash
    # in str.lower on a hand-made schema.
    if None in column:
        return [k or "" for k in column]
    return cast(list[str], column)


def _text(column: Column) -> list[str]:
    """A NOT NULL value column (NULL read as '', as the tutorial's readers do)."""
    if None in column:
        return [v or "" for v in column]
    return cast(list[str], column)


def _rank(folded: str, raw: str) -> tuple[bool, str]:
    # Among case variants of one key, the row already written in lower case
    # wins (it is the one Postfix's lower-case lookups matched); otherwise the
    # smallest raw key, so that the choice never depends on row order.
    return (raw != folded, raw)


def fold_single(keys: Sequence[str], values: Sequence[V]) -> dict[str, V]:
    """key -> value for tables with one row per key (domain, mailbox, relay)."""
    folded = fold_keys(keys)
    out = dict(zip(folded, values, strict=True))
    if len(out) == len(folded):
        return out
    best: dict[str, int] = {}
    for i, k in enumerate(folded):
        j = best.get(k)
        if j is None or _rank(k, keys[i]) < _rank(k, keys[j]):
            best[k] = i
    return {k: values[i] for k, i in best.items()}


def fold_forwards(keys: Sequence[str], destinations: Column) -> dict[str, tuple[str, ...]]:
    """source -> every destination column of its rows (case variants merged)."""
    groups: dict[str, list[str]] = {}
    for k, dest in zip(fold_keys(keys), destinations, strict=True):
        if dest is None:
            continue
        group = groups.get(k)
        if group is None:
            groups[k] = [dest]
        else:
            group.append(dest)
    # Sorted so that the tuple does not depend on the order rows come back in.
    return {k: tuple(sorted(v)) if len(v) > 1 else (v[0],) for k, v in groups.items()}


def fold_transports(
    keys: Sequence[str], nodes: Column, transports: Column
) -> dict[str, dict[str, str]]:
    """key -> {node: transport}; NULL and '' nodes are both the gateway node ''."""
    chosen: dict[tuple[str, str], tuple[str, str]] = {}
    folded = fold_keys(keys)
    nodes, transports = shared(nodes), shared(transports)
    for raw, key, node, transport in zip(keys, folded, nodes, transports, strict=True):
        slot = (key, node or "")
        previous = chosen.get(slot)
        if previous is None or _rank(slot[0], raw) < _rank(slot[0], previous[0]):
            chosen[slot] = (raw, transport or "")
    out: dict[str, dict[str, str]] = {}
    for (key, node), (_, transport) in chosen.items():
        out.setdefault(key, {})[node] = transport
    return out


def fold_table(table: str, columns: Sequence[Column]) -> dict[str, object]:
    """The entries of one table, keyed by folded key (``columns`` as in queries.TABLES)."""
    keys = _keys(columns[0])
    if table == "domain":
        return dict(fold_single(keys, shared(columns[1])))
    if table in ("mailbox", "relay"):
        return dict(fold_single(keys, shared_text(_text(columns[1]))))
    if table == "forward":
        return dict(fold_forwards(keys, columns[1]))
    if table == "transport":
        return dict(fold_transports(keys, columns[1], columns[2]))
    raise ValueError(f"not a routing table: {table}")


def build(tables: Mapping[str, Sequence[Column]], version: int) -> RoutingData:
    """A whole snapshot from the columns of each table."""
    domain, mailbox, relay = tables["domain"], tables["mailbox"], tables["relay"]
    forward, transport = tables["forward"], tables["transport"]
    return RoutingData(
        domains=fold_single(_keys(domain[0]), shared(domain[1])),
        mailboxes=fold_single(_keys(mailbox[0]), shared_text(_text(mailbox[1]))),
        relays=fold_single(_keys(relay[0]), shared_text(_text(relay[1]))),
        forwards=fold_forwards(_keys(forward[0]), forward[1]),
        transports=fold_transports(_keys(transport[0]), transport[1], transport[2]),
        version=version,
    )


def _target(data: RoutingData, table: str) -> dict[str, object]:
    targets: dict[str, Callable[[], object]] = {
        "domain": lambda: data.domains,
        "mailbox": lambda: data.mailboxes,
        "relay": lambda: data.relays,
        "forward": lambda: data.forwards,
        "transport": lambda: data.transports,
    }
    # The value types line up by construction: fold_table(table) builds the
    # same type as the field it is written into.
    return cast(dict[str, object], targets[table]())


def replace_groups(
    data: RoutingData, table: str, wanted: Iterable[str], columns: Sequence[Column]
) -> None:
    """Replace the key groups ``wanted`` (folded keys) of one table in place.

    ``columns`` holds every current row of those groups (and possibly rows of
    other groups, which are ignored: they are not complete here). A wanted key
    with no row left is removed.
    """
    fresh = fold_table(table, columns)
    target = _target(data, table)
    for key in wanted:
        value = fresh.get(key)
        if value is None and key not in fresh:
            target.pop(key, None)
        else:
            target[key] = value
