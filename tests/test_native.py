"""The compiled modules: present where the build says, current, and really used."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import sys
from pathlib import Path

import pytest

from mxgate import native


def test_the_list_names_existing_modules_once() -> None:
    assert len(set(native.MODULES)) == len(native.MODULES)
    for module in native.MODULES:
        assert native.source_path(module).is_file(), module


@pytest.mark.skipif(
    os.environ.get("MXGATE_TEST_REQUIRE_NATIVE") != "1",
    reason="scripts/test builds the compiled modules and sets MXGATE_TEST_REQUIRE_NATIVE=1",
)
def test_every_listed_module_runs_compiled() -> None:
    for module in native.MODULES:
        importlib.import_module(module)
    assert native.compiled() == list(native.MODULES)
    assert native.stale() is None


def test_a_changed_source_makes_the_build_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "mxgate"
    for module in native.MODULES:
        target = tmp_path.joinpath(*module.split(".")).with_suffix(".py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(native.source_path(module).read_bytes())
    monkeypatch.setattr(native, "PACKAGE_ROOT", package)
    monkeypatch.setattr(native, "STAMP", package / "native.stamp")
    assert native.stale() is None  # nothing compiled: plain Python, never stale

    suffix = native.EXTENSION_SUFFIX
    parse = native.source_path("mxgate.smtp.parse")
    parse.with_suffix(suffix).write_bytes(b"")
    assert native.stale() == "the compiled modules are an incomplete build"
    for module in native.MODULES:
        native.source_path(module).with_suffix(suffix).write_bytes(b"")
    for group in native.GROUPS:
        (tmp_path / f"{group}__mypyc{suffix}").write_bytes(b"")
    assert native.stale() == "compiled modules are present but no build stamp"
    native.STAMP.write_text(native.sources_digest() + "\n")
    assert native.stale() is None
    parse.write_text(parse.read_text() + "\n# edited\n")
    assert native.stale() == "compiled modules were built from other sources"


def test_serve_says_when_the_build_is_stale_or_absent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mxgate.cli import serve

    monkeypatch.setattr(native, "stale", lambda: "compiled modules were built from other sources")
    serve._say_build()
    assert "warning: compiled modules were built from other sources; run scripts/build-native" in (
        capsys.readouterr().err
    )
    monkeypatch.setattr(native, "stale", lambda: None)
    monkeypatch.setattr(native, "extension_paths", lambda: [])
    serve._say_build()
    assert "running as plain Python" in capsys.readouterr().err
    monkeypatch.setattr(native, "extension_paths", lambda: [Path("x.so")])
    serve._say_build()
    assert capsys.readouterr().err == ""


def _written_out_dataclasses() -> list[type]:
    """The dataclasses of the compiled modules whose ``__init__`` is written
    out (``init=False``): the ones built per message, see ``mxgate.native``."""
    found = []
    for module in native.MODULES:
        for value in vars(importlib.import_module(module)).values():
            params = getattr(value, "__dataclass_params__", None)
            if params is None or not isinstance(value, type) or value.__module__ != module:
                continue
            if not params.init:
                found.append(value)
    return found


def _written_init(cls: type) -> list[tuple[str, object]]:
    """The parameters of ``cls.__init__`` as its source writes them: name and
    default (evaluated in the module; ``_NONE`` when there is none). Read
    from the source because a compiled class often has no signature."""
    module = sys.modules[cls.__module__]
    tree = ast.parse(native.source_path(cls.__module__).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    args = init.args.args[1:]  # without self
    defaults: list[ast.expr | None] = [None] * (len(args) - len(init.args.defaults))
    defaults += init.args.defaults
    return [
        (arg.arg, _NONE if default is None else eval(ast.unparse(default), vars(module)))
        for arg, default in zip(args, defaults, strict=True)
    ]


_NONE = object()


def test_written_out_initialisers_take_the_fields_in_order() -> None:
    """A field added to one of these classes without its ``__init__``
    parameter (or in another place, or with another default) fails here."""
    classes = _written_out_dataclasses()
    assert len(classes) >= 16  # the classes of one c=1 session, at least
    for cls in classes:
        parameters = _written_init(cls)
        expected = [f for f in dataclasses.fields(cls) if f.init]
        assert [name for name, _ in parameters] == [f.name for f in expected], cls
        for (_, default), field in zip(parameters, expected, strict=True):
            if field.default is not dataclasses.MISSING:
                assert default == field.default, (cls, field.name)
            elif field.default_factory is not dataclasses.MISSING:
                # None stands for "a fresh one each time".
                assert default is None, (cls, field.name)
            else:
                assert default is _NONE, (cls, field.name)


def test_the_training_run_of_the_profile_guided_build_delivers() -> None:
    """scripts/build_native.py trains the instrumented build with it; should it
    stop working, the build would quietly fall back to a plain one."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / "pgo_train.py"), "-n", "60"],
        env=dict(os.environ, PYTHONPATH=str(root / "src")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
