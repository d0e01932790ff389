"""The routing snapshot: the five tables as the routing core reads them.

Owns the in-memory shape of the routing data. Every key is lower-case (and a
domain is an IDNA A-label), so that rows stored with upper case still match,
which the tutorial's Postfix queries silently miss (SPEC section 9).

Never does I/O. The directory layer fills it (bulk load, then one key group at
a time as the change log reports edits); the routing core only reads it.

A key group is every row whose key folds to the same lower-case string: the
directory layer replaces a whole group at once (``replace_*``), so case
variants and several forward rows for one source need no bookkeeping here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GATEWAY_NODE = ""
"""The transport ``node`` value of rows meant for gateways ('' or NULL)."""


@dataclass(slots=True, repr=False)
class RoutingData:
    """All routing rows, indexed for O(1) lookups.

    domains:    domain -> node column of the domain row (None when NULL)
    mailboxes:  email -> node
    relays:     source ('user@d' or '@d' for a catch-all) -> node
    forwards:   source ('user@d' or '@d') -> destination column of each row,
                unsplit and as written (a column may hold a list)
    transports: key (address, domain, '.parent.domain' or '*') -> {node: transport},
                node '' for gateway rows (NULL is stored as '')
    version:    the highest change-log id applied (0: bulk load of an
                unmigrated database, where no change log exists)
    """

    domains: dict[str, str | None] = field(default_factory=dict)
    mailboxes: dict[str, str] = field(default_factory=dict)
    relays: dict[str, str] = field(default_factory=dict)
    forwards: dict[str, tuple[str, ...]] = field(default_factory=dict)
    transports: dict[str, dict[str, str]] = field(default_factory=dict)
    version: int = 0

    def __repr__(self) -> str:
        """Sizes, not contents. The contents of a million mailboxes would be
        a repr of 100 MB, and one gets built without anyone printing it:
        Python 3.11's ``asyncio.run`` formats the repr of its task, result
        included, when it restores the SIGINT handler (twice, for a snapshot
        returned by ``asyncio.run(load_snapshot(...))``, as the CLI does)."""
        sizes = (
            f"{name}={len(table)}"
            for name, table in (
                ("domains", self.domains),
                ("mailboxes", self.mailboxes),
                ("relays", self.relays),
                ("forwards", self.forwards),
                ("transports", self.transports),
            )
        )
        return f"RoutingData(version={self.version}, {', '.join(sizes)})"

    def is_our_domain(self, domain: str) -> bool:
        return domain in self.domains

    def counts(self) -> dict[str, int]:
        """Row counts per table, for status output and logs."""
        return {
            "domain": len(self.domains),
            "mailbox": len(self.mailboxes),
            "relay": len(self.relays),
            "forward": sum(len(v) for v in self.forwards.values()),
            "transport": sum(len(v) for v in self.transports.values()),
        }
