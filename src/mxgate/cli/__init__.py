"""The ``mxgate`` command: composes the parts, owns no mail logic.

Every command takes ``--config FILE`` after its name (or ``MXGATE_CONFIG``);
errors in settings or arguments become one clear line on stderr and a non-zero
exit status, never a traceback.
"""

from __future__ import annotations

import errno
import io
import os
import sys

import typer

from mxgate.cli import check as check_cmd
from mxgate.cli import config_cmd, db, queue, routes, serve
from mxgate.cli import srs as srs_cmd
from mxgate.cli import transfer as transfer_cmd
from mxgate.cli.manage import domain, forward, mailbox, relay, transport

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="mxgate: inbound mail gateway with its routing in PostgreSQL.",
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(db.app, name="db")
app.add_typer(queue.app, name="queue")
app.command("serve")(serve.serve)
app.command("worker", hidden=True)(serve.worker)
app.command("explain")(routes.explain)
app.command("query")(routes.query_cmd)
app.add_typer(transfer_cmd.export_app, name="export")
app.command("import")(transfer_cmd.import_cmd)
app.add_typer(domain.app, name="domain")
app.add_typer(mailbox.app, name="mailbox")
app.add_typer(forward.app, name="forward")
app.add_typer(relay.app, name="relay")
app.add_typer(transport.app, name="transport")
app.command("check")(check_cmd.check_cmd)
app.add_typer(srs_cmd.app, name="srs")


def main() -> None:
    if isinstance(sys.stdout, io.TextIOWrapper):
        # A name or comment the terminal's encoding cannot show is shown
        # escaped, not a UnicodeEncodeError (export writes UTF-8 bytes itself).
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # here, where a failure can still be reported
    except OSError as exc:
        if exc.errno not in _OUTPUT_ERRORS:
            # Not the output: one line all the same, naming what failed.
            print(f"mxgate: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        # Output nobody can take: a full disk, a closed pipe or terminal.
        # (click already ends quietly on a pipe closed early, as with head.)
        print(f"mxgate: cannot write the output: {exc.strerror or exc}", file=sys.stderr)
        # Nothing more for the interpreter to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None


# What writing to standard output fails with (commands catch their own file
# errors and say which file).
_OUTPUT_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EPIPE, errno.EBADF})
