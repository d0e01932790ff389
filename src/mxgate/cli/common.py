"""What every command shares: the --config option and turning errors into exits."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from mxgate.config import ConfigError, LoadedConfig, load_config

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Settings file (TOML). Default: $MXGATE_CONFIG, else /etc/mxgate/mxgate.toml.",
        dir_okay=False,
    ),
]

EXIT_USAGE = 2


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"mxgate: {message}", file=sys.stderr)
    raise typer.Exit(code)


def settings(path: Path | None) -> LoadedConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)
