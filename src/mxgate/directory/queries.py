"""The SQL the gateway reads the routing tables with, in one place.

Owns the names: the five tables of SPEC section 2, the columns routing needs,
the change-log table, its NOTIFY channel, and the text of every read query.

Never selects ``mailbox.password``: a gateway has no use for password hashes,
and the read-only role of ``grant_statements`` is not even granted the column.
Never writes; the statements that write live in ``migrations/``, ``example.py``
and ``admin.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

CHANNEL = "mxgate_changes"
"""NOTIFY channel the change-capture triggers signal on (a wake-up, not the truth)."""

CHANGE_LOG = "mxgate_change_log"
"""Change-log table written by the triggers of migration 0002."""

SCHEMA_VERSION = "mxgate_schema_version"
"""One row per applied migration."""


@dataclass(frozen=True, slots=True)
class TableSpec:
    """One routing table: its key column and the columns routing reads.

    ``columns[0]`` is always the key; the rest are values. The names are
    constants of this module, never user input, so formatting them into SQL
    text is safe.
    """

    name: str
    columns: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.columns[0]

    @property
    def bulk_query(self) -> str:
        """Every row, for the COPY of a full load."""
        return f"SELECT {', '.join(self.columns)} FROM {self.name}"

    @property
    def group_query(self) -> str:
        """Every row of the given key groups ($1: lower-case keys, $2: raw keys).

        ``lower(key) = ANY($1)`` is served by the lower() index of migration
        0002. ``key = ANY($2)`` adds the raw keys named by the change log, so a
        changed row is found even where the database's lower() folds a
        non-ASCII character differently from Python's ``str.lower``; the caller
        filters the rows by Python's folding, which is the one the snapshot uses.
        """
        return (
            f"{self.bulk_query} WHERE lower({self.key}) = ANY($1::text[])"
            f" OR {self.key} = ANY($2::text[])"
        )


DOMAIN = TableSpec("domain", ("domain", "node"))
MAILBOX = TableSpec("mailbox", ("email", "node"))
RELAY = TableSpec("relay", ("source", "node"))
FORWARD = TableSpec("forward", ("source", "destination"))
TRANSPORT = TableSpec("transport", ("domain", "node", "transport"))

TABLES: tuple[TableSpec, ...] = (DOMAIN, MAILBOX, RELAY, FORWARD, TRANSPORT)
TABLE_NAMES: tuple[str, ...] = tuple(t.name for t in TABLES)
BY_NAME: dict[str, TableSpec] = {t.name: t for t in TABLES}

HAS_CHANGE_LOG = f"SELECT to_regclass('{CHANGE_LOG}') IS NOT NULL"

# One statement, so that the ids and the list of in-progress transactions come
# from the same snapshot (see changes.py for why the latter matters).
POSITION = f"""
SELECT coalesce((SELECT max(id) FROM {CHANGE_LOG}), 0) AS newest,
       ARRAY(SELECT txid_snapshot_xip(txid_current_snapshot()))::bigint[] AS in_progress
"""

CHANGES = f"""
SELECT id, table_name, op, old_key, new_key FROM {CHANGE_LOG}
WHERE id > $1 OR txid = ANY($2::bigint[])
ORDER BY id
LIMIT $3
"""
