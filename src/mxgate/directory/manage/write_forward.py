"""Writing forward and transport rows: add, remove (and edit for transport).

The same conventions as ``write.py`` (one transaction each, parameters only,
keys matched as ``lower(key)``, warnings returned, never printed). Forward
rows are one per destination, keyed by (source, destination) since migration
0001; the loop and dead-end rules were checked by the caller on a snapshot.
"""

from __future__ import annotations

from mxgate.core.rules import Refusal, source_domain
from mxgate.directory.manage.write import (
    NotFound,
    dangling,
    delete_key,
    our_domain,
    set_clause,
    writing,
)

# --- forward ----------------------------------------------------------------------


async def add_forwards(dsn: str, source: str, destinations: list[str], comment: str | None) -> None:
    """One row per destination. The pure rules (loops, dead ends) were
    checked by the caller on a snapshot; this checks the domain and the key."""
    async with writing(dsn, "forward add") as conn:
        await our_domain(conn, source, "forward")
        for target in destinations:
            if await conn.fetchval(
                "SELECT 1 FROM forward WHERE lower(source) = $1 AND destination = $2",
                source,
                target,
            ):
                raise Refusal(f"forward {source} -> {target} already exists")
            await conn.execute(
                "INSERT INTO forward (source, destination, comment) VALUES ($1, $2, $3)",
                source,
                target,
                comment,
            )


async def remove_forwards(dsn: str, source: str, destinations: list[str]) -> tuple[int, list[str]]:
    """Remove the rows ``source -> each destination`` (case-insensitively),
    or every row of the source when ``destinations`` is empty; all or none.
    Returns the number of rows removed and warnings."""
    async with writing(dsn, "forward remove") as conn:
        if not destinations:
            removed = await delete_key(conn, "forward", "source", source)
        else:
            removed = 0
            for target in destinations:
                status = await conn.execute(
                    "DELETE FROM forward WHERE lower(source) = $1 AND lower(destination) = $2",
                    source,
                    target.lower(),
                )
                count = int(status.split()[-1])
                if not count:
                    rows = await conn.fetch(
                        "SELECT destination FROM forward WHERE lower(source) = $1 ORDER BY 1",
                        source,
                    )
                    have = ", ".join(repr(r["destination"]) for r in rows) or "none"
                    raise NotFound(
                        f"forward {source} has no row with destination {target}"
                        f" (its destinations: {have})"
                    )
                removed += count
        return removed, await dangling(conn, source)


# --- transport --------------------------------------------------------------------


async def add_transport(
    dsn: str, key: str, value: str, node: str, comment: str | None
) -> list[str]:
    async with writing(dsn, "transport add") as conn:
        existing = await conn.fetchval(
            "SELECT domain FROM transport WHERE lower(domain) = $1 AND coalesce(node, '') = $2",
            key,
            node,
        )
        if existing is not None:
            raise Refusal(
                f"transport {key} (node {node!r}) already exists"
                + ("" if existing == key else f" (stored as {existing!r})")
                + f"; change it with: mxgate transport edit {key} --transport ..."
            )
        await conn.execute(
            "INSERT INTO transport (domain, transport, node, comment) VALUES ($1, $2, $3, $4)",
            key,
            value,
            node,
            comment,
        )
        if (
            "." in key
            and not key.startswith(".")
            and not await conn.fetchval(
                "SELECT 1 FROM domain WHERE lower(domain) = $1", source_domain(key)
            )
        ):
            return [f"{source_domain(key)} is not one of our domains: the row applies once it is"]
        return []


async def edit_transport(dsn: str, key: str, node: str, changes: dict[str, object]) -> None:
    async with writing(dsn, "transport edit") as conn:
        sets = set_clause("transport", changes, 3)
        status = await conn.execute(
            f"UPDATE transport SET {sets} WHERE lower(domain) = $1 AND coalesce(node, '') = $2",
            key,
            node,
            *changes.values(),
        )
        if status == "UPDATE 0":
            raise NotFound(f"transport {key} (node {node!r}) does not exist")


async def remove_transport(dsn: str, key: str, node: str) -> None:
    async with writing(dsn, "transport remove") as conn:
        status = await conn.execute(
            "DELETE FROM transport WHERE lower(domain) = $1 AND coalesce(node, '') = $2",
            key,
            node,
        )
        if status == "DELETE 0":
            raise NotFound(f"transport {key} (node {node!r}) does not exist")
