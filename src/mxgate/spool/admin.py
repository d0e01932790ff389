"""Operator actions on queued messages: select, hold, release, delete, flush.

Owns what ``mxgate queue ...`` does to the spool, as ``postsuper`` and
``postqueue`` do for Postfix, and is safe while the gateway runs: every action
is one atomic rename (or an unlink), and a message the queue
manager is delivering right now (in ``active/``) is left alone and reported,
never pulled from under it.

Never speaks SMTP or SQL; never decides routing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from mxgate.core.envelope import Envelope
from mxgate.spool.errors import MessageNotFoundError, SpoolError
from mxgate.spool.layout import Queue
from mxgate.spool.store import QueueEntry, Spool


@dataclass(frozen=True, slots=True)
class Selector:
    """Which messages an action applies to (all given conditions must hold)."""

    queue_ids: tuple[str, ...] = ()
    sender: str | None = None
    recipient: str | None = None
    domain: str | None = None
    every: bool = False

    def is_empty(self) -> bool:
        return not (
            self.queue_ids
            or self.sender is not None  # "": the null sender
            or self.recipient
            or self.domain
            or self.every
        )

    def matches(self, entry: QueueEntry) -> bool:
        if self.queue_ids and entry.queue_id not in self.queue_ids:
            return False
        envelope = entry.message.envelope if entry.message is not None else None
        if self.sender is not None and (
            envelope is None or envelope.sender.lower() != self.sender.lower()
        ):
            return False
        if self.recipient is not None and (
            envelope is None or not _has_recipient(envelope, self.recipient.lower())
        ):
            return False
        return self.domain is None or (
            envelope is not None and _has_domain(envelope, self.domain.lower())
        )


def _has_recipient(envelope: Envelope, address: str) -> bool:
    return any(
        address in (r.address.lower(), r.original.lower())
        for r in envelope.recipients
        if not r.state.is_final
    )


def _has_domain(envelope: Envelope, domain: str) -> bool:
    return any(
        r.address.lower().rpartition("@")[2] == domain
        for r in envelope.recipients
        if not r.state.is_final
    )


@dataclass(slots=True)
class ActionReport:
    done: list[str]
    busy: list[str]  # being delivered right now: left alone
    missing: list[str]  # named but not in the queue
    # Named, but in a queue the action does not apply to (hold of a held
    # message, release of one not held): "ID (queue)".
    unchanged: list[str] = field(default_factory=list)

    def summary(self, verb: str) -> str:
        text = f"{verb} {len(self.done)} message(s)"
        if self.busy:
            text += f"; {len(self.busy)} being delivered now, left alone: {' '.join(self.busy)}"
        if self.unchanged:
            text += f"; left as they were: {', '.join(self.unchanged)}"
        if self.missing:
            text += f"; not in the queue: {' '.join(self.missing)}"
        return text


def select(spool: Spool, selector: Selector) -> Iterator[QueueEntry]:
    for entry in spool.list_all(include_corrupt=False):
        if selector.matches(entry):
            yield entry


def _act(spool: Spool, selector: Selector, sources: Iterable[Queue], action: str) -> ActionReport:
    report = ActionReport([], [], [])
    wanted = set(sources)
    seen: set[str] = set()
    for entry in list(select(spool, selector)):
        seen.add(entry.queue_id)
        if entry.queue is Queue.ACTIVE:
            report.busy.append(entry.queue_id)
            continue
        if entry.queue not in wanted:
            if entry.queue_id in selector.queue_ids:
                report.unchanged.append(f"{entry.queue_id} ({entry.queue.value})")
            continue
        try:
            _apply(spool, entry, action)
        except MessageNotFoundError:
            # Claimed by the queue manager (or removed) between listing and acting.
            report.busy.append(entry.queue_id)
            continue
        report.done.append(entry.queue_id)
    report.missing = [qid for qid in selector.queue_ids if qid not in seen]
    return report


def _apply(spool: Spool, entry: QueueEntry, action: str) -> None:
    # Renames only, never a rewrite of the record: the listing read it a while
    # ago, and the queue manager may have claimed, delivered part of and put
    # back the message since; writing the listed copy back would undo that
    # progress (recipients delivered twice). A rename moves whatever the
    # record says now, or fails if the message is being delivered.
    if action == "hold":
        spool.move(entry.queue_id, entry.queue, Queue.HOLD)
    elif action == "release" or action == "flush":
        # In incoming/ every unfinished recipient is due at once (the queue
        # manager's rule), whatever retry time the record holds.
        spool.move(entry.queue_id, entry.queue, Queue.INCOMING)
    elif action == "delete":
        spool.remove(entry.queue_id, entry.queue)
    else:  # pragma: no cover - the callers below name the actions
        raise SpoolError(f"unknown action {action}")


def hold(spool: Spool, selector: Selector) -> ActionReport:
    return _act(spool, selector, (Queue.INCOMING, Queue.DEFERRED), "hold")


def release(spool: Spool, selector: Selector) -> ActionReport:
    return _act(spool, selector, (Queue.HOLD,), "release")


def flush(spool: Spool, selector: Selector) -> ActionReport:
    """Deferred messages become due now (``postqueue -f`` / ``-i ID``)."""
    return _act(spool, selector, (Queue.DEFERRED,), "flush")


def requeue(spool: Spool, selector: Selector) -> ActionReport:
    """Deferred and held messages go back through the queue manager now, which
    resolves every route anew from the current snapshot (``postsuper -r``)."""
    return _act(spool, selector, (Queue.DEFERRED, Queue.HOLD), "release")


def delete(spool: Spool, selector: Selector) -> ActionReport:
    return _act(spool, selector, (Queue.INCOMING, Queue.DEFERRED, Queue.HOLD), "delete")
