"""The SRS scheme itself (core.srs): formats, hashes, timestamps, reversal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.core.srs import (
    DAY,
    SrsAddress,
    SrsError,
    SrsKind,
    SrsProblem,
    day_timestamp,
    forward,
    make_hash,
    parse,
    reverse,
    srs_kind,
    timestamp_age,
)

SECRET = "a shared secret of some length"
OLD_SECRET = "the previous secret, still valid"
NOW = 1_760_000_000.0  # some day in 2025


def parsed(local: str) -> SrsAddress:
    result = parse(local)
    assert isinstance(result, SrsAddress), result
    return result


def back(local: str, now: float = NOW, secrets: tuple[str, ...] = (SECRET,), **kw: int):
    return reverse(parsed(local), secrets, now, **kw)


def test_timestamp_is_the_day_modulo_1024_in_base32() -> None:
    assert day_timestamp(0) == "AA"
    assert day_timestamp(DAY * 33) == "BB"
    assert day_timestamp(DAY * 1023 + 5) == "77"
    assert day_timestamp(DAY * 1024) == "AA"  # wraps
    assert timestamp_age(day_timestamp(NOW), NOW) == 0
    assert timestamp_age(day_timestamp(NOW - 5 * DAY), NOW) == 5
    assert timestamp_age(day_timestamp(NOW).lower(), NOW) == 0  # case-insensitive
    assert timestamp_age("A1", NOW) is None and timestamp_age("ABC", NOW) is None
    # A timestamp "from the future" is one that wrapped: very old.
    assert timestamp_age(day_timestamp(NOW + DAY), NOW) == 1023


def test_srs0_of_a_plain_sender_reverses_to_it() -> None:
    local = forward("alice", "example.org", SECRET, NOW)
    assert local.startswith("SRS0=") and local.endswith(f"={day_timestamp(NOW)}=example.org=alice")
    hash_ = local.split("=")[1]
    assert len(hash_) == 4
    assert hash_ == make_hash(SECRET, (day_timestamp(NOW), "example.org", "alice"), 4)
    assert back(local) == ("alice", "example.org")


def test_hash_length_is_configurable_and_the_minimum_is_enforced() -> None:
    local = forward("alice", "example.org", SECRET, NOW, hash_length=8)
    assert len(local.split("=")[1]) == 8
    assert back(local, min_hash_length=8) == ("alice", "example.org")
    short = forward("alice", "example.org", SECRET, NOW, hash_length=4)
    error = back(short, min_hash_length=6)
    assert isinstance(error, SrsError) and error.problem is SrsProblem.HASH_LENGTH


def test_local_parts_with_separators_survive() -> None:
    local = forward("a=b+c-d", "example.org", SECRET, NOW)
    assert back(local) == ("a=b+c-d", "example.org")


def test_tampered_hash_timestamp_domain_or_user_does_not_verify() -> None:
    local = forward("alice", "example.org", SECRET, NOW)
    tag, hash_, stamp, domain, user = local.split("=")
    flipped = ("B" if hash_[0] != "B" else "C") + hash_[1:]
    for changed in (
        f"{tag}={flipped}={stamp}={domain}={user}",
        f"{tag}={hash_}={day_timestamp(NOW - DAY)}={domain}={user}",
        f"{tag}={hash_}={stamp}=example.net={user}",
        f"{tag}={hash_}={stamp}={domain}=mallory",
    ):
        error = back(changed)
        assert isinstance(error, SrsError) and error.problem is SrsProblem.HASH, changed
    error = back(local, secrets=("another secret entirely",))
    assert isinstance(error, SrsError) and error.problem is SrsProblem.HASH


def test_case_is_not_significant() -> None:
    """Mail systems that change the case of local parts still get their bounces home."""
    local = forward("Alice", "Example.org", SECRET, NOW)
    for variant in (local.lower(), local.upper(), local.swapcase()):
        result = back(variant)
        assert isinstance(result, tuple), variant
        assert result[0].lower() == "alice" and result[1].lower() == "example.org"


def test_timestamp_expires_after_max_age_days() -> None:
    local = forward("alice", "example.org", SECRET, NOW)
    assert back(local, now=NOW + 21 * DAY) == ("alice", "example.org")
    error = back(local, now=NOW + 22 * DAY)
    assert isinstance(error, SrsError) and error.problem is SrsProblem.EXPIRED
    assert "22 days old" in str(error)
    assert back(local, now=NOW + 22 * DAY, max_age=30) == ("alice", "example.org")


def test_malformed_addresses() -> None:
    assert parse("alice") is None and parse("SRS0") is None and parse("SRS2=a=b=c=d") is None
    assert parse("srs0x=a=b=c=d") is None  # no separator after the tag
    for bad in ("SRS0=hash=TT=domain", "SRS0==TT=d=l", "SRS1=hash=domain", "SRS1=h=d=x"):
        error = parse(bad)
        assert isinstance(error, SrsError) and error.problem is SrsProblem.SYNTAX, bad
    stamp_error = back("SRS0=abcd=1!=example.org=alice")
    assert isinstance(stamp_error, SrsError) and stamp_error.problem is SrsProblem.TIMESTAMP
    no_key = reverse(parsed(forward("a", "b.example", SECRET, NOW)), (), NOW)
    assert isinstance(no_key, SrsError) and no_key.problem is SrsProblem.NO_KEY


def test_any_separator_after_the_tag() -> None:
    local = forward("alice", "example.org", SECRET, NOW)
    for sep in "+-":
        assert back("SRS0" + sep + local[5:]) == ("alice", "example.org")
    assert srs_kind("srs1+x") is SrsKind.SRS1 and srs_kind("SrS0-x") is SrsKind.SRS0


def test_an_srs0_address_of_another_forwarder_becomes_srs1() -> None:
    first = forward("alice", "example.org", "first hop's secret", NOW)  # at first.example
    ours = forward(first, "first.example", SECRET, NOW)
    assert ours == f"SRS1={ours.split('=')[1]}=first.example=={first[5:]}"
    assert back(ours) == (first, "first.example")
    # SRS1 carries no timestamp of its own: it does not expire here.
    assert back(ours, now=NOW + 400 * DAY) == (first, "first.example")


def test_an_srs1_address_keeps_its_first_forwarder() -> None:
    first = forward("alice", "example.org", "first hop's secret", NOW)
    second = forward(first, "first.example", "second hop's secret", NOW)  # at second.example
    ours = forward(second, "second.example", SECRET, NOW)
    assert ours.startswith("SRS1=") and "=first.example==" in ours
    assert ours.split("=", 2)[2] == second.split("=", 2)[2]  # only the hash changed
    assert back(ours) == (first, "first.example")


def test_old_keys_verify_and_which_one_matched_takes_the_same_time() -> None:
    local = forward("alice", "example.org", OLD_SECRET, NOW)
    assert back(local, secrets=(SECRET, OLD_SECRET)) == ("alice", "example.org")


@given(
    local=st.from_regex(r"[A-Za-z0-9._+=-]{1,30}", fullmatch=True),
    domain=st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){1,3}", fullmatch=True),
    days=st.integers(min_value=0, max_value=21),
    length=st.integers(min_value=4, max_value=27),
)
def test_every_rewrite_reverses(local: str, domain: str, days: int, length: int) -> None:
    rewritten = forward(local, domain, SECRET, NOW, hash_length=length)
    result = reverse(parsed(rewritten), (SECRET,), NOW + days * DAY, min_hash_length=length)
    if srs_kind(local) is None:
        assert result == (local, domain)
    else:
        assert isinstance(result, tuple)  # an SRS address of "domain" rewritten again


@pytest.mark.parametrize("length", [0, 3, 28])
def test_hash_lengths_outside_the_range_never_verify(length: int) -> None:
    stamp = day_timestamp(NOW)
    full = make_hash(SECRET, (stamp, "example.org", "alice"), 27) + "A"  # '=' would split
    local = f"SRS0={full[:length] or 'x'}={stamp}=example.org=alice"
    result = back(local, min_hash_length=4)
    assert isinstance(result, SrsError)
