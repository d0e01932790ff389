"""Where SRS applies (core.srs_policy through core.policy): which copies are
rewritten, and the RCPT check of our SRS addresses."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mxgate.core.envelope import Recipient
from mxgate.core.policy import decide_recipient
from mxgate.core.srs import DAY, forward
from mxgate.core.srs_keys import STALE_AFTER, SrsContext, SrsKey, SrsKeyRing, SrsSettings
from mxgate.core.srs_policy import ROUTE_FLAG, rewrite_sender, sender_for_copy
from tests.core.data import INTERNET, TRUSTED, policy, tutorial

NOW = 1_760_000_000.0
SRS_DOMAIN = "srs.gateway.test"
KEY = SrsKey(1, "the first secret key", signs_from=NOW - 100 * DAY)
DATA = tutorial(
    domains=("alias.test",),
    mailboxes=("bob@alias.test",),
    forwards={
        "list@alias.test": "ann@outside.example, bob@alias.test",
        "far@server1.example.com": "Someone@Elsewhere.example",
    },
    transports={"alias.test": "smtp:[10.0.0.3]"},
)
POLICY = policy(relayhost="[192.0.2.99]:25")
SETTINGS = SrsSettings(SRS_DOMAIN, overrides=(("alias.test", "srs.alias.test"),))


def ring(*keys: SrsKey, synced: float | None = NOW, source: str = "database") -> SrsKeyRing:
    return SrsKeyRing(keys or (KEY,), source, synced)


def ctx(keys: SrsKeyRing | None = None, now: float = NOW, **settings: object) -> SrsContext:
    return SrsContext(replace(SETTINGS, **settings), keys or ring(), now)  # type: ignore[arg-type]


def decide(recipient: str, srs: SrsContext | None = None, **kw: object):
    return decide_recipient(DATA, POLICY, recipient, srs=srs or ctx(), **kw)  # type: ignore[arg-type]


def srs0(
    sender_local: str,
    sender_domain: str,
    *,
    secret: str = KEY.secret,
    when: float = NOW,
    domain: str = SRS_DOMAIN,
) -> str:
    return f"{forward(sender_local, sender_domain, secret, when)}@{domain}"


# -- which copies are rewritten ------------------------------------------------------


def test_only_forwards_to_the_outside_are_marked() -> None:
    decision = decide("list@alias.test", sender="alice@example.org", client_ip=INTERNET)
    assert decision.reply.code == 250
    marks = {d.recipient: d.srs for d in decision.deliveries}
    assert marks == {"ann@outside.example": True, "bob@alias.test": False}
    # The catch-all to the outside, too; a mailbox of ours, never.
    [catch_all] = decide("nobody@server1.example.com").deliveries
    assert catch_all.recipient == "james@example.com" and catch_all.srs
    [mailbox] = decide("james@server1.example.com").deliveries
    assert not mailbox.srs


def test_relaying_for_mynetworks_and_srs_off_mark_nothing() -> None:
    [relayed] = decide("someone@faraway.example", client_ip=TRUSTED).deliveries
    assert not relayed.srs
    off = decide_recipient(DATA, POLICY, "list@alias.test", client_ip=INTERNET)
    assert not any(d.srs for d in off.deliveries)


def test_explain_shows_the_rewrite_and_keeps_the_reply_last() -> None:
    decision = decide("far@server1.example.com", sender="alice@example.org", explain=True)
    [note] = [line for line in decision.trace if line.startswith("srs: ")]
    expected = rewrite_sender(ctx(), "alice@example.org", "server1.example.com").sender
    assert expected.startswith("SRS0=") and expected.endswith(f"@{SRS_DOMAIN}")
    assert "Someone@elsewhere.example is outside our domains, reached through a forward" in note
    assert f"sender <alice@example.org> rewritten to <{expected}>" in note
    assert decision.trace[-1] == "reply: 250 2.1.5 Ok"
    null = decide("far@server1.example.com", explain=True)
    assert any("the null sender <> never is" in line for line in null.trace)


def test_rewrite_rules() -> None:
    c = ctx()
    assert not rewrite_sender(c, "", "x").rewritten  # never the null sender
    ours = rewrite_sender(c, f"SRS0=abcd=AA=example.org=alice@{SRS_DOMAIN}", "x")
    assert not ours.rewritten and "already at our SRS domain" in ours.reason
    plain = rewrite_sender(c, "alice@example.org", "elsewhere.test")
    assert plain.rewritten and plain.sender.endswith(f"@{SRS_DOMAIN}")
    # Per alias domain override of the SRS domain.
    assert rewrite_sender(c, "alice@example.org", "ALIAS.test").sender.endswith("@srs.alias.test")
    foreign = rewrite_sender(c, "SRS0=abcd=AA=example.org=alice@first.example", "x")
    assert foreign.sender.startswith("SRS1=") and "=first.example==abcd=AA=" in foreign.sender
    quoted = rewrite_sender(c, '"john doe"@example.org', "x")
    assert (
        quoted.rewritten and quoted.sender.startswith('"SRS0=') and '=john doe"@' in quoted.sender
    )
    too_long = rewrite_sender(c, "a" * 40 + "@" + "b" * 30 + ".example", "x")
    assert not too_long.rewritten and "exceed 64" in too_long.reason


def test_no_keys_defers_and_an_empty_table_sends_unrewritten() -> None:
    never = rewrite_sender(ctx(SrsKeyRing()), "alice@example.org", "x")
    assert never.temporary and never.no_key and not never.rewritten
    empty = rewrite_sender(ctx(SrsKeyRing((), "database", NOW)), "alice@example.org", "x")
    assert not empty.temporary and empty.no_key and not empty.rewritten
    assert "mxgate srs rotate" in empty.reason


def test_sender_for_copy_follows_the_flag_and_the_current_domains() -> None:
    flagged = Recipient("ann@outside.example", "list@alias.test", route={ROUTE_FLAG: True})
    rewrite = sender_for_copy(ctx(), DATA, "alice@example.org", flagged)
    assert rewrite is not None and rewrite.sender.endswith("@srs.alias.test")
    assert sender_for_copy(ctx(), DATA, "alice@example.org", replace(flagged, route={})) is None
    now_ours = tutorial(domains=("alias.test", "outside.example"))
    assert sender_for_copy(ctx(), now_ours, "alice@example.org", flagged) is None


# -- the reverse path at RCPT ------------------------------------------------------------


def test_a_verified_srs0_goes_back_to_the_sender_from_any_client() -> None:
    address = srs0("alice", "example.org")
    decision = decide(address, client_ip=INTERNET, explain=True)
    assert decision.reply.code == 250, decision.reply
    [delivery] = decision.deliveries
    assert delivery.recipient == "alice@example.org" and not delivery.srs
    assert delivery.route.nexthop == "[192.0.2.99]:25"  # the relayhost
    assert any("SRS address verified" in line for line in decision.trace)
    # At an override SRS domain, and case-smashed, too.
    assert decide(srs0("alice", "example.org", domain="srs.alias.test")).reply.code == 250
    assert decide(address.upper(), client_ip=INTERNET).reply.code == 250
    assert decide(address.lower(), client_ip=INTERNET).reply.code == 250


def test_an_srs_address_standing_for_one_of_ours_is_expanded() -> None:
    decision = decide(srs0("bob", "alias.test"), client_ip=INTERNET)
    assert [d.recipient for d in decision.deliveries] == ["bob@alias.test"]
    assert decision.deliveries[0].route.nexthop == "[10.0.0.3]:25"
    unknown = decide(srs0("ghost", "alias.test"), client_ip=INTERNET)
    assert unknown.reply.code == 550


def test_srs1_goes_back_to_the_first_forwarder() -> None:
    first = forward("alice", "example.org", "first hop", NOW)
    local = forward(first, "first.example", KEY.secret, NOW)
    [delivery] = decide(f"{local}@{SRS_DOMAIN}", client_ip=INTERNET).deliveries
    assert delivery.recipient == f"{first}@first.example"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        (srs0("alice", "example.org", secret="someone else's key"), "hash does not verify"),
        (srs0("alice", "example.org", when=NOW - 22 * DAY), "timestamp expired (22 days old"),
        (f"SRS0=abcd=19=example.org=alice@{SRS_DOMAIN}", "malformed timestamp"),
        (f"SRS0=abcd@{SRS_DOMAIN}", "malformed SRS address"),
        (f"SRS0=ab=AA=example.org=alice@{SRS_DOMAIN}", "hash too short"),
    ],
)
def test_forged_or_expired_srs_addresses_are_refused(address: str, reason: str) -> None:
    decision = decide(address, client_ip=INTERNET)
    assert (decision.reply.code, decision.reply.enhanced) == (550, "5.1.1")
    assert decision.reply.text.startswith(f"<{address}>: Recipient address rejected: ")
    assert f"invalid SRS address: {reason}" in decision.reply.text
    assert not decision.deliveries


def test_a_tampered_address_is_refused_even_from_mynetworks() -> None:
    address = srs0("alice", "example.org").replace("=example.org=", "=example.net=")
    assert decide(address, client_ip=TRUSTED).reply.code == 550


def test_srs_addresses_of_other_domains_are_ordinary_addresses() -> None:
    # Signed with our own key, but for a domain that is not ours: relaying denied.
    foreign = srs0("alice", "example.org", domain="forwarder.example")
    refused = decide(foreign, client_ip=INTERNET)
    assert (refused.reply.code, refused.reply.enhanced) == (554, "5.7.1")
    # From mynetworks it passes through untouched.
    [relayed] = decide(foreign, client_ip=TRUSTED).deliveries
    assert relayed.recipient == foreign and not relayed.srs
    # Not an SRS tag at our SRS domain: the ordinary rules (relay denied).
    assert decide(f"postbox@{SRS_DOMAIN}", client_ip=INTERNET).reply.code == 554


def test_keys_not_loaded_or_stale_never_give_a_5xx_for_a_hash() -> None:
    good = srs0("alice", "example.org")
    bad = srs0("alice", "example.org", secret="a key we may not know yet")
    never = decide(bad, ctx(SrsKeyRing()), client_ip=INTERNET)
    assert (never.reply.code, never.reply.enhanced) == (451, "4.3.0")
    assert "SRS keys not loaded" in never.reply.text
    stale = ring(synced=NOW - STALE_AFTER - 1)
    assert decide(bad, ctx(stale), client_ip=INTERNET).reply.code == 451
    assert decide(good, ctx(stale), client_ip=INTERNET).reply.code == 250
    cached = ring(source="disk-cache")
    assert decide(bad, ctx(cached), client_ip=INTERNET).reply.code == 451
    # An expired timestamp is expired whatever the keys.
    old = srs0("alice", "example.org", when=NOW - 30 * DAY)
    assert decide(old, ctx(stale), client_ip=INTERNET).reply.code == 550


def test_after_rotation_old_addresses_verify_until_the_grace_period_ends() -> None:
    rotated_at = NOW + DAY
    old = replace(KEY, retired_at=rotated_at)
    new = SrsKey(2, "the second secret key", signs_from=rotated_at)
    keys = ring(old, new)
    signed_before = srs0("alice", "example.org")
    assert keys.signing_key(NOW) == old and keys.signing_key(rotated_at) == new
    # Addresses signed after the rotation use the new key.
    later = rewrite_sender(ctx(keys, now=rotated_at + 10), "alice@example.org", "x").sender
    assert later == srs0("alice", "example.org", secret=new.secret, when=rotated_at + 10)
    for now, code in ((rotated_at + 1, 250), (rotated_at + 2 * DAY, 250)):
        at = ctx(replace(keys, synced_at=now), now=now, key_grace=3 * DAY)
        assert decide(signed_before, at, client_ip=INTERNET).reply.code == code
    after = rotated_at + 3 * DAY + 1
    expired = ctx(replace(keys, synced_at=after), now=after, key_grace=3 * DAY)
    refused = decide(signed_before, expired, client_ip=INTERNET)
    assert refused.reply.code == 550 and "hash does not verify" in refused.reply.text


def test_a_key_that_signs_later_already_verifies() -> None:
    """Rotation's delay: another gateway whose clock is ahead may sign with it."""
    upcoming = SrsKey(2, "the next secret key", signs_from=NOW + 300)
    keys = ring(KEY, upcoming)
    assert keys.signing_key(NOW) == KEY
    early = srs0("alice", "example.org", secret=upcoming.secret)
    assert decide(early, ctx(keys), client_ip=INTERNET).reply.code == 250


def test_explaining_changes_nothing_but_the_words() -> None:
    good = srs0("alice", "example.org")
    for address in ("list@alias.test", "nobody@server1.example.com", good, good + "x"):
        quiet = decide(address, sender="alice@example.org", client_ip=INTERNET)
        told = decide(address, sender="alice@example.org", client_ip=INTERNET, explain=True)
        assert (quiet.reply, quiet.deliveries, quiet.deferred, quiet.bounces) == (
            told.reply,
            told.deliveries,
            told.deferred,
            told.bounces,
        )
        assert told.trace and not quiet.trace


@given(
    tag=st.sampled_from(["SRS0", "SRS1", "srs0", "SRS0+", "SRS1-"]),
    rest=st.text(min_size=0, max_size=60),
)
def test_anything_at_our_srs_domain_gets_an_answer(tag: str, rest: str) -> None:
    address = f"<{tag}={rest}@{SRS_DOMAIN}>"
    decision = decide_recipient(DATA, POLICY, address, client_ip=INTERNET, srs=ctx(), smtputf8=True)
    assert decision.reply.code in (250, 451, 501, 504, 550, 553, 554)
    if decision.reply.code == 250:  # only ever by a hash that verifies
        assert decision.deliveries
