"""``mxgate export``, ``mxgate export postfix`` and ``mxgate import``.

Owns the commands: reading and writing the document text (YAML through
PyYAML when it is not in the layout mxgate writes, JSON), the progress
display (rich, on stderr, only on a terminal), the output of a diff, and the
files of ``export postfix``. The document rules live in ``core.transfer``,
the diff in ``core.transfer_diff``, the SQL in ``directory.transfer`` and the
map texts in ``core.postfix_maps``.

Never writes to the database itself, never leaves a half-written export (a
temporary file renamed into place), and never makes an export or a map file
readable by others: both hold password hashes or the database password.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from mxgate.app import EMBEDDED_DATABASE, database, embedded_server
from mxgate.cli.common import EXIT_USAGE, ConfigOption, fail, settings
from mxgate.config import MxgateConfig
from mxgate.core.postfix_maps import (
    PostfixSettings,
    map_files,
    pgsql_connection,
    postconf_text,
)
from mxgate.core.transfer import Document, DocumentError, read_document
from mxgate.core.transfer_diff import Diff, diff_json, diff_lines
from mxgate.core.transfer_text import (
    JSON_DECODER,
    MAX_NESTING,
    DuplicateKeyError,
    json_lines,
    nests_too_deep,
    parse_own_yaml,
    yaml_lines,
)
from mxgate.directory import DirectoryError
from mxgate.directory.transfer import export_tables, import_document
from mxgate.embedded import EmbeddedPostgres, EmbeddedPostgresError

export_app = typer.Typer(
    help="Write the whole data set (YAML or JSON), or Postfix map files (export postfix).",
    invoke_without_command=True,
    no_args_is_help=False,
)


@contextmanager
def progress_display() -> Iterator[Callable[[str], None]]:
    """A step reporter: a spinner with the current step on stderr when it
    is a terminal, nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda _step: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=None)
        yield lambda step: progress.update(task, description=step)


def _write_private(path: Path, lines: Iterable[str], mode: int = 0o600) -> None:
    """Write ``lines`` to ``path`` through a temporary file renamed into place.

    A symbolic link is written through (its target is replaced, the link
    stays); anything but a regular file is refused, since the rename would
    replace a device or a FIFO with a file of password hashes."""
    path = Path(os.path.realpath(path))
    try:
        kind = path.stat().st_mode
    except FileNotFoundError:
        kind = stat.S_IFREG
    if not stat.S_ISREG(kind):
        what = "a directory" if stat.S_ISDIR(kind) else "not a regular file"
        raise OSError(f"{path} is {what}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", buffering=1 << 20) as out:
            out.writelines(line + "\n" for line in lines)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@export_app.callback()
def export_cmd(
    ctx: typer.Context,
    config: ConfigOption = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="yaml or json (one row per line either way).")
    ] = "yaml",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here (mode 600) instead of to stdout."),
    ] = None,
) -> None:
    """Write every row of the five tables (password hashes and comments too)."""
    if ctx.invoked_subcommand is not None:
        if fmt != "yaml" or output is not None:
            fail("--format and --output are options of `mxgate export` alone", EXIT_USAGE)
        ctx.obj = config  # `mxgate export --config F postfix DIR` means F too
        return
    if fmt not in ("yaml", "json"):
        fail(f"--format {fmt!r}: one of yaml, json", EXIT_USAGE)
    if output is not None and (not output.name or output.is_dir()):
        fail(f"--output {str(output)!r}: give a file name", EXIT_USAGE)
    loaded = settings(config)
    with progress_display() as step:
        try:
            with database(loaded.config) as dsn:
                data = asyncio.run(export_tables(dsn, step))
        except (DirectoryError, EmbeddedPostgresError) as exc:
            fail(str(exc))
        lines = yaml_lines(data) if fmt == "yaml" else json_lines(data)
        if output is not None:
            step(f"writing {output}")
            try:
                _write_private(output, lines)
            except OSError as exc:
                fail(f"cannot write {output}: {exc}")
    if output is None:  # after the progress display, which may share the terminal
        # UTF-8 whatever the locale, as with --output: the file is data.
        sys.stdout.flush()
        out = sys.stdout.buffer
        for line in lines:
            out.write(line.encode("utf-8") + b"\n")
        out.flush()
    counts = ", ".join(f"{name} {len(rows)}" for name, rows in data.items())
    print(f"mxgate: exported {counts}", file=sys.stderr)


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader, refusing a mapping that names a key twice (which
    PyYAML resolves silently in favour of the last; see DuplicateKeyError)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[object] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<": merged keys may be overridden, as YAML says
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, str | int | float | bool) or key is None:
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping",
                            node.start_mark,
                            f"found the key {key!r} twice",
                            key_node.start_mark,
                        )
                    seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def parse_text(text: str, name: str) -> Any:
    """The document in ``text``: JSON for *.json or text starting with '{',
    else YAML (the layout mxgate writes is read without PyYAML)."""
    first = text.lstrip()[:1]
    if name.endswith(".json") or (first == "{" and not name.endswith((".yaml", ".yml"))):
        try:
            return JSON_DECODER.decode(text)
        except DuplicateKeyError as exc:
            fail(f"{name}: refused: {exc}")
        except ValueError as exc:
            fail(f"{name}: not valid JSON: {exc}")
        except RecursionError:
            fail(f"{name}: refused: nested too deeply")
    own = parse_own_yaml(text)
    if own is not None:
        return own
    if nests_too_deep(text):
        fail(f"{name}: refused: nested more than {MAX_NESTING} levels deep")
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        fail(f"{name}: not valid YAML: {exc}")
    except RecursionError:
        fail(f"{name}: refused: nested too deeply")


def _refuse(exc: DocumentError, name: str) -> None:
    print(f"mxgate: {name}: refused, nothing was written ({exc.total} problems):", file=sys.stderr)
    print(str(exc), file=sys.stderr)
    raise typer.Exit(1)


def import_cmd(
    file: Annotated[
        str, typer.Argument(metavar="FILE", help="YAML or JSON data set; - for stdin.")
    ],
    config: ConfigOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Only show what would change.")
    ] = False,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Also remove the rows the file lacks: the file is the data."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The diff as one JSON object.")] = False,
) -> None:
    """Load a data set: validate all of it, then apply the diff in one transaction."""
    loaded = settings(config)
    try:
        # Bytes from stdin too, decoded here: the text layer would pass bad
        # bytes on as surrogates, which the YAML parser then trips over.
        raw = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
        text = raw.decode("utf-8")
        del raw
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")
    name = "stdin" if file == "-" else file
    with progress_display() as step:
        step(f"reading {name}")
        doc = parse_text(text, name)
        del text
        step("checking every row")
        document: Document | None = None
        try:
            document = read_document(doc, replace=replace, consume=True)
        except DocumentError as exc:
            _refuse(exc, name)
        del doc
        assert document is not None
        try:
            with database(loaded.config) as dsn:
                diff = asyncio.run(
                    import_document(dsn, document, replace=replace, dry_run=dry_run, progress=step)
                )
        except DocumentError as exc:
            _refuse(exc, name)
        except (DirectoryError, EmbeddedPostgresError) as exc:
            fail(f"{exc} (nothing was written)")
    _report(diff, dry_run=dry_run, as_json=as_json)


def _report(diff: Diff, *, dry_run: bool, as_json: bool) -> None:
    if as_json:
        document = {"dry_run": dry_run, "applied": not dry_run, **diff_json(diff)}
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    for line in diff_lines(diff):
        typer.echo(line)
    if dry_run:
        typer.echo("dry run: nothing was written")
    elif diff.writes:
        typer.echo(f"applied {diff.writes} row changes in one transaction")


def postfix_settings(config: MxgateConfig, map_dir: str) -> PostfixSettings:
    networks = tuple(
        f"[{n.network_address}]/{n.prefixlen}" if n.version == 6 else str(n)
        for n in config.mynetworks
    )
    return PostfixSettings(
        map_dir=map_dir,
        node_name=config.node_name,
        node_fallback_to_gateway=config.node_fallback_to_gateway,
        recipient_delimiter=config.recipient_delimiter,
        myhostname=config.myhostname,
        mynetworks=networks,
        default_transport=config.default_transport,
        relayhost=config.relayhost,
        smtpd_recipient_limit=config.smtpd_recipient_limit,
        virtual_alias_recursion_limit=config.virtual_alias_recursion_limit,
        virtual_alias_expansion_limit=config.virtual_alias_expansion_limit,
        message_size_limit=config.message_size_limit,
    )


def _database_url(config: MxgateConfig) -> str:
    if config.database_url:
        return config.database_url
    server: EmbeddedPostgres = embedded_server(config)
    return server.dsn(EMBEDDED_DATABASE)


@export_app.command("postfix")
def export_postfix(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write the files.")],
    config: ConfigOption = None,
    map_dir: Annotated[
        str | None,
        typer.Option(
            "--map-dir", help="Where the .cf files will live on the Postfix host (default: DIR)."
        ),
    ] = None,
) -> None:
    """Corrected pgsql map files and the postconf lines for people who keep Postfix."""
    loaded = settings(config or (ctx.obj if isinstance(ctx.obj, Path) else None))
    try:
        connection = pgsql_connection(_database_url(loaded.config))
        wanted = postfix_settings(loaded.config, map_dir or str(directory.resolve()))
        files = map_files(connection, wanted)
    except ValueError as exc:
        fail(f"database_url: {exc}", EXIT_USAGE)
    files["postconf.txt"] = postconf_text(wanted)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            mode = 0o640 if name.endswith(".cf") else 0o644
            _write_private(directory / name, text.splitlines(), mode)
    except OSError as exc:
        fail(f"cannot write to {directory}: {exc}")
    for name in files:
        typer.echo(str(directory / name))
