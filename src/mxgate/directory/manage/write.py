"""Writing the five tables for people: add, edit and remove, one transaction each.

Owns the rules that need the current rows, checked inside the transaction
that writes: a mailbox's, forward's or relay's domain must be a ``domain``
row (which is locked FOR SHARE, so a concurrent ``domain remove`` waits, and
then sees the new row); a relay needs a gateway transport row; a key exists
once, whatever its case; a domain that still has rows is removed only with
``cascade``, and then together with them. Keys arrive normalised by
``mxgate.core.rules`` and are matched as ``lower(key)``, so a row stored by
another tool in upper case is found, refused as a duplicate, and removed.

Never builds SQL from values (parameters only), never checks the pure rules
again (the caller has), and never prints: warnings are returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from mxgate.core.rules import Refusal, source_domain
from mxgate.directory.connect import connection
from mxgate.directory.manage.read import ESCAPE, in_domain, pointing_at, route_of


class NotFound(Refusal):
    """The row to show, edit or remove does not exist."""


@asynccontextmanager
async def writing(dsn: str, what: str) -> AsyncIterator[asyncpg.Connection]:
    """One connection and one transaction; constraint violations become
    refusals that say what to do about them."""
    async with connection(dsn, what) as conn:
        try:
            async with conn.transaction():
                yield conn
        except asyncpg.UniqueViolationError as exc:
            raise Refusal(
                f"{what}: the row already exists ({exc}); a database created by the"
                " tutorial allows one forward per source and one transport per domain:"
                " mxgate db migrate changes those keys"
            ) from exc
        except asyncpg.StringDataRightTruncationError as exc:
            raise Refusal(
                f"{what}: a value is too long for its column ({exc}); a database created by"
                " the tutorial has narrow columns: mxgate db migrate widens them"
            ) from exc


async def our_domain(conn: asyncpg.Connection, key: str, what: str) -> str | None:
    """The node of the key's domain row, locked FOR SHARE; refused when the
    domain is not ours."""
    domain = source_domain(key)
    rows = await conn.fetch("SELECT node FROM domain WHERE lower(domain) = $1 FOR SHARE", domain)
    if not rows:
        raise Refusal(
            f"{what} {key}: {domain} is not one of our domains (a {what}'s domain must be"
            f" a row of domain: mxgate domain add {domain})"
        )
    node: str | None = rows[0]["node"]
    return node


async def _absent(conn: asyncpg.Connection, table: str, column: str, key: str) -> None:
    existing = await conn.fetchval(
        f"SELECT {column} FROM {table} WHERE lower({column}) = $1 LIMIT 1", key
    )
    if existing is not None:
        variant = "" if existing == key else f" (stored as {existing!r})"
        raise Refusal(f"{table} {key} already exists{variant}")


def _node_for(what: str, key: str, node: str | None, inherited: str | None) -> str:
    if node is not None:
        return node
    if inherited:
        return inherited
    raise Refusal(f"{what} {key}: give --node (its domain has no node to inherit)")


# The columns ``edit`` may change, by table: the names formatted into UPDATE.
EDITABLE = {
    "domain": {"node", "comment"},
    "mailbox": {"node", "quota", "comment", "password"},
    "relay": {"node", "comment"},
    "transport": {"transport", "comment"},
}


def set_clause(table: str, changes: dict[str, object], first: int) -> str:
    names = list(changes)
    if not names or not set(names) <= EDITABLE[table]:
        raise ValueError(f"cannot change {names} of {table}")
    return ", ".join(f"{name} = ${i + first}" for i, name in enumerate(names))


async def _update(
    conn: asyncpg.Connection, table: str, column: str, key: str, changes: dict[str, object]
) -> None:
    """UPDATE the rows of ``key`` (every case variant); the column names
    are checked against ``EDITABLE``, the values are parameters."""
    sets = set_clause(table, changes, 2)
    status = await conn.execute(
        f"UPDATE {table} SET {sets} WHERE lower({column}) = $1", key, *changes.values()
    )
    if status == "UPDATE 0":
        raise NotFound(f"{table} {key} does not exist")


async def delete_key(conn: asyncpg.Connection, table: str, column: str, key: str) -> int:
    status = await conn.execute(f"DELETE FROM {table} WHERE lower({column}) = $1", key)
    count = int(status.split()[-1])
    if not count:
        raise NotFound(f"{table} {key} does not exist")
    return count


# --- domain ---------------------------------------------------------------------


async def add_domain(dsn: str, domain: str, node: str | None, comment: str | None) -> None:
    async with writing(dsn, "domain add") as conn:
        await _absent(conn, "domain", "domain", domain)
        await conn.execute(
            "INSERT INTO domain (domain, node, comment) VALUES ($1, $2, $3)",
            domain,
            node or None,
            comment,
        )


async def edit_domain(dsn: str, domain: str, changes: dict[str, object]) -> None:
    """``changes``: node ('' is NULL) and/or comment (None is NULL)."""
    if "node" in changes:
        changes["node"] = changes["node"] or None
    async with writing(dsn, "domain edit") as conn:
        await _update(conn, "domain", "domain", domain, changes)


DEPENDENTS = (
    ("mailbox", "email", "mailboxes"),
    ("relay", "source", "relays"),
    ("forward", "source", "forwards"),
)


async def remove_domain(dsn: str, domain: str, cascade: bool) -> dict[str, int]:
    """Remove a domain; with ``cascade`` also its mailboxes, relays, forwards
    (sources in the domain, catch-all included) and transport rows (the
    domain's and its addresses'). Returns what was removed, by table."""
    async with writing(dsn, "domain remove") as conn:
        locked = await conn.fetch(
            "SELECT domain FROM domain WHERE lower(domain) = $1 FOR UPDATE", domain
        )
        if not locked:
            raise NotFound(f"domain {domain} does not exist")
        pattern = in_domain(domain)
        counts: dict[str, int] = {}
        for table, column, label in DEPENDENTS:
            sql = f"SELECT count(*) FROM {table} WHERE lower({column}) LIKE $1{ESCAPE}"
            counts[label] = int(await conn.fetchval(sql, pattern))
        transport_where = f"lower(domain) = $1 OR lower(domain) LIKE $2{ESCAPE}"
        counts["transports"] = int(
            await conn.fetchval(
                f"SELECT count(*) FROM transport WHERE {transport_where}", domain, pattern
            )
        )
        left = {label: n for label, n in counts.items() if n}
        if left and not cascade:
            what = ", ".join(f"{n} {label}" for label, n in left.items())
            raise Refusal(
                f"domain {domain} still has {what}: remove them first,"
                " or use --cascade to remove them with the domain"
            )
        for table, column, _label in DEPENDENTS:
            await conn.execute(
                f"DELETE FROM {table} WHERE lower({column}) LIKE $1{ESCAPE}", pattern
            )
        await conn.execute(f"DELETE FROM transport WHERE {transport_where}", domain, pattern)
        await conn.execute("DELETE FROM domain WHERE lower(domain) = $1", domain)
        return {"domains": len(locked), **counts}


# --- mailbox ----------------------------------------------------------------------


async def add_mailbox(
    dsn: str,
    email: str,
    password_hash: str,
    node: str | None,
    quota: int | None,
    comment: str | None,
) -> list[str]:
    """Add a mailbox; ``node`` None takes the domain's node. Returns warnings."""
    async with writing(dsn, "mailbox add") as conn:
        inherited = await our_domain(conn, email, "mailbox")
        await _absent(conn, "mailbox", "email", email)
        node = _node_for("mailbox", email, node, inherited)
        if quota is None:
            await conn.execute(
                "INSERT INTO mailbox (email, password, node, comment) VALUES ($1, $2, $3, $4)",
                email,
                password_hash,
                node,
                comment,
            )
        else:
            await conn.execute(
                "INSERT INTO mailbox (email, password, node, quota, comment)"
                " VALUES ($1, $2, $3, $4, $5)",
                email,
                password_hash,
                node,
                quota,
                comment,
            )
        warnings: list[str] = []
        if await conn.fetchval("SELECT 1 FROM forward WHERE lower(source) = $1 LIMIT 1", email):
            warnings.append(
                f"forward rows for {email} are now never used: a mailbox row wins"
                " (mxgate forward remove " + email + ")"
            )
        if await route_of(conn, email) is None:
            warnings.append(
                f"no transport row for the gateways applies to {email}: its mail is refused"
                f" with 451 until one exists (mxgate transport add {source_domain(email)} ...)"
            )
        return warnings


async def edit_mailbox(dsn: str, email: str, changes: dict[str, object]) -> None:
    async with writing(dsn, "mailbox edit") as conn:
        await _update(conn, "mailbox", "email", email, changes)


async def set_password(dsn: str, email: str, password_hash: str) -> None:
    async with writing(dsn, "mailbox passwd") as conn:
        await _update(conn, "mailbox", "email", email, {"password": password_hash})


async def remove_mailbox(dsn: str, email: str) -> list[str]:
    """Remove a mailbox (every case variant). Returns warnings."""
    async with writing(dsn, "mailbox remove") as conn:
        await delete_key(conn, "mailbox", "email", email)
        return await dangling(conn, email)


async def dangling(conn: asyncpg.Connection, key: str) -> list[str]:
    """Warnings about forwards that point at ``key``, which no row takes now."""
    if key.startswith("@"):
        return []
    catch_all = "@" + source_domain(key)
    for table, column in (("mailbox", "email"), ("relay", "source"), ("forward", "source")):
        if await conn.fetchval(
            f"SELECT 1 FROM {table} WHERE lower({column}) = ANY($1::text[]) LIMIT 1",
            [key] if table == "mailbox" else [key, catch_all],
        ):
            return []  # still known: by another row, or by a catch-all
    sources = await pointing_at(conn, key)
    if not sources:
        return []
    shown = ", ".join(sources[:5]) + (", ..." if len(sources) > 5 else "")
    return [
        f"forwards from {shown} point at {key}, which no row takes any more:"
        " they are dead ends now (mxgate check lists them)"
    ]


# --- relay ------------------------------------------------------------------------


async def add_relay(dsn: str, source: str, node: str | None, comment: str | None) -> None:
    """Add a relay; its domain must be ours and have a gateway transport."""
    async with writing(dsn, "relay add") as conn:
        inherited = await our_domain(conn, source, "relay")
        await _absent(conn, "relay", "source", source)
        node = _node_for("relay", source, node, inherited)
        if await route_of(conn, source) is None:
            domain = source_domain(source)
            raise Refusal(
                f"relay {source}: no transport row for the gateways (node '') applies to"
                f" {domain}, so its mail would have no route (451 at RCPT); add one first:"
                f" mxgate transport add {domain} smtp:[host]"
            )
        await conn.execute(
            "INSERT INTO relay (source, node, comment) VALUES ($1, $2, $3)",
            source,
            node,
            comment,
        )


async def edit_relay(dsn: str, source: str, changes: dict[str, object]) -> None:
    async with writing(dsn, "relay edit") as conn:
        await _update(conn, "relay", "source", source, changes)


async def remove_relay(dsn: str, source: str) -> list[str]:
    async with writing(dsn, "relay remove") as conn:
        await delete_key(conn, "relay", "source", source)
        return await dangling(conn, source)
