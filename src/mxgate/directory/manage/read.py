"""Reading the five tables for people: list with filters and pages, show one
row with what relates to it, and the raw rows that ``mxgate check`` judges.

Keys are matched case-insensitively (``lower(key)``, served by the indexes of
migration 0002), so rows that other tools stored with upper case are found
and shown as stored. Filters are ``*`` globs turned into LIKE patterns with
every LIKE metacharacter escaped, always passed as parameters.

Never writes and never reads ``mailbox.password`` beyond its ``{SCHEME}``
prefix (``show`` names the scheme, never the hash).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from mxgate.core.check import RawRows
from mxgate.core.expand import split_destinations
from mxgate.core.rules import like_pattern, route_keys
from mxgate.core.transport import TransportRow, find_transport_row
from mxgate.directory.connect import connection

# table -> (key column, listed columns, extra ORDER BY columns)
LIST_COLUMNS: Mapping[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "domain": ("domain", ("domain", "node", "comment"), ()),
    "mailbox": ("email", ("email", "node", "quota", "comment"), ()),
    "relay": ("source", ("source", "node", "comment"), ()),
    "forward": ("source", ("source", "destination", "comment"), ("destination",)),
    "transport": ("domain", ("domain", "node", "transport", "comment"), ("node",)),
}

ESCAPE = " ESCAPE '\\'"  # LIKE's escape character, as like_pattern writes it


def in_domain(domain: str) -> str:
    """LIKE pattern (lower case) for the keys of a domain: ``user@d`` and ``@d``."""
    return "%@" + like_pattern(domain)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What ``list`` shows: filters (None = any) and the page.

    pattern:     glob on the key (``*`` any text, ``?`` one character)
    domain:      keys of this domain (the domain itself for domain/transport)
    node:        exact node ('' = gateway rows / no node)
    destination: glob on a forward's destination
    """

    table: str
    pattern: str | None = None
    domain: str | None = None
    node: str | None = None
    destination: str | None = None
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Page:
    total: int
    rows: list[dict[str, object]]


def _where(query: ListQuery) -> tuple[str, list[object]]:
    key, _columns, _order = LIST_COLUMNS[query.table]
    clauses: list[str] = []
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if query.pattern is not None:
        clauses.append(f"lower({key}) LIKE {arg(like_pattern(query.pattern))}{ESCAPE}")
    if query.domain is not None:
        if query.table == "domain":
            clauses.append(f"lower({key}) = {arg(query.domain)}")
        elif query.table == "transport":
            equal, inside = arg(query.domain), arg(in_domain(query.domain))
            clauses.append(f"(lower({key}) = {equal} OR lower({key}) LIKE {inside}{ESCAPE})")
        else:
            clauses.append(f"lower({key}) LIKE {arg(in_domain(query.domain))}{ESCAPE}")
    if query.node is not None and query.table != "forward":
        clauses.append(f"coalesce(node, '') = {arg(query.node)}")
    if query.destination is not None and query.table == "forward":
        clauses.append(f"lower(destination) LIKE {arg(like_pattern(query.destination))}{ESCAPE}")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


async def list_rows(dsn: str, query: ListQuery) -> Page:
    """One page of a table's rows in key order, and how many match in all."""
    key, columns, order = LIST_COLUMNS[query.table]
    where, args = _where(query)
    sql = (
        f"SELECT {', '.join(columns)} FROM {query.table}{where}"
        f" ORDER BY {', '.join((f'lower({key})', key, *order))}"
        f" LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
    )
    async with (
        connection(dsn, f"{query.table} list") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        total = await conn.fetchval(f"SELECT count(*) FROM {query.table}{where}", *args)
        records = await conn.fetch(sql, *args, query.limit, query.offset)
    return Page(int(total), [dict(r) for r in records])


async def _rows(conn: asyncpg.Connection, sql: str, *args: object) -> list[dict[str, object]]:
    return [dict(r) for r in await conn.fetch(sql, *args)]


async def _transports(conn: asyncpg.Connection, keys: list[str]) -> dict[str, dict[str, str]]:
    """The transport rows of these keys, as the snapshot holds them."""
    found: dict[str, dict[str, str]] = {}
    for record in await conn.fetch(
        "SELECT lower(domain) AS key, coalesce(node, '') AS node, transport FROM transport"
        " WHERE lower(domain) = ANY($1::text[]) ORDER BY domain <> lower(domain), domain",
        keys,
    ):
        found.setdefault(record["key"], {}).setdefault(record["node"], record["transport"])
    return found


async def route_of(
    conn: asyncpg.Connection, key: str, node: str = "", fallback: bool = False
) -> TransportRow | None:
    """The transport row that routes mail for ``key`` in this role (SPEC 1, 5)."""
    keys = route_keys(key)
    return find_transport_row(await _transports(conn, keys), keys, node, fallback)


def _route_json(row: TransportRow | None) -> dict[str, str] | None:
    return None if row is None else {"key": row.key, "node": row.node, "transport": row.value}


async def _count(conn: asyncpg.Connection, table: str, key: str, domain: str) -> int:
    sql = f"SELECT count(*) FROM {table} WHERE lower({key}) LIKE $1{ESCAPE}"
    return int(await conn.fetchval(sql, in_domain(domain)))


async def pointing_at(conn: asyncpg.Connection, address: str) -> list[str]:
    """Forward sources with ``address`` among their destinations."""
    found: list[str] = []
    for record in await conn.fetch(
        f"SELECT source, destination FROM forward WHERE lower(destination) LIKE $1{ESCAPE}"
        " ORDER BY lower(source), source LIMIT 1000",
        "%" + like_pattern(address) + "%",
    ):
        if any(t.lower() == address for t in split_destinations(record["destination"])):
            found.append(record["source"])
    return list(dict.fromkeys(found))


async def domain_details(dsn: str, domain: str) -> dict[str, object] | None:
    """The domain row, counts of its addresses, its catch-alls and its routes."""
    async with (
        connection(dsn, "domain show") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await _rows(
            conn, "SELECT domain, node, comment FROM domain WHERE lower(domain) = $1", domain
        )
        if not rows:
            return None
        row = rows[0]
        node = str(row["node"] or "")
        catch_all = "@" + domain
        return {
            **row,
            "case_variants": [r["domain"] for r in rows[1:]],
            "mailboxes": await _count(conn, "mailbox", "email", domain),
            "relays": await _count(conn, "relay", "source", domain),
            "forwards": await _count(conn, "forward", "source", domain),
            "catch_all_forward": [
                r["destination"]
                for r in await _rows(
                    conn,
                    "SELECT destination FROM forward WHERE lower(source) = $1 ORDER BY 1",
                    catch_all,
                )
            ],
            "catch_all_relay": await conn.fetchval(
                "SELECT node FROM relay WHERE lower(source) = $1 LIMIT 1", catch_all
            ),
            "transports": await _rows(
                conn,
                "SELECT domain, node, transport, comment FROM transport"
                f" WHERE lower(domain) = $1 OR lower(domain) LIKE $2{ESCAPE}"
                " ORDER BY lower(domain), node",
                domain,
                in_domain(domain),
            ),
            "gateway_route": _route_json(await route_of(conn, catch_all)),
            "node_route": _route_json(await route_of(conn, catch_all, node)) if node else None,
        }


async def mailbox_details(dsn: str, email: str) -> dict[str, object] | None:
    """The mailbox (password scheme only), its domain's routes, who forwards to it."""
    async with (
        connection(dsn, "mailbox show") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await _rows(
            conn,
            "SELECT email, node, quota, comment,"
            " CASE WHEN password LIKE '{%}%' THEN substring(password from '^[{]([^}]*)[}]')"
            " ELSE '' END AS password_scheme"
            " FROM mailbox WHERE lower(email) = $1",
            email,
        )
        if not rows:
            return None
        row = rows[0]
        domain = email.rpartition("@")[2]
        return {
            **row,
            "case_variants": [r["email"] for r in rows[1:]],
            "domain_exists": bool(
                await conn.fetchval("SELECT 1 FROM domain WHERE lower(domain) = $1", domain)
            ),
            "gateway_route": _route_json(await route_of(conn, email)),
            "node_route": _route_json(await route_of(conn, email, str(row["node"] or ""))),
            "forwarded_from": await pointing_at(conn, email),
        }


async def relay_details(dsn: str, source: str) -> dict[str, object] | None:
    """The relay row, its gateway route and who forwards to it."""
    async with (
        connection(dsn, "relay show") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await _rows(
            conn, "SELECT source, node, comment FROM relay WHERE lower(source) = $1", source
        )
        if not rows:
            return None
        return {
            **rows[0],
            "case_variants": [r["source"] for r in rows[1:]],
            "gateway_route": _route_json(await route_of(conn, source)),
            "forwarded_from": [] if source.startswith("@") else await pointing_at(conn, source),
        }


async def forward_details(dsn: str, source: str) -> dict[str, object] | None:
    """A source's forward rows, the rows that shadow it, who forwards to it."""
    async with (
        connection(dsn, "forward show") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        rows = await _rows(
            conn,
            "SELECT source, destination, comment FROM forward WHERE lower(source) = $1"
            " ORDER BY destination",
            source,
        )
        if not rows:
            return None
        shadowed_by = [
            table
            for table, key in (("mailbox", "email"), ("relay", "source"))
            if await conn.fetchval(f"SELECT 1 FROM {table} WHERE lower({key}) = $1", source)
        ]
        return {
            "source": source,
            "rows": rows,
            "destinations": [t for r in rows for t in split_destinations(str(r["destination"]))],
            "shadowed_by": shadowed_by,
            "forwarded_from": [] if source.startswith("@") else await pointing_at(conn, source),
        }


async def transport_details(dsn: str, key: str) -> list[dict[str, object]]:
    """Every transport row of a key, one per node."""
    async with connection(dsn, "transport show") as conn:
        return await _rows(
            conn,
            "SELECT domain, node, transport, comment FROM transport WHERE lower(domain) = $1"
            " ORDER BY node, domain",
            key,
        )


async def load_raw(dsn: str) -> RawRows:
    """The five tables as stored, in one snapshot (never the passwords)."""
    async with (
        connection(dsn, "check") as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        domains = await conn.fetch("SELECT domain, node FROM domain")
        mailboxes = await conn.fetch("SELECT email, coalesce(node, '') FROM mailbox")
        relays = await conn.fetch("SELECT source, coalesce(node, '') FROM relay")
        forwards = await conn.fetch("SELECT source, coalesce(destination, '') FROM forward")
        transports = await conn.fetch(
            "SELECT domain, coalesce(node, ''), coalesce(transport, '') FROM transport"
        )
    return RawRows(
        domains=[(r[0], r[1]) for r in domains],
        mailboxes=[(r[0], r[1]) for r in mailboxes],
        relays=[(r[0], r[1]) for r in relays],
        forwards=[(r[0], r[1]) for r in forwards],
        transports=[(r[0], r[1], r[2]) for r in transports],
    )
