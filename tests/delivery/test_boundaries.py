"""The delivery package's import rules (STYLE section 3): it may use smtp,
core and spool, and dnspython; the sans-IO client stays free of I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "mxgate"
ALLOWED = ("mxgate.delivery", "mxgate.smtp", "mxgate.core", "mxgate.spool", "mxgate.maillog")


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((SRC / "delivery").glob("*.py")), ids=lambda p: p.name)
def test_delivery_depends_on_smtp_core_spool_only(path: Path) -> None:
    for name in imports_of(path):
        if name.startswith("mxgate"):
            assert name.startswith(ALLOWED), (path.name, name)
        assert name.split(".")[0] not in {"asyncpg", "aiosmtplib"}, (path.name, name)


@pytest.mark.parametrize("name", ["client.py", "client_events.py", "reader.py", "encode.py"])
def test_sans_io_client_does_no_io(name: str) -> None:
    forbidden = {"asyncio", "socket", "ssl", "os", "time", "random", "dns", "selectors"}
    for imported in imports_of(SRC / "smtp" / name):
        assert imported.split(".")[0] not in forbidden, (name, imported)
