import asyncio

import asyncpg


def test_each_test_gets_an_empty_database(database_url: str) -> None:
    async def run() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema='public'"
                )
            )
        finally:
            await conn.close()

    assert asyncio.run(run()) == 0
