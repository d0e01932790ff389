"""``mxgate config show|check``: the effective settings, like ``postconf``."""

from __future__ import annotations

from typing import Annotated

import typer

from mxgate.cli.common import ConfigOption, settings
from mxgate.config import show_lines

app = typer.Typer(no_args_is_help=True, help="Show or check the settings.")


@app.command("show")
def show(
    config: ConfigOption = None,
    changed: Annotated[
        bool, typer.Option("-n", "--changed", help="Only settings that differ from the default.")
    ] = False,
) -> None:
    """Print every effective setting; non-defaults say where they were set."""
    loaded = settings(config)
    for line in show_lines(loaded, only_changed=changed):
        typer.echo(line)


@app.command("check")
def check(config: ConfigOption = None) -> None:
    """Exit 0 when the settings are valid, else print why and exit 2."""
    loaded = settings(config)
    typer.echo(f"ok: {loaded.file or 'no settings file'}")
