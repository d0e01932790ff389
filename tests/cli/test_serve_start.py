"""``mxgate serve`` at start: the spool of a gateway that is still dying."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import typer

from mxgate.cli import serve
from mxgate.spool import Spool


def test_waits_for_a_spool_that_is_being_released(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The predecessor's last thread leaves the kernel a moment after the start.
    holder = Spool(tmp_path / "spool")
    release = threading.Timer(0.5, holder.close)
    release.start()
    try:
        report = serve._recover(tmp_path / "spool")
    finally:
        release.cancel()
        holder.close()
    assert report.messages == 0
    assert "is in use; waiting for it to be released" in capsys.readouterr().err


def test_a_spool_held_on_is_refused_after_the_patience(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "SPOOL_LOCK_PATIENCE", 0.3)
    with Spool(tmp_path / "spool"), pytest.raises(typer.Exit) as stopped:
        serve._recover(tmp_path / "spool")
    assert stopped.value.exit_code == 1
    assert "is in use by another process" in capsys.readouterr().err
