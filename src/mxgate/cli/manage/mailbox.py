"""``mxgate mailbox add|passwd|list|show|edit|remove``: the mailboxes Dovecot serves.

Passwords are read from a prompt (twice, without echo) when standard input
is a terminal, else from its first line (``echo secret | mxgate mailbox add
...``); never from the command line, where ``ps`` and shell histories would
show them. They are stored hashed (``mxgate.passwords``).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mxgate.cli.common import ConfigOption
from mxgate.cli.manage.output import (
    DEFAULT_LIMIT,
    CommentOpt,
    DomainOpt,
    JsonOpt,
    LimitOpt,
    NodeOpt,
    OffsetOpt,
    PatternOpt,
    list_table,
    need_change,
    not_found,
    on_database,
    refusals,
    show_object,
    warn,
)
from mxgate.core import rules
from mxgate.directory import manage
from mxgate.passwords import (
    DEFAULT_SCHEME,
    PasswordError,
    Scheme,
    check_password,
    hash_password,
)

app = typer.Typer(no_args_is_help=True, help="Mailboxes (the mailbox table).")

EmailArg = Annotated[str, typer.Argument(metavar="ADDRESS", help="user@domain of our domain.")]
SchemeOpt = Annotated[
    Scheme,
    typer.Option("--scheme", case_sensitive=False, help="Password hash scheme Dovecot verifies."),
]
RoundsOpt = Annotated[
    int | None,
    typer.Option(
        "--rounds",
        help="SHA512-CRYPT rounds (default 5000) or BLF-CRYPT cost (default 10).",
    ),
]
QuotaOpt = Annotated[
    str | None, typer.Option("--quota", help="Bytes, or with K, M, G, T (e.g. 10M).")
]


def read_password(scheme: Scheme) -> str:
    """From a prompt (twice, no echo) on a terminal, else the first line of stdin."""
    if sys.stdin is not None and sys.stdin.isatty():
        while True:
            password = str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))
            try:
                check_password(password, scheme)
                return password
            except ValueError as exc:
                typer.echo(f"mxgate: {exc}; try again", err=True)
    try:
        line = sys.stdin.readline() if sys.stdin is not None else ""
    except UnicodeDecodeError:
        raise PasswordError("the password is not UTF-8 text") from None
    return line.removesuffix("\n").removesuffix("\r")


@app.command("add")
def add_cmd(
    email: EmailArg,
    config: ConfigOption = None,
    node: Annotated[
        str | None, typer.Option("--node", help="Its node (default: the domain's node).")
    ] = None,
    quota: QuotaOpt = None,
    comment: CommentOpt = None,
    scheme: SchemeOpt = DEFAULT_SCHEME,
    rounds: RoundsOpt = None,
) -> None:
    """Add a mailbox; the password comes from the prompt or standard input."""
    with refusals():
        address = rules.mailbox_address(email, "mailbox")
        node_value = rules.node_name(node) if node is not None else None
        quota_value = rules.quota(quota) if quota is not None else None
        text = rules.comment(comment)
        hashed = hash_password(read_password(scheme), scheme, rounds)
        warnings = on_database(
            config,
            lambda dsn: manage.add_mailbox(dsn, address, hashed, node_value, quota_value, text),
        )
    warn(warnings)
    typer.echo(f"added mailbox {address} ({scheme.value})")


@app.command("passwd")
def passwd_cmd(
    email: EmailArg,
    config: ConfigOption = None,
    scheme: SchemeOpt = DEFAULT_SCHEME,
    rounds: RoundsOpt = None,
) -> None:
    """Set a mailbox's password (from the prompt or standard input)."""
    with refusals():
        address = rules.mailbox_address(email, "mailbox")
        # Before the prompt: nobody should type a password twice to learn of a typo.
        found = on_database(config, lambda dsn: manage.mailbox_details(dsn, address))
    if found is None:
        not_found(f"mailbox {address}")
    with refusals():
        hashed = hash_password(read_password(scheme), scheme, rounds)
        on_database(config, lambda dsn: manage.set_password(dsn, address, hashed))
    typer.echo(f"changed the password of {address} ({scheme.value})")


@app.command("list")
def list_cmd(
    config: ConfigOption = None,
    domain: DomainOpt = None,
    node: NodeOpt = None,
    pattern: PatternOpt = None,
    limit: LimitOpt = DEFAULT_LIMIT,
    offset: OffsetOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """List mailboxes (never their password hashes), a page at a time."""
    list_table(
        config,
        "mailbox",
        pattern=pattern,
        domain=domain,
        node=node,
        limit=limit,
        offset=offset,
        as_json=as_json,
    )


@app.command("show")
def show_cmd(email: EmailArg, config: ConfigOption = None, as_json: JsonOpt = False) -> None:
    """A mailbox, its password scheme, its routes and the forwards that reach it."""
    with refusals():
        address = rules.mailbox_address(email, "mailbox")
        found = on_database(config, lambda dsn: manage.mailbox_details(dsn, address))
    if found is None:
        not_found(f"mailbox {address}")
    show_object(f"mailbox {address}", found, as_json)


@app.command("edit")
def edit_cmd(
    email: EmailArg,
    config: ConfigOption = None,
    node: Annotated[str | None, typer.Option("--node", help="Move it to this node.")] = None,
    quota: QuotaOpt = None,
    comment: CommentOpt = None,
) -> None:
    """Change a mailbox's node, quota or comment."""
    changes: dict[str, object] = {}
    with refusals():
        address = rules.mailbox_address(email, "mailbox")
        if node is not None:
            if not node.strip():
                raise rules.Refusal("mailbox node: a mailbox must have a node")
            changes["node"] = rules.node_name(node)
        if quota is not None:
            changes["quota"] = rules.quota(quota)
        if comment is not None:
            changes["comment"] = rules.comment(comment)
        need_change(changes, "--node, --quota or --comment")
        on_database(config, lambda dsn: manage.edit_mailbox(dsn, address, changes))
    typer.echo(f"changed mailbox {address}")


@app.command("remove")
def remove_cmd(email: EmailArg, config: ConfigOption = None) -> None:
    """Remove a mailbox (rows that differ only in case go too)."""
    with refusals():
        address = rules.mailbox_address(email, "mailbox")
        warnings = on_database(config, lambda dsn: manage.remove_mailbox(dsn, address))
    warn(warnings)
    typer.echo(f"removed mailbox {address}")
