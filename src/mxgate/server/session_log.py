"""The mail log lines and counts of one inbound SMTP session, beside its replies.

Owns what Postfix's smtpd logs about a session apart from its acceptances:
the reject lines (``NOQUEUE: reject: RCPT from ...``, or with the queue id
once there is one), the lines of an ending that was not a QUIT (lost
connection, timeout, too many errors), the ``disconnect from`` line with its
per-verb counts (``ehlo=1 mail=1 rcpt=0/1 data=0/1 quit=1 commands=3/5``),
and the same counts handed to the worker's metrics. Also how client-chosen
text is made safe for one log line.

Never decides a reply (the protocol and the routing core do) and never
writes a line itself (``maillog.MailLog`` does).
"""

from __future__ import annotations

from mxgate.core.reply import Reply
from mxgate.maillog import MailLog
from mxgate.metrics.counts import SmtpCounts
from mxgate.smtp import ConnectionClosed
from mxgate.smtp.parse import Verb

# The command a reject line's stage refers to, for the disconnect line's counts.
REJECT_VERBS = {"MAIL": "mail", "RCPT": "rcpt", "END-OF-MESSAGE": "data"}

# Verbs counted under their own name in the disconnect line and the metrics;
# anything else a client sends is "unknown" (as Postfix counts it), so that
# junk verbs can neither lengthen log lines nor make new metric labels.
KNOWN_VERBS = frozenset(verb.value.lower() for verb in Verb) - {"forbidden", "unknown"}


def bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def counted_verb(command: str) -> str:
    verb = command.lower()
    return verb if verb in KNOWN_VERBS else "unknown"


def printable(text: str) -> str:
    """Client-chosen text made safe for one log line."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:300]


def log_reject(
    log: MailLog,
    failed: dict[str, int],
    stage: str,
    reply: Reply,
    client: str,
    *,
    sender: str | None,
    recipient: str | None,
    esmtp: bool,
    helo: str,
    queue_id: str | None,
) -> None:
    """A refusal at ``stage`` (MAIL, RCPT, END-OF-MESSAGE), counted as a
    failed command of its verb in ``failed``."""
    verb = REJECT_VERBS.get(stage)
    if verb is not None:
        bump(failed, verb)
    log.reject(
        stage,
        client,
        f"{reply.code} {reply.enhanced} {reply.text}",
        printable(sender) if sender is not None else None,
        printable(recipient) if recipient is not None else None,
        "ESMTP" if esmtp else "SMTP",
        helo or None,
        queue_id=queue_id,
    )


def log_close(
    log: MailLog,
    worker_counts: SmtpCounts | None,
    client: str,
    counts: dict[str, int],
    failed: dict[str, int],
    event: ConnectionClosed,
) -> None:
    """The end of a session: why, when it was not a QUIT, then the
    ``disconnect from`` line with the session's counts (also to the metrics)."""
    if event.reason == "timeout":
        log.timeout(client, event.after)
    elif event.reason == "errors":
        log.too_many_errors(client, event.after)
    elif event.reason == "lost":
        log.line("smtpd", f"lost connection after {event.after} from {client}")
    total = dict(counts)
    total["commands"] = sum(counts.values())
    refused = dict(failed)
    refused["commands"] = sum(failed.values())
    log.disconnect(client, total, refused)
    if worker_counts is not None:
        worker_counts.session_closed(counts, failed)
