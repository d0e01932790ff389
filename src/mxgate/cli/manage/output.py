"""What the table commands share: options, running on the database, output.

Owns the exit codes of the management commands (0 done; 1 refused by a rule,
not found, or the database failed, with one line naming the value and the
rule; 2 usage, as typer gives it), the list options (filters and paging),
and the two outputs: a rich table or key/value lines for people, one JSON
document for scripts. Cell values are printed as plain text, never as rich
markup (``smtp:[host]`` stays as written).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mxgate.app import database
from mxgate.cli.common import EXIT_USAGE, fail, settings
from mxgate.core.rules import Refusal, domain_name
from mxgate.directory import DirectoryError
from mxgate.directory.manage import LIST_COLUMNS, ListQuery, Page, list_rows
from mxgate.embedded import EmbeddedPostgresError
from mxgate.passwords import PasswordError

T = TypeVar("T")

DEFAULT_LIMIT = 100

JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON document, for scripts.")]
PatternOpt = Annotated[
    str | None,
    typer.Option("--pattern", "-p", help="Only keys matching this glob ('*' any text, '?' one)."),
]
DomainOpt = Annotated[str | None, typer.Option("--domain", "-d", help="Only rows of this domain.")]
NodeOpt = Annotated[
    str | None, typer.Option("--node", help="Only rows of this node ('' for none / gateway).")
]
# Bounded: PostgreSQL's LIMIT and OFFSET are 64-bit (a larger one was a
# DataError from the database instead of a usage error).
LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=2**62, help="Rows per page.")]
OffsetOpt = Annotated[int, typer.Option("--offset", min=0, max=2**62, help="Rows to skip.")]
CommentOpt = Annotated[str | None, typer.Option("--comment", help="Free text ('' clears it).")]


@contextmanager
def refusals() -> Iterator[None]:
    """Rule refusals, missing rows and database failures: one line, exit 1."""
    try:
        yield
    except (Refusal, PasswordError) as exc:
        fail(str(exc))
    except (DirectoryError, EmbeddedPostgresError) as exc:
        fail(str(exc))


def on_database(config: Path | None, operation: Callable[[str], Coroutine[Any, Any, T]]) -> T:
    """Run one database operation (the embedded server is started if needed)."""
    loaded = settings(config)
    with database(loaded.config) as dsn:
        return asyncio.run(operation(dsn))


def need_change(changes: Mapping[str, object], options: str) -> None:
    if not changes:
        fail(f"nothing to change: give {options}", EXIT_USAGE)


def console() -> Console:
    out = Console(highlight=False)
    if not out.is_terminal:
        # A pipe or a file: one line per row, however long.
        out = Console(highlight=False, width=10_000)
    return out


# Rows may come from other tools (or an import) with any characters in a
# comment: shown escaped, so that ESC cannot drive the terminal and a newline
# cannot forge a row.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _visible(text: str) -> str:
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def _table(names: Sequence[str]) -> Table:
    """Columns that fold rather than cut on a narrow terminal: cut, keys
    such as xn--... domains all end in the same ellipsis."""
    table = Table(show_edge=False, pad_edge=False)
    for name in names:
        table.add_column(name, overflow="fold")
    return table


def _cell(value: object) -> Text:
    return Text("-" if value is None else _visible(str(value)))


def echo_json(document: object) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False, default=str))


def list_table(
    config: Path | None,
    table: str,
    *,
    limit: int,
    offset: int,
    as_json: bool,
    pattern: str | None = None,
    domain: str | None = None,
    node: str | None = None,
    destination: str | None = None,
) -> None:
    """What every ``TABLE list`` command does: filter, fetch one page, print it."""
    with refusals():
        query = ListQuery(
            table,
            pattern=pattern,
            domain=domain_name(domain) if domain is not None else None,
            node=node,
            destination=destination,
            limit=limit,
            offset=offset,
        )
        page = on_database(config, lambda dsn: list_rows(dsn, query))
    show_page(query, page, as_json)


def show_page(query: ListQuery, page: Page, as_json: bool) -> None:
    """One page of a list, with how many rows follow it."""
    if as_json:
        echo_json(
            {
                "table": query.table,
                "total": page.total,
                "offset": query.offset,
                "limit": query.limit,
                "rows": page.rows,
            }
        )
        return
    out = console()
    if not page.rows:
        out.print(Text(f"no {query.table} rows" + (" here" if page.total else "")))
    else:
        table = _table(LIST_COLUMNS[query.table][1])
        for row in page.rows:
            table.add_row(*(_cell(v) for v in row.values()))
        out.print(table)
    shown = query.offset + len(page.rows)
    if page.total > shown:
        out.print(
            Text(
                f"... {page.total - shown} more (next page: --offset {shown}); {page.total} in all"
            )
        )


def show_object(title: str, document: Mapping[str, object], as_json: bool) -> None:
    """One object and its related rows: key/value lines, sub-tables for lists of rows."""
    if as_json:
        echo_json(document)
        return
    out = console()
    out.print(Text(title, style="bold"))
    width = max((len(k) for k in document), default=0) + 1
    for key, value in document.items():
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            out.print(Text(f"{key + ':':<{width}}"))
            table = _table(list(value[0].keys()))
            for row in value:
                table.add_row(*(_cell(v) for v in row.values()))
            out.print(table)
        else:
            out.print(Text(f"{key + ':':<{width}} {_visible(_plain(value))}"))


def _plain(value: object) -> str:
    if value is None or value == []:
        return "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v!r}" for k, v in value.items())
    if isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(str(v) for v in value)
    return str(value)


def warn(messages: Sequence[str]) -> None:
    for message in messages:
        typer.echo(f"mxgate: warning: {message}", err=True)


def not_found(what: str) -> NoReturn:
    fail(f"{what} does not exist")
