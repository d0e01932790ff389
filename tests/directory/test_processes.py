"""Two gateways (the tutorial's A and B) in two OS processes share one database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from mxgate.directory import migrate
from tests.directory.helpers import execute, make_tutorial

SCRIPT = Path(__file__).with_name("holder_proc.py")
D = "server1.example.com"


class Gateway:
    def __init__(self, dsn: str, cache: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), dsn, str(cache)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def ready(self) -> None:
        assert self.stdout.readline().strip() == "ready"

    def ask(self, question: str) -> object:
        self.stdin.write(question + "\n")
        self.stdin.flush()
        line = self.stdout.readline()
        assert line, "gateway process died"
        return json.loads(line)

    def close(self) -> None:
        self.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(gateways: list[Gateway], question: str, expected: object, since: float) -> None:
    for gateway in gateways:
        while (got := gateway.ask(question)) != expected:
            assert time.monotonic() - since < 1.0, f"{question}: still {got!r} after 1 s"
            time.sleep(0.005)


def test_two_gateway_processes_see_an_edit_within_a_second(
    database_url: str, tmp_path: Path
) -> None:
    async def prepare() -> None:
        await make_tutorial(database_url)
        await migrate(database_url)

    asyncio.run(prepare())
    gateways = [Gateway(database_url, tmp_path / f"cache-{name}") for name in "AB"]
    try:
        for gateway in gateways:
            gateway.ready()
            assert gateway.ask(f"mailbox james@{D}") == "maila"
            assert gateway.ask(f"mailbox anna@{D}") is None

        edits = [
            (
                f"INSERT INTO mailbox (email, password, node) VALUES ('Anna@{D}', 'x', 'mailb')",
                f"mailbox anna@{D}",
                "mailb",
            ),
            (
                f"INSERT INTO forward (source, destination) VALUES ('@{D}', 'anna@{D}')",
                f"forward @{D}",
                [f"anna@{D}", "james@example.com"],
            ),
            (
                "DELETE FROM domain WHERE domain = 'other.example.com'",
                "domain other.example.com",
                None,
            ),
        ]
        for sql, question, expected in edits:
            asyncio.run(execute(database_url, sql))
            wait_for(gateways, question, expected, since=time.monotonic())
        versions = {gateway.ask("version") for gateway in gateways}
        assert versions == {3}
    finally:
        for gateway in gateways:
            gateway.close()
