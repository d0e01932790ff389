"""Interoperability: mxgate's SRS addresses and those of an independent
implementation (srslib, from PyPI, a test-only dependency) verify each other."""

from __future__ import annotations

from typing import Any

import pytest

from mxgate.core.address import Address, parse_path
from mxgate.core.srs import DAY
from mxgate.core.srs_keys import SrsContext, SrsKey, SrsKeyRing, SrsSettings
from mxgate.core.srs_policy import check_address, rewrite_sender

srslib = pytest.importorskip("srslib", reason="test extra: pip install srslib")

SECRET = "interoperability secret"
NOW = 1_760_000_000.0
OURS = "mx1.gateway.test"


def context(now: float = NOW, secret: str = SECRET) -> SrsContext:
    ring = SrsKeyRing((SrsKey(1, secret, signs_from=0.0),), "database", now)
    return SrsContext(SrsSettings(OURS), ring, now)


def library(now: float = NOW, secret: str = SECRET) -> Any:  # srslib.SRS, untyped
    srs = srslib.SRS(secret)  # hash length 4, 21 days: the same defaults as ours
    srs._time_fn = lambda: now  # its documented seam for timestamp tests
    return srs


def ours_encode(sender: str) -> str:
    rewrite = rewrite_sender(context(), sender, "")
    assert rewrite.rewritten, rewrite
    return rewrite.sender


def ours_decode(address: str, now: float = NOW) -> str:
    parsed = parse_path(address, smtputf8=True)
    assert isinstance(parsed, Address)
    check = check_address(context(now), parsed)
    assert check is not None
    assert check.target is not None, check.problem
    return str(check.target)


@pytest.mark.parametrize("sender", ["alice@example.org", "Bob.Smith+list@Mail.Example.NET"])
def test_our_srs0_addresses_reverse_with_srslib(sender: str) -> None:
    rewritten = ours_encode(sender)
    assert rewritten.startswith("SRS0=") and rewritten.endswith(f"@{OURS}")
    local, domain = sender.rsplit("@", 1)
    assert library().reverse(rewritten) == f"{local}@{domain.lower()}"
    # Case smashed by some mail system on the way: still good for both.
    assert library().reverse(rewritten.lower()).lower() == sender.lower()


def test_srslib_srs0_addresses_reverse_with_ours() -> None:
    rewritten = library().forward("alice@example.org", OURS)
    assert rewritten.startswith("SRS0=")
    assert ours_decode(rewritten) == "alice@example.org"
    assert ours_decode(rewritten.upper()).lower() == "alice@example.org"


def test_srs1_both_ways() -> None:
    # A first forwarder (srslib, its own secret) made an SRS0 address at first.example ...
    first = library(secret="first hop secret").forward("alice@example.org", "first.example")
    # ... which we forward again: SRS1, which srslib with our secret reverses to it.
    ours = ours_encode(first)
    assert ours.startswith("SRS1=") and "=first.example==" in ours
    assert library().reverse(ours) == first
    # srslib as the second forwarder with our secret: we reverse its SRS1.
    theirs = library().forward(first, OURS)
    assert theirs.startswith("SRS1=")
    assert ours_decode(theirs) == first
    # And an SRS1 rewritten again keeps its first forwarder in both.
    second = library(secret="second hop secret").forward(first, "second.example")
    assert ours_encode(second).split("=", 2)[2] == library().forward(second, OURS).split("=", 2)[2]


def test_forged_and_expired_addresses_fail_in_both() -> None:
    rewritten = ours_encode("alice@example.org")
    tag, hash_, rest = rewritten.split("=", 2)
    forged = f"{tag}={'AAAA' if hash_ != 'AAAA' else 'BBBB'}={rest}"
    with pytest.raises(srslib.InvalidHashError):
        library().reverse(forged)
    parsed = parse_path(forged)
    assert isinstance(parsed, Address)
    check = check_address(context(), parsed)
    assert check is not None and check.problem == "hash does not verify"

    theirs = library(now=NOW - 30 * DAY).forward("alice@example.org", OURS)
    with pytest.raises(srslib.InvalidTimestampError):
        library().reverse(theirs)
    parsed = parse_path(theirs)
    assert isinstance(parsed, Address)
    check = check_address(context(), parsed)
    assert check is not None and check.problem.startswith("timestamp expired")
