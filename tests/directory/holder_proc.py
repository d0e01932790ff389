"""One gateway's routing snapshot in a process of its own (test_processes.py).

Usage: python holder_proc.py DSN CACHE_PATH

Starts a SnapshotHolder, prints "ready", then answers each line of stdin
with one line of JSON: "mailbox KEY", "domain KEY", "relay KEY", "forward KEY"
and "transport KEY" give that table's entry (null when absent), "version" the
snapshot's version. Stops at end of input.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path

from mxgate.directory import SnapshotHolder


def answer(holder: SnapshotHolder, line: str) -> object:
    command, _, key = line.strip().partition(" ")
    data = holder.current
    if data is None:
        return None
    if command == "version":
        return data.version
    tables: dict[str, Mapping[str, object]] = {
        "mailbox": data.mailboxes,
        "domain": data.domains,
        "relay": data.relays,
        "forward": data.forwards,
        "transport": data.transports,
    }
    return tables[command].get(key)


async def main(dsn: str, cache: Path) -> None:
    holder = SnapshotHolder(dsn, cache_path=cache)
    await holder.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    try:
        while line := await reader.readline():
            print(json.dumps(answer(holder, line.decode())), flush=True)
    finally:
        await holder.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
