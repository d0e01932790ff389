"""``mxgate queue ...``: look at and manage the mail queue (mailq, postqueue, postsuper).

Safe while the gateway runs: the actions are atomic spool operations, and after
flush/release/requeue the running master is woken (SIGUSR1, its pid in
``state_dir/mxgate.pid``) so the queue manager looks at once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from mxgate.cli.common import EXIT_USAGE, ConfigOption, fail, settings
from mxgate.core.envelope import Envelope
from mxgate.spool import Queue, Spool, SpoolError, admin
from mxgate.spool.store import QueueEntry

app = typer.Typer(no_args_is_help=True, help="The mail queue: list, show, flush, hold, delete.")

# Postfix's mailq marks: '*' active (being delivered), '!' on hold.
_MARK = {Queue.ACTIVE: "*", Queue.HOLD: "!"}


def _open(config: Path | None) -> tuple[Spool, Path]:
    loaded = settings(config)
    if not Path(loaded.config.spool_dir).is_dir():
        # Opening would create an empty spool there, and a typo in spool_dir
        # (or a command run from another directory) would show an empty queue.
        fail(
            f"no spool at {loaded.config.spool_dir} (spool_dir): check the setting;"
            " mxgate serve creates it"
        )
    try:
        return Spool(Path(loaded.config.spool_dir)), Path(loaded.config.state_dir)
    except SpoolError as exc:
        fail(f"cannot open the spool {loaded.config.spool_dir}: {exc}")


def _wake_master(state_dir: Path) -> None:
    try:
        pid = int((state_dir / "mxgate.pid").read_text().strip())
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError):
        pass  # no running gateway: the next start picks the messages up


def _reason(envelope: Envelope) -> str:
    reasons = [r.last_reply for r in envelope.recipients if r.last_reply and not r.state.is_final]
    return reasons[0] if reasons else ""


def entry_json(entry: QueueEntry) -> dict[str, object]:
    if entry.message is None:
        return {"id": entry.queue_id, "queue": entry.queue.value, "problem": entry.problem}
    env = entry.message.envelope
    return {
        "id": entry.queue_id,
        "queue": entry.queue.value,
        "size": env.size,
        "arrival": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(env.arrival)),
        "sender": env.sender,
        "reason": _reason(env),
        "delay_warned": env.delay_warned,  # the delay_warning_time notice went out
        "recipients": [
            {
                "address": r.address,
                "original": r.original,
                "state": r.state.value.lower(),
                "attempts": r.attempts,
                # In incoming/ every unfinished recipient is due now (a
                # released or flushed message keeps its old retry time).
                "next_attempt": None if entry.queue is Queue.INCOMING else r.next_attempt,
                "last_reply": r.last_reply,
            }
            for r in env.recipients
        ],
    }


def _lines(entry: QueueEntry) -> list[str]:
    mark = _MARK.get(entry.queue, " ")
    if entry.message is None:
        return [f"{entry.queue_id}{mark} (unreadable: {entry.problem})"]
    env = entry.message.envelope
    arrival = time.strftime("%a %b %e %H:%M:%S", time.localtime(env.arrival))
    lines = [f"{entry.queue_id}{mark} {env.size:>8} {arrival}  {env.sender or 'MAILER-DAEMON'}"]
    for recipient in env.recipients:
        if recipient.state.is_final:
            continue
        if recipient.last_reply:
            lines.append(f"{'':>52}({recipient.last_reply})")
        lines.append(f"{'':>52}{recipient.address}")
    return lines


@app.command("list")
def list_cmd(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """Every queued message, like mailq ('*' being delivered, '!' on hold)."""
    spool, _state = _open(config)
    with spool:
        entries = list(spool.list_all(include_corrupt=True))
    if as_json:
        typer.echo(json.dumps([entry_json(e) for e in entries], indent=2, ensure_ascii=False))
        return
    if not entries:
        typer.echo("Mail queue is empty")
        return
    typer.echo(
        f"{'-Queue ID-':<21} {'--Size--':>8} {'----Arrival Time----':<20}  -Sender/Recipient-"
    )
    total = 0
    for entry in entries:
        for line in _lines(entry):
            typer.echo(line)
        typer.echo("")
        total += entry.message.envelope.size if entry.message is not None else 0
    typer.echo(f"-- {total // 1024} Kbytes in {len(entries)} Request(s).")


@app.command("show")
def show_cmd(
    queue_id: Annotated[str, typer.Argument(metavar="ID")],
    config: ConfigOption = None,
    body: Annotated[bool, typer.Option("--body", help="Also print the message itself.")] = False,
) -> None:
    """One message: envelope, recipients with their state, and optionally the message."""
    spool, _state = _open(config)
    with spool:
        entry = next(admin.select(spool, admin.Selector(queue_ids=(queue_id,))), None)
        if entry is None:
            fail(f"{queue_id}: no such message in the queue")
        typer.echo(json.dumps(entry_json(entry), indent=2, ensure_ascii=False))
        if body and entry.message is not None:
            typer.echo("")
            with spool.open_body(queue_id) as handle:
                for chunk in iter(lambda: handle.read(65536), b""):
                    typer.echo(chunk.decode("utf-8", "replace"), nl=False)


def _selector(
    ids: list[str] | None,
    every: bool,
    sender: str | None,
    recipient: str | None,
    domain: str | None,
) -> admin.Selector:
    return admin.Selector(
        queue_ids=tuple(ids or ()), sender=sender, recipient=recipient, domain=domain, every=every
    )


IdsArg = Annotated[list[str] | None, typer.Argument(metavar="[ID]...")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every message.")]
SenderOpt = Annotated[
    str | None,
    typer.Option(
        "--sender", help="Messages from this sender; <> or MAILER-DAEMON: the null sender."
    ),
]
# How the null sender is named: as listings show it (Postfix's mailq) and as
# SMTP writes it. Neither is a sender address mxgate accepts otherwise.
NULL_SENDER_NAMES = ("<>", "mailer-daemon")
RcptOpt = Annotated[
    str | None, typer.Option("--recipient", help="Messages with this pending recipient.")
]
DomainOpt = Annotated[
    str | None, typer.Option("--domain", help="Messages with a pending recipient in DOMAIN.")
]


def _run(
    action: str,
    config: Path | None,
    selector: admin.Selector,
    wake: bool,
) -> None:
    for option, value in (
        ("--sender", selector.sender),
        ("--recipient", selector.recipient),
        ("--domain", selector.domain),
    ):
        if value is not None and not value.strip():
            fail(f"{option}: give a value (it was empty)", EXIT_USAGE)
    if selector.sender is not None and selector.sender.strip().lower() in NULL_SENDER_NAMES:
        selector = dataclasses.replace(selector, sender="")
    if selector.is_empty():
        # requeue selects by ID or --all only.
        filters = "--all" if action == "requeue" else "--all, --sender, --recipient or --domain"
        fail(f"name message IDs or give {filters}", EXIT_USAGE)
    spool, state_dir = _open(config)
    functions = {
        "hold": admin.hold,
        "release": admin.release,
        "flush": admin.flush,
        "requeue": admin.requeue,
        "delete": admin.delete,
    }
    with spool:
        try:
            # A stopped gateway may have left messages in its journal: as queue
            # files they can be held and deleted like any other.
            spool.settle_journal()
            report = functions[action](spool, selector)
        except SpoolError as exc:
            fail(str(exc))
    if wake and report.done:
        _wake_master(state_dir)
    past = {"hold": "held", "release": "released", "flush": "flushed"}
    typer.echo(report.summary(past.get(action, action + "d")))
    if report.missing:
        raise typer.Exit(1)


@app.command("hold")
def hold_cmd(
    ids: IdsArg = None,
    config: ConfigOption = None,
    every: AllOpt = False,
    sender: SenderOpt = None,
    recipient: RcptOpt = None,
    domain: DomainOpt = None,
) -> None:
    """Stop delivering these messages until released (postsuper -h)."""
    _run("hold", config, _selector(ids, every, sender, recipient, domain), wake=False)


@app.command("release")
def release_cmd(
    ids: IdsArg = None,
    config: ConfigOption = None,
    every: AllOpt = False,
    sender: SenderOpt = None,
    recipient: RcptOpt = None,
    domain: DomainOpt = None,
) -> None:
    """Deliver held messages again, now (postsuper -H)."""
    _run("release", config, _selector(ids, every, sender, recipient, domain), wake=True)


@app.command("flush")
def flush_cmd(
    ids: IdsArg = None,
    config: ConfigOption = None,
    sender: SenderOpt = None,
    recipient: RcptOpt = None,
    domain: DomainOpt = None,
) -> None:
    """Retry deferred messages now: all of them, or those named (postqueue -f / -i)."""
    every = not (ids or sender or recipient or domain)
    _run("flush", config, _selector(ids, every, sender, recipient, domain), wake=True)


@app.command("requeue")
def requeue_cmd(
    ids: IdsArg = None,
    config: ConfigOption = None,
    every: AllOpt = False,
) -> None:
    """Route deferred and held messages anew from the current data (postsuper -r)."""
    _run("requeue", config, _selector(ids, every, None, None, None), wake=True)


@app.command("delete")
def delete_cmd(
    ids: IdsArg = None,
    config: ConfigOption = None,
    every: AllOpt = False,
    sender: SenderOpt = None,
    recipient: RcptOpt = None,
    domain: DomainOpt = None,
) -> None:
    """Remove messages from the queue without delivering them (postsuper -d)."""
    _run("delete", config, _selector(ids, every, sender, recipient, domain), wake=False)
