"""When to try a deferred recipient again, and when to give up.

Owns the retry schedule of the queue manager, with Postfix qmgr semantics
(``qmgr_active.c``, ``qmgr_active_done_3_generic``): after a temporary
failure the next attempt waits for the message's *time in queue*, clamped to
[``minimal_backoff_time``, ``maximal_backoff_time``]. Because the wait equals
the age, the age doubles at every attempt until the cap: exponential backoff
without counting attempts, so a message keeps its rhythm across restarts and
no attempt counter is needed. A message older than its queue lifetime
(``maximal_queue_lifetime``, or ``bounce_queue_lifetime`` for a bounce, i.e.
a null-sender message) is given up after the attempt that just failed
(Postfix checks ``event_time() > arrival_time + var_max_queue_time`` after the
delivery pass, so every recipient gets at least one attempt).

Never asks for the time and never draws random numbers: ``now`` and
``jitter`` (a float in [0, 1] drawn by the caller) are arguments, so the
schedule is a plain function (SPEC section 6, STYLE pattern 5). Raises
ValueError only for arguments no caller should pass (a bug).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mxgate.core.reply import Reply

__all__ = [
    "EXPIRED_STATUS",
    "JITTER_FRACTION",
    "GiveUp",
    "RetryAt",
    "RetryDecision",
    "RetryPolicy",
    "backoff",
    "delay_warning_due",
    "expired",
    "next_attempt",
    "queue_lifetime",
    "will_retry_until",
]

# The jitter widens a delay by at most this fraction (10 %): enough to spread
# the retries of messages queued in the same second (a burst, or every
# message after a restart), small next to the doubling. Upward only, so
# minimal_backoff_time stays a true minimum: a retry never comes sooner than
# the operator allowed; the cost is that the longest wait is 1.1 times
# maximal_backoff_time.
JITTER_FRACTION = 0.1

# RFC 3463 X.4.7 "Delivery time expired": "the message ... remained on that
# host too long ... This is useful only as a persistent transient error" --
# hence 4.4.7 and never 5.4.7. The DSN for an expired recipient says
# "Action: failed" with this status (RFC 3464 2.3.3 and 2.3.4); the last
# temporary error stays in its Diagnostic-Code (see core/dsn.py).
EXPIRED_STATUS = "4.4.7"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The schedule settings, in seconds (Postfix parameter names and SPEC defaults).

    minimal_backoff_time:   shortest wait after a temporary failure (300 s; > 0)
    maximal_backoff_time:   longest wait before the jitter (4000 s)
    maximal_queue_lifetime: give up on a message older than this (5 days);
                            0 tries once (postconf(5))
    bounce_queue_lifetime:  the same for bounces (null sender) (5 days)
    delay_warning_time:     send a "delayed" DSN once a message is this old;
                            0 never does (Postfix's default)
    """

    minimal_backoff_time: float = 300.0
    maximal_backoff_time: float = 4000.0
    maximal_queue_lifetime: float = 5 * 86400.0
    bounce_queue_lifetime: float = 5 * 86400.0
    delay_warning_time: float = 0.0

    def __post_init__(self) -> None:
        values = (
            self.minimal_backoff_time,
            self.maximal_backoff_time,
            self.maximal_queue_lifetime,
            self.bounce_queue_lifetime,
            self.delay_warning_time,
        )
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"retry times must be finite and not negative: {self}")
        if not 0 < self.minimal_backoff_time <= self.maximal_backoff_time:
            raise ValueError(
                "need 0 < minimal_backoff_time <= maximal_backoff_time, got "
                f"{self.minimal_backoff_time} and {self.maximal_backoff_time}"
            )


@dataclass(frozen=True, slots=True)
class RetryAt:
    """Try again at ``when`` (Unix time)."""

    when: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The message is too old: the recipient bounces now.

    ``reply`` says so (4.4.7, for the log line Postfix writes as
    ``status=expired, returned to sender``). The recipient's record keeps its
    last temporary error, which the DSN reports as the diagnostic
    (core/outcome.py ``apply`` and ``diagnose``)."""

    reply: Reply


RetryDecision = RetryAt | GiveUp


def backoff(arrival: float, now: float, policy: RetryPolicy) -> float:
    """The wait before the next attempt, without jitter: the time in queue
    clamped to [minimal_backoff_time, maximal_backoff_time]. A clock that went
    backwards (``now < arrival``) counts as a new message."""
    age = now - arrival
    return min(max(age, policy.minimal_backoff_time), policy.maximal_backoff_time)


def queue_lifetime(policy: RetryPolicy, *, is_bounce: bool) -> float:
    """How long a message may stay queued: bounces (null sender) have their own limit."""
    return policy.bounce_queue_lifetime if is_bounce else policy.maximal_queue_lifetime


def expired(arrival: float, now: float, policy: RetryPolicy, *, is_bounce: bool) -> bool:
    """The message has reached its queue lifetime. ``>=`` (Postfix has ``>``)
    so that a lifetime of 0 means "try once", as postconf(5) documents."""
    return now - arrival >= queue_lifetime(policy, is_bounce=is_bounce)


def will_retry_until(arrival: float, policy: RetryPolicy, *, is_bounce: bool) -> float:
    """When the message expires (the DSN field Will-Retry-Until, RFC 3464 2.3.9)."""
    return arrival + queue_lifetime(policy, is_bounce=is_bounce)


def next_attempt(
    arrival: float,
    now: float,
    policy: RetryPolicy,
    *,
    jitter: float,
    is_bounce: bool = False,
) -> RetryDecision:
    """What to do with a recipient whose attempt at ``now`` failed temporarily.

    ``GiveUp`` once the message has reached its queue lifetime, else
    ``RetryAt(now + backoff * (1 + JITTER_FRACTION * jitter))``.
    ``jitter`` is a float in [0, 1] from the caller's random source (0 in tests).
    """
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter!r}")
    if not (math.isfinite(arrival) and math.isfinite(now)):
        raise ValueError(f"times must be finite: arrival={arrival!r} now={now!r}")
    if expired(arrival, now, policy, is_bounce=is_bounce):
        lifetime = queue_lifetime(policy, is_bounce=is_bounce)
        return GiveUp(
            Reply(451, EXPIRED_STATUS, f"message expired after {_duration(lifetime)} in queue")
        )
    delay = backoff(arrival, now, policy)
    return RetryAt(now + delay * (1.0 + JITTER_FRACTION * jitter))


def delay_warning_due(
    arrival: float, now: float, delay_warning_time: float, already_warned: bool
) -> bool:
    """Send the "delayed" DSN now? Once per message, when it has been queued
    for ``delay_warning_time`` (0 disables warnings, Postfix's default).
    The caller asks only for a message it keeps: an expired one bounces instead
    (Postfix tests expiry first, qmgr_active_done_2_generic)."""
    if delay_warning_time <= 0 or already_warned:
        return False
    return now - arrival >= delay_warning_time


def _duration(seconds: float) -> str:
    """'5 days', '1 hour', '90 seconds': the largest unit that divides evenly."""
    whole = round(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if whole >= size and whole % size == 0:
            count = whole // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{whole} second{'s' if whole != 1 else ''}"
