"""Raw rows to ``RoutingData`` entries: the one place where keys are folded.

Owns the parsing of PostgreSQL's COPY text output, the folding of keys to
lower case, the choice among case variants of a key, and the replacement of
whole key groups in a snapshot. The bulk load and the incremental refresh
both go through these functions, so that a snapshot kept current change by
change equals a fresh full load (a test checks this).

Never does I/O and never awaits: ``replace_groups`` mutates a live snapshot
and must finish in one synchronous step.

Folding is Python's ``str.lower`` on the whole key, the same function the
routing core applies to the address it looks up. Domains are assumed to be
stored as IDNA A-labels (ASCII), as the CLI stores them; a U-label typed in by
hand is lower-cased but not converted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    folded = list(map(str.lower, keys))
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
    for k, dest in zip(map(str.lower, keys), destinations, strict=True):
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
    for raw, node, transport in zip(keys, nodes, transports, strict=True):
        slot = (raw.lower(), node or "")
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
        return dict(fold_single(keys, columns[1]))
    if table in ("mailbox", "relay"):
        return dict(fold_single(keys, _text(columns[1])))
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
        domains=fold_single(_keys(domain[0]), domain[1]),
        mailboxes=fold_single(_keys(mailbox[0]), _text(mailbox[1])),
        relays=fold_single(_keys(relay[0]), _text(relay[1])),
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
