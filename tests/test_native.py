"""The compiled modules: present where the build says, current, and really used."""

from __future__ import annotations

import importlib
import os
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
