"""The retry schedule: time in queue clamped to [min, max] plus jitter; expiry."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.core.reply import Reply
from mxgate.core.retry import (
    EXPIRED_STATUS,
    JITTER_FRACTION,
    GiveUp,
    RetryAt,
    RetryPolicy,
    backoff,
    delay_warning_due,
    expired,
    next_attempt,
    queue_lifetime,
    will_retry_until,
)

DAY = 86400.0
T0 = 1_700_000_000.0
POLICY = RetryPolicy()  # 300 s, 4000 s, 5 d, 5 d: SPEC section 6


def test_defaults_are_the_spec_values() -> None:
    assert POLICY.minimal_backoff_time == 300
    assert POLICY.maximal_backoff_time == 4000
    assert POLICY.maximal_queue_lifetime == 5 * DAY
    assert POLICY.bounce_queue_lifetime == 5 * DAY
    assert POLICY.delay_warning_time == 0


@pytest.mark.parametrize(
    ("age", "delay"),
    [
        (0, 300),
        (1, 300),
        (299.5, 300),
        (300, 300),
        (301, 301),
        (1000, 1000),
        (3999, 3999),
        (4000, 4000),
        (4001, 4000),
        (4 * DAY, 4000),
        (-3600, 300),  # the clock went backwards: like a new message
    ],
)
def test_backoff_is_time_in_queue_clamped(age: float, delay: float) -> None:
    assert backoff(T0, T0 + age, POLICY) == delay


@pytest.mark.parametrize(
    ("age", "jitter", "wait"),
    [
        (0, 0.0, 300),
        (0, 1.0, 330),
        (0, 0.5, 315),
        (1000, 0.0, 1000),
        (1000, 1.0, 1100),
        (10_000, 0.0, 4000),
        (10_000, 1.0, 4400),
    ],
)
def test_next_attempt_adds_at_most_ten_percent(age: float, jitter: float, wait: float) -> None:
    now = T0 + age
    decision = next_attempt(T0, now, POLICY, jitter=jitter)
    assert isinstance(decision, RetryAt)
    assert decision.when == pytest.approx(now + wait)


@pytest.mark.parametrize(
    ("age", "is_bounce", "gives_up"),
    [
        (5 * DAY - 1, False, False),
        (5 * DAY, False, True),
        (5 * DAY + 1, False, True),
        (1 * DAY - 1, True, False),
        (1 * DAY, True, True),
        (2 * DAY, True, True),
        (2 * DAY, False, False),
    ],
)
def test_queue_lifetime_and_bounce_lifetime(age: float, is_bounce: bool, gives_up: bool) -> None:
    policy = RetryPolicy(bounce_queue_lifetime=1 * DAY)
    decision = next_attempt(T0, T0 + age, policy, jitter=0.0, is_bounce=is_bounce)
    assert isinstance(decision, GiveUp) is gives_up
    assert expired(T0, T0 + age, policy, is_bounce=is_bounce) is gives_up


def test_give_up_says_expired_with_a_persistent_transient_status() -> None:
    decision = next_attempt(T0, T0 + 6 * DAY, POLICY, jitter=0.3)
    assert decision == GiveUp(Reply(451, "4.4.7", "message expired after 5 days in queue"))
    assert EXPIRED_STATUS == "4.4.7"  # RFC 3463 X.4.7: never 5.4.7


@pytest.mark.parametrize(
    ("lifetime", "text"),
    [
        (DAY, "message expired after 1 day in queue"),
        (7200, "message expired after 2 hours in queue"),
        (90, "message expired after 90 seconds in queue"),
        (120, "message expired after 2 minutes in queue"),
    ],
)
def test_give_up_names_the_lifetime(lifetime: float, text: str) -> None:
    decision = next_attempt(
        T0, T0 + lifetime, RetryPolicy(maximal_queue_lifetime=lifetime), jitter=0
    )
    assert isinstance(decision, GiveUp)
    assert decision.reply.text == text


def test_zero_lifetime_tries_once() -> None:
    """postconf(5): "Specify 0 when mail delivery should be tried only once"."""
    policy = RetryPolicy(maximal_queue_lifetime=0)
    assert isinstance(next_attempt(T0, T0, policy, jitter=0), GiveUp)


def test_lifetimes_and_will_retry_until() -> None:
    policy = RetryPolicy(maximal_queue_lifetime=3 * DAY, bounce_queue_lifetime=DAY)
    assert queue_lifetime(policy, is_bounce=False) == 3 * DAY
    assert queue_lifetime(policy, is_bounce=True) == DAY
    assert will_retry_until(T0, policy, is_bounce=False) == T0 + 3 * DAY
    assert will_retry_until(T0, policy, is_bounce=True) == T0 + DAY


@pytest.mark.parametrize("jitter", [-0.01, 1.01, math.nan, math.inf])
def test_jitter_out_of_range_is_a_bug(jitter: float) -> None:
    with pytest.raises(ValueError, match="jitter"):
        next_attempt(T0, T0, POLICY, jitter=jitter)


@pytest.mark.parametrize(("arrival", "now"), [(math.nan, T0), (T0, math.inf)])
def test_non_finite_times_are_a_bug(arrival: float, now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        next_attempt(arrival, now, POLICY, jitter=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"minimal_backoff_time": 0},
        {"minimal_backoff_time": 5000},  # above the default maximum
        {"maximal_backoff_time": 100},  # below the default minimum
        {"maximal_queue_lifetime": -1},
        {"bounce_queue_lifetime": math.inf},
        {"delay_warning_time": math.nan},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("age", "warning_time", "already_warned", "due"),
    [
        (4 * 3600, 0, False, False),  # 0 disables warnings
        (4 * 3600 - 1, 4 * 3600, False, False),
        (4 * 3600, 4 * 3600, False, True),
        (5 * 3600, 4 * 3600, False, True),
        (5 * 3600, 4 * 3600, True, False),  # once per message
        (-60, 4 * 3600, False, False),
    ],
)
def test_delay_warning_due(
    age: float, warning_time: float, already_warned: bool, due: bool
) -> None:
    assert delay_warning_due(T0, T0 + age, warning_time, already_warned) is due


# --- Properties -----------------------------------------------------------------

AGES = st.floats(min_value=-DAY, max_value=4.9 * DAY, allow_nan=False)
JITTERS = st.floats(min_value=0.0, max_value=1.0)
POLICIES = st.builds(
    lambda lo, span, life: RetryPolicy(
        minimal_backoff_time=lo,
        maximal_backoff_time=lo + span,
        maximal_queue_lifetime=life,
        bounce_queue_lifetime=life,
    ),
    st.floats(min_value=1, max_value=3600),
    st.floats(min_value=0, max_value=DAY),
    st.floats(min_value=0, max_value=30 * DAY),
)


@given(age=AGES, jitter=JITTERS)
def test_wait_stays_within_the_clamp_and_the_jitter(age: float, jitter: float) -> None:
    now = T0 + age
    decision = next_attempt(T0, now, POLICY, jitter=jitter)
    assert isinstance(decision, RetryAt)
    wait = decision.when - now
    assert POLICY.minimal_backoff_time <= wait
    assert wait <= POLICY.maximal_backoff_time * (1 + JITTER_FRACTION) + 1e-6
    assert wait >= backoff(T0, now, POLICY) - 1e-6


@given(policy=POLICIES, age=st.floats(min_value=0, max_value=60 * DAY), jitter=JITTERS)
def test_gives_up_exactly_when_the_lifetime_is_reached(
    policy: RetryPolicy, age: float, jitter: float
) -> None:
    now = T0 + age
    decision = next_attempt(T0, now, policy, jitter=jitter)
    assert isinstance(decision, GiveUp) == (now - T0 >= policy.maximal_queue_lifetime)


@given(a=AGES, b=AGES, jitter=JITTERS)
def test_later_failures_retry_no_sooner(a: float, b: float, jitter: float) -> None:
    early, late = sorted((a, b))
    first = next_attempt(T0, T0 + early, POLICY, jitter=jitter)
    second = next_attempt(T0, T0 + late, POLICY, jitter=jitter)
    assert isinstance(first, RetryAt)
    assert isinstance(second, RetryAt)
    assert first.when <= second.when
    assert backoff(T0, T0 + early, POLICY) <= backoff(T0, T0 + late, POLICY)


@given(age=AGES, j1=JITTERS, j2=JITTERS)
def test_more_jitter_waits_longer(age: float, j1: float, j2: float) -> None:
    low, high = sorted((j1, j2))
    first = next_attempt(T0, T0 + age, POLICY, jitter=low)
    second = next_attempt(T0, T0 + age, POLICY, jitter=high)
    assert isinstance(first, RetryAt)
    assert isinstance(second, RetryAt)
    assert first.when <= second.when


# Lifetimes of at most 500 minimal backoffs keep the simulation short.
SCHEDULES = st.builds(
    lambda lo, span, times: RetryPolicy(
        minimal_backoff_time=lo, maximal_backoff_time=lo + span, maximal_queue_lifetime=lo * times
    ),
    st.floats(min_value=60, max_value=3600),
    st.floats(min_value=0, max_value=DAY),
    st.floats(min_value=0, max_value=500),
)


@settings(deadline=None)
@given(policy=SCHEDULES)
def test_retrying_on_schedule_doubles_the_age_then_caps_then_expires(policy: RetryPolicy) -> None:
    """Attempt at each scheduled time (no jitter): every wait is the age
    clamped, so waits never shrink, and the message ends in GiveUp after a
    bounded number of attempts."""
    now, waits = T0, []
    lifetime = policy.maximal_queue_lifetime
    bound = 2 + lifetime / policy.minimal_backoff_time
    while True:
        decision = next_attempt(T0, now, policy, jitter=0.0)
        if isinstance(decision, GiveUp):
            break
        wait = decision.when - now
        age = now - T0
        assert wait == pytest.approx(
            min(max(age, policy.minimal_backoff_time), policy.maximal_backoff_time)
        )
        if policy.minimal_backoff_time <= age <= policy.maximal_backoff_time:
            assert decision.when - T0 == pytest.approx(2 * age)  # the doubling
        waits.append(wait)
        now = decision.when
        assert len(waits) <= bound
    assert now - T0 >= lifetime
    assert waits == sorted(waits)
