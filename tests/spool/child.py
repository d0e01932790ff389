"""A spool writer run as a separate process by ``test_processes``.

``python -m tests.spool.child SPOOL COUNT CONCURRENCY`` receives COUNT messages
(forever when COUNT < 0) from CONCURRENCY coroutines sharing group commit, and
prints each queue id on its own line, flushed, only after its commit returned:
every printed id is an acknowledged message.
"""

from __future__ import annotations

import asyncio
import sys

from mxgate.spool import Spool
from tests.spool.util import make_body, make_envelope


def body_size(queue_id: str) -> int:
    """The body size of a message, derived from its id (so the parent can check it)."""
    return 1000 + (sum(queue_id.encode()) % 16) * 9000  # up to 136 KB: some outgrow the buffer


async def main(root: str, count: int, concurrency: int) -> None:
    remaining = [count]
    with Spool(root) as spool:

        async def session() -> None:
            while remaining[0] != 0:
                remaining[0] -= 1
                with spool.begin() as writer:
                    body = make_body(writer.queue_id, body_size(writer.queue_id))
                    for start in range(0, len(body), 4096):
                        writer.write(body[start : start + 4096])
                        await asyncio.sleep(0)  # interleave like network reads
                    await writer.commit(make_envelope(writer.queue_id, size=len(body)))
                sys.stdout.write(writer.queue_id + "\n")
                sys.stdout.flush()

        await asyncio.gather(*(session() for _ in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
