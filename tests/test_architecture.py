"""The package boundaries hold: checked by parsing every module's imports.

core is pure (stdlib only, no I/O modules); only directory imports asyncpg;
smtp depends on nothing of ours but core.reply; only app and cli read settings.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "mxgate"

FORBIDDEN_IN_CORE = {"asyncio", "socket", "ssl", "os", "time", "random", "asyncpg", "subprocess"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def module_name(path: Path) -> str:
    return ".".join(("mxgate", *path.relative_to(SRC).with_suffix("").parts))


@pytest.mark.parametrize("path", modules("core"), ids=module_name)
def test_core_is_pure(path: Path) -> None:
    for name in imports_of(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN_IN_CORE, f"{module_name(path)} imports {name}"
        if top == "mxgate":
            assert name.startswith("mxgate.core"), f"{module_name(path)} imports {name}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=module_name)
def test_only_directory_speaks_to_postgresql(path: Path) -> None:
    if module_name(path).startswith("mxgate.directory"):
        return
    assert not any(n.split(".")[0] == "asyncpg" for n in imports_of(path)), module_name(path)


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=module_name)
def test_only_app_and_cli_read_settings(path: Path) -> None:
    name = module_name(path)
    if name in ("mxgate.app", "mxgate.config") or name.startswith("mxgate.cli"):
        return
    assert "mxgate.config" not in imports_of(path), name


@pytest.mark.parametrize("path", modules("smtp"), ids=module_name)
def test_smtp_layer_depends_only_on_replies(path: Path) -> None:
    for name in imports_of(path):
        if name.startswith("mxgate"):
            assert name.startswith(("mxgate.smtp", "mxgate.core.reply")), (module_name(path), name)
        assert name.split(".")[0] not in {"asyncio", "socket", "ssl", "asyncpg"}, name


@pytest.mark.parametrize("path", modules("spool"), ids=module_name)
def test_spool_knows_no_smtp_or_sql(path: Path) -> None:
    for name in imports_of(path):
        assert not name.startswith(("mxgate.smtp", "mxgate.directory", "asyncpg")), name
