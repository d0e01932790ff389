"""Composition root: builds the parts from the settings and wires them together.

Owns the decisions that need the whole configuration at once: which database
to use (the configured one, or the embedded one under ``state_dir``), and the
small per-subsystem settings objects. Subsystems never see ``MxgateConfig``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mxgate.config import MxgateConfig
from mxgate.embedded import EmbeddedPostgres

EMBEDDED_DATABASE = "mail"


def embedded_server(config: MxgateConfig) -> EmbeddedPostgres:
    return EmbeddedPostgres(Path(config.state_dir) / "pgdata")


async def _ensure_database(admin_dsn: str, name: str) -> bool:
    """Create ``name`` on the server if missing; True when it was created."""
    from mxgate.directory.admin import ensure_database

    return await ensure_database(admin_dsn, name)


@contextmanager
def database(config: MxgateConfig, *, prepare: bool = False) -> Iterator[str]:
    """The DSN to use: ``database_url``, else the embedded server.

    The embedded server is started when needed and stopped afterwards only if
    this call started it (a running ``serve`` keeps its server). With
    ``prepare`` a new embedded database gets the schema and the tutorial's
    example data, so the README's first command has something to route.
    """
    if config.database_url:
        yield config.database_url
        return
    server = embedded_server(config)
    started_here = server.running_pid() is None
    if started_here:
        print(f"mxgate: starting the embedded PostgreSQL in {server.datadir}", file=sys.stderr)
    server.start()
    try:
        dsn = server.dsn(EMBEDDED_DATABASE)
        created = asyncio.run(_ensure_database(server.dsn(), EMBEDDED_DATABASE))
        if prepare and created:
            from mxgate.directory.admin import prepare_example_database

            asyncio.run(prepare_example_database(dsn))
            print(
                "mxgate: created database 'mail' with the tutorial's example data",
                file=sys.stderr,
            )
        yield dsn
    finally:
        if started_here:
            server.stop()
