"""``mxgate queue ...`` on a real spool: list, show, hold, release, flush, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mxgate.cli import app
from mxgate.core.envelope import Recipient, RecipientState
from mxgate.spool import Queue, Spool, admin
from mxgate.spool.store import QueueEntry
from tests.spool.util import make_envelope

runner = CliRunner()


def put(spool: Spool, sender: str, recipients: list[str], queue: Queue = Queue.INCOMING) -> str:
    writer = spool.begin()
    writer.write(b"Subject: test\r\n\r\nhello\r\n")
    envelope = replace(
        make_envelope(writer.queue_id),
        sender=sender,
        recipients=tuple(Recipient(address=r, original=r) for r in recipients),
    )
    writer.commit_sync(envelope)
    if queue is not Queue.INCOMING:
        spool.move(writer.queue_id, Queue.INCOMING, queue)
    return writer.queue_id


@pytest.fixture
def spooldir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def run(spooldir: Path, *args: str) -> tuple[int, str]:
    env = {"MXGATE_SPOOL_DIR": str(spooldir), "MXGATE_STATE_DIR": str(spooldir.parent)}
    result = runner.invoke(app, ["queue", *args], env=env)
    return result.exit_code, result.output


def where(spooldir: Path, queue_id: str) -> Queue | None:
    with Spool(spooldir) as spool:
        return spool.locate(queue_id)


def test_empty_queue(spooldir: Path) -> None:
    spooldir.mkdir()
    assert run(spooldir, "list") == (0, "Mail queue is empty\n")
    assert run(spooldir, "list", "--json") == (0, "[]\n")


def test_list_shows_sender_recipients_and_marks(spooldir: Path) -> None:
    with Spool(spooldir) as spool:
        first = put(spool, "a@example.org", ["x@example.com"])
        held = put(spool, "", ["y@example.com"], Queue.HOLD)
    code, out = run(spooldir, "list")
    assert code == 0
    assert f"{first}  " in out and "a@example.org" in out and "x@example.com" in out
    assert f"{held}!" in out and "MAILER-DAEMON" in out
    assert "in 2 Request(s)" in out
    code, out = run(spooldir, "list", "--json")
    doc = {item["id"]: item for item in json.loads(out)}
    assert doc[first]["queue"] == "incoming"
    assert doc[held]["queue"] == "hold"
    assert doc[first]["recipients"][0]["address"] == "x@example.com"
    assert doc[first]["recipients"][0]["state"] == "pending"


def test_show_prints_envelope_and_body(spooldir: Path) -> None:
    with Spool(spooldir) as spool:
        qid = put(spool, "a@example.org", ["x@example.com"])
    code, out = run(spooldir, "show", qid, "--body")
    assert code == 0
    assert f'"id": "{qid}"' in out and "hello" in out
    code, out = run(spooldir, "show", "NOSUCHID00")
    assert code == 1 and "no such message" in out


def test_show_says_whether_the_delay_warning_went_out(spooldir: Path) -> None:
    with Spool(spooldir) as spool:
        qid = put(spool, "a@example.org", ["x@example.com"])
        assert json.loads(run(spooldir, "show", qid)[1])["delay_warned"] is False
        message = spool.load(qid)
        spool.update(replace(message.envelope, delay_warned=True), message.queue)
    assert json.loads(run(spooldir, "show", qid)[1])["delay_warned"] is True


def test_hold_then_release(spooldir: Path) -> None:
    with Spool(spooldir) as spool:
        qid = put(spool, "a@example.org", ["x@example.com"], Queue.DEFERRED)
    assert run(spooldir, "hold", qid)[1].startswith("held 1 message(s)")
    assert where(spooldir, qid) is Queue.HOLD
    # Named again: said, not just counted as 0.
    assert run(spooldir, "hold", qid) == (
        0,
        f"held 0 message(s); left as they were: {qid} (hold)\n",
    )
    assert run(spooldir, "release", qid)[1].startswith("released 1 message(s)")
    assert where(spooldir, qid) is Queue.INCOMING


def test_flush_makes_deferred_recipients_due_now(spooldir: Path) -> None:
    with Spool(spooldir) as spool:
        qid = put(spool, "a@example.org", ["x@example.com"], Queue.DEFERRED)
        message = spool.load(qid)
        later = replace(
            message.envelope.recipients[0], state=RecipientState.DEFERRED, next_attempt=4e9
        )
        spool.update(message.envelope.with_recipient(later), Queue.DEFERRED)
    code, out = run(spooldir, "flush")
    assert (code, out) == (0, "flushed 1 message(s)\n")
    # In incoming/ every unfinished recipient is due now (the queue manager's
    # rule, tests/delivery/test_scheduler.py); the listing says so.
    assert where(spooldir, qid) is Queue.INCOMING
    [recipient] = json.loads(run(spooldir, "show", qid)[1])["recipients"]
    assert recipient["state"] == "deferred" and recipient["next_attempt"] is None


@pytest.mark.parametrize("action", ["flush", "requeue", "hold"])
def test_an_action_never_undoes_a_delivery_pass_made_after_the_listing(
    spooldir: Path, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """The queue manager claims a listed message, delivers one recipient and
    puts it back before the action acts: the action moves the record as it
    is now. Before, flush/requeue wrote the listed copy back, and the
    delivered recipient was pending again: delivered twice."""
    with Spool(spooldir) as spool:
        qid = put(spool, "a@example.org", ["x@example.com", "y@example.com"], Queue.DEFERRED)
    real_select = admin.select

    def select_then_deliver(spool: Spool, selector: admin.Selector) -> Iterator[QueueEntry]:
        listed = list(real_select(spool, selector))
        claimed = spool.claim(qid, Queue.DEFERRED)  # a pass of the queue manager
        assert claimed is not None
        first, second = claimed.envelope.recipients
        done = replace(first, state=RecipientState.DELIVERED, attempts=1)
        later = replace(second, state=RecipientState.DEFERRED, attempts=1, next_attempt=4e9)
        spool.update(claimed.envelope.with_recipients((done, later)), Queue.ACTIVE)
        spool.move(qid, Queue.ACTIVE, Queue.DEFERRED)
        return iter(listed)

    monkeypatch.setattr(admin, "select", select_then_deliver)
    code, _out = run(spooldir, action, "--all" if action == "requeue" else qid)
    assert code == 0
    with Spool(spooldir) as spool:
        states = [r.state for r in spool.load(qid).envelope.recipients]
    assert states == [RecipientState.DELIVERED, RecipientState.DEFERRED]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--sender", "spammer@bad.example"),
        ("--recipient", "victim@example.com"),
        ("--domain", "example.com"),
    ],
)
def test_delete_by_selector(spooldir: Path, option: str, value: str) -> None:
    with Spool(spooldir) as spool:
        doomed = put(spool, "spammer@bad.example", ["victim@example.com"])
        kept = put(spool, "friend@example.org", ["other@example.net"])
    code, out = run(spooldir, "delete", option, value)
    assert (code, out) == (0, "deleted 1 message(s)\n")
    assert where(spooldir, doomed) is None
    assert where(spooldir, kept) is Queue.INCOMING


@pytest.mark.parametrize("name", ["MAILER-DAEMON", "mailer-daemon", "<>"])
def test_the_null_sender_is_selected_by_the_name_listings_show(spooldir: Path, name: str) -> None:
    # Backscatter clean-up: bounces have the null sender, which listings show
    # as MAILER-DAEMON (as Postfix's mailq does).
    with Spool(spooldir) as spool:
        bounce = put(spool, "", ["victim@example.com"])
        kept = put(spool, "friend@example.org", ["other@example.net"])
    assert "MAILER-DAEMON" in run(spooldir, "list")[1]
    code, out = run(spooldir, "delete", "--sender", name)
    assert (code, out) == (0, "deleted 1 message(s)\n")
    assert where(spooldir, bounce) is None
    assert where(spooldir, kept) is Queue.INCOMING


def test_delete_needs_a_selector(spooldir: Path) -> None:
    code, out = run(spooldir, "delete")
    assert code == 2 and "--all" in out


def test_messages_being_delivered_are_left_alone(spooldir: Path) -> None:
    with Spool(spooldir) as spool:
        qid = put(spool, "a@example.org", ["x@example.com"])
        assert spool.claim(qid) is not None
    code, out = run(spooldir, "delete", "--all")
    assert code == 0 and "being delivered now" in out
    assert where(spooldir, qid) is Queue.ACTIVE


def test_a_spool_dir_that_does_not_exist_is_not_an_empty_queue(spooldir: Path) -> None:
    """A typo in spool_dir, or the command run from another directory than
    the gateway's: the queue was shown empty (and a new spool made there)."""
    code, out = run(spooldir, "list")
    assert code == 1 and f"no spool at {spooldir} (spool_dir)" in out
    assert not spooldir.exists()


def test_selections_that_select_nothing_are_usage_errors(spooldir: Path) -> None:
    spooldir.mkdir()
    code, out = run(spooldir, "requeue")
    assert code == 2 and "name message IDs or give --all" in out and "--sender" not in out
    code, out = run(spooldir, "delete")
    assert code == 2 and "give --all, --sender, --recipient or --domain" in out
    code, out = run(spooldir, "delete", "--domain", " ")
    assert code == 2 and "--domain: give a value (it was empty)" in out
