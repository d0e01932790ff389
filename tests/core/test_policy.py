"""SPEC section 3: the decision at RCPT TO, one case per row of the table
and per rule of the text below it."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any, NamedTuple

import pytest

from mxgate.core.address import parse_path
from mxgate.core.policy import decide_message, decide_recipient
from tests.core.data import (
    INTERNET,
    POLICY,
    TRUSTED,
    TRUSTED_V6,
    decide,
    policy,
    routes,
    tutorial,
)

DATA = tutorial(
    domains=("plain.example.com", "lists.example.org", "xn--bcher-kva.example"),
    mailboxes=(
        "o'brien@plain.example.com",
        '"john doe"@plain.example.com',
        "alice@plain.example.com",
        "postmaster@lists.example.org",
    ),
    relays=("@xn--bcher-kva.example",),
    forwards={
        "loop1@plain.example.com": "loop2@plain.example.com",
        "loop2@plain.example.com": "loop1@plain.example.com",
        "dead@plain.example.com": "nobody@plain.example.com",
    },
    transports={
        "plain.example.com": "smtp:[10.0.0.3]",
        "lists.example.org": "lmtp:[10.0.0.4]",
        "xn--bcher-kva.example": "smtp:[10.0.0.5]",
    },
)

POSTMASTER_ROUTE = [("hostmaster@admin.test", "smtp", "admin.test", True)]
JAMES_ROUTE = [("james@server1.example.com", "smtp", "[10.0.0.2]:25", False)]


class Case(NamedTuple):
    id: str
    rcpt: str
    code: int
    enhanced: str
    text: str
    routes: list[tuple[str, str, str, bool]] | None = None
    client: Any = INTERNET
    smtputf8: bool = False


def ok(id: str, rcpt: str, route: list[tuple[str, str, str, bool]], **kw: Any) -> Case:
    return Case(id, rcpt, 250, "2.1.5", "Ok", route, **kw)


def relay_denied(id: str, rcpt: str, **kw: Any) -> Case:
    shown = rcpt.strip(" <>")
    return Case(id, rcpt, 554, "5.7.1", f"<{shown}>: Relay access denied", [], **kw)


SYNTAX = "Bad recipient address syntax"
UTF8 = "Must declare SMTPUTF8 to send unicode address"
UNKNOWN = "Recipient address rejected: User unknown in relay recipient table"

CASES = [
    # empty address, trailing-dot domain, bad syntax
    Case("empty-address", "<>", 501, "5.1.3", SYNTAX, []),
    Case("nothing-at-all", "", 501, "5.1.3", SYNTAX, []),
    Case("trailing-dot-domain", "<james@server1.example.com.>", 501, "5.1.3", SYNTAX, []),
    Case("empty-label", "<james@server1..example.com>", 501, "5.1.3", SYNTAX, []),
    Case("nul-in-address", "<ja\x00mes@server1.example.com>", 501, "5.1.3", SYNTAX, []),
    Case("unbalanced-brackets", "<james@server1.example.com", 501, "5.1.3", SYNTAX, []),
    Case("local-part-too-long", f"<{'a' * 65}@server1.example.com>", 501, "5.1.3", SYNTAX, []),
    # non-ASCII without SMTPUTF8
    Case("utf8-local-without-smtputf8", "<jörg@server1.example.com>", 553, "5.6.7", UTF8, []),
    Case("u-label-without-smtputf8", "<info@bücher.example>", 553, "5.6.7", UTF8, []),
    ok(
        "u-label-with-smtputf8",
        "<jörg@bücher.example>",
        [("jörg@xn--bcher-kva.example", "smtp", "[10.0.0.5]:25", False)],
        smtputf8=True,
    ),
    # postmaster (RFC 5321 4.5.1)
    ok("postmaster-unqualified", "<postmaster>", POSTMASTER_ROUTE),
    ok("postmaster-unqualified-no-brackets-any-case", "PostMaster", POSTMASTER_ROUTE),
    ok("postmaster-quoted-unqualified", '<"postmaster">', POSTMASTER_ROUTE),
    ok("postmaster-at-myhostname", "<postmaster@MX1.gateway.test>", POSTMASTER_ROUTE),
    ok("postmaster-at-our-ipv4", "<postmaster@[192.0.2.10]>", POSTMASTER_ROUTE),
    ok("postmaster-at-our-ipv6", "<Postmaster@[IPv6:2001:db8::25]>", POSTMASTER_ROUTE),
    ok("postmaster-at-our-domain-without-rows", "<postmaster@plain.example.com>", POSTMASTER_ROUTE),
    ok(
        "postmaster-follows-the-domain-catch-all",
        "<postmaster@server1.example.com>",
        [("james@example.com", "smtp", "example.com", True)],
    ),
    ok(
        "postmaster-follows-its-own-row",
        "<postmaster@lists.example.org>",
        [("postmaster@lists.example.org", "lmtp", "[10.0.0.4]:24", False)],
    ),
    Case(
        "postmaster-of-someone-else",
        "<postmaster@gmail.com>",
        554,
        "5.7.1",
        "<postmaster@gmail.com>: Relay access denied",
        [],
    ),
    # @ % ! in the local part, source routes, foreign literals
    relay_denied("percent-hack", "<a%gmail.com@server1.example.com>"),
    relay_denied("bang-path", "<gmail.com!a@server1.example.com>"),
    relay_denied("quoted-at", '<"a@gmail.com"@server1.example.com>'),
    relay_denied("quoted-percent", '<"a%gmail.com"@server1.example.com>'),
    relay_denied("unquoted-second-at", "<a@gmail.com@server1.example.com>"),
    relay_denied("source-route", "<@server1.example.com:james@server1.example.com>"),
    relay_denied(
        "percent-hack-from-mynetworks", "<a%gmail.com@server1.example.com>", client=TRUSTED
    ),
    relay_denied("source-route-from-mynetworks", "<@relay.example:a@gmail.com>", client=TRUSTED),
    relay_denied("percent-unqualified", "<a%gmail.com>"),
    relay_denied("foreign-literal-from-internet", "<user@[198.51.100.1]>"),
    relay_denied("foreign-literal-unknown-client", "<user@[198.51.100.1]>", client=None),
    ok(
        "foreign-literal-from-mynetworks",
        "<user@[198.51.100.1]>",
        [("user@[198.51.100.1]", "smtp", "[198.51.100.1]:25", False)],
        client=TRUSTED,
    ),
    Case(
        "own-literal-is-local-and-empty",
        "<james@[192.0.2.10]>",
        550,
        "5.1.1",
        "<james@[192.0.2.10]>: Recipient address rejected: User unknown in local recipient table",
        [],
    ),
    # domain not ours
    relay_denied("not-our-domain-from-internet", "<a@gmail.com>"),
    relay_denied("not-our-domain-bad-client-text", "<a@gmail.com>", client="not-an-ip"),
    relay_denied("subdomain-of-ours-is-not-ours", "<a@sub.server1.example.com>"),
    ok(
        "not-our-domain-from-mynetworks",
        "<A.User@Gmail.com>",
        [("A.User@gmail.com", "smtp", "gmail.com", True)],
        client=TRUSTED,
    ),
    ok(
        "not-our-domain-from-mynetworks-ipv6",
        "<a@gmail.com>",
        [("a@gmail.com", "smtp", "gmail.com", True)],
        client=TRUSTED_V6,
    ),
    ok(
        "not-our-domain-from-mapped-ipv4",
        "<a@gmail.com>",
        [("a@gmail.com", "smtp", "gmail.com", True)],
        client=ip_address("::ffff:10.1.2.3"),
    ),
    ok(
        "not-our-domain-from-mynetworks-as-text",
        "<a@gmail.com>",
        [("a@gmail.com", "smtp", "gmail.com", True)],
        client="10.1.2.3",
    ),
    # our domain
    ok("known-and-routable", "<james@server1.example.com>", JAMES_ROUTE),
    ok("known-upper-case", "<JAMES@SERVER1.EXAMPLE.COM>", JAMES_ROUTE),
    ok("missing-brackets-and-space-after-colon", " james@server1.example.com", JAMES_ROUTE),
    ok(
        "quoted-dot-atom-is-the-same-address",
        '<"o\'brien"@plain.example.com>',
        [("o'brien@plain.example.com", "smtp", "[10.0.0.3]:25", False)],
    ),
    ok(
        "other-quoted-local-part-as-written",
        '<"John Doe"@plain.example.com>',
        [('"john doe"@plain.example.com', "smtp", "[10.0.0.3]:25", False)],
    ),
    Case(
        "unknown",
        "<nobody@plain.example.com>",
        550,
        "5.1.1",
        f"<nobody@plain.example.com>: {UNKNOWN}",
        [],
    ),
    Case(
        "unknown-quoted",
        '<"no body"@plain.example.com>',
        550,
        "5.1.1",
        f'<"no body"@plain.example.com>: {UNKNOWN}',
        [],
    ),
    Case(
        "unknown-from-mynetworks",
        "<nobody@plain.example.com>",
        550,
        "5.1.1",
        f"<nobody@plain.example.com>: {UNKNOWN}",
        [],
        client=TRUSTED,
    ),
    Case(
        "expansion-loop",
        "<loop1@plain.example.com>",
        550,
        "5.4.6",
        "<loop1@plain.example.com>: Recipient address rejected: mail forwarding loop: "
        "loop1@plain.example.com -> loop2@plain.example.com -> loop1@plain.example.com",
        [],
    ),
    Case(
        "expansion-dead-end",
        "<dead@plain.example.com>",
        550,
        "5.1.1",
        "<dead@plain.example.com>: Recipient address rejected: forward target "
        "nobody@plain.example.com is unknown (no row for nobody@plain.example.com)",
        [],
    ),
    Case(
        "no-route",
        "<x@other.example.com>",
        451,
        "4.3.0",
        "<x@other.example.com>: Recipient address rejected: Temporary failure: "
        "no transport row for x@other.example.com",
        [],
    ),
    # unqualified
    Case(
        "unqualified",
        "<james>",
        504,
        "5.5.2",
        "<james>: Recipient address rejected: need fully-qualified address",
        [],
    ),
    Case(
        "unqualified-quoted",
        '<"john doe">',
        504,
        "5.5.2",
        '<"john doe">: Recipient address rejected: need fully-qualified address',
        [],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rcpt_decision(case: Case) -> None:
    decision = decide(DATA, case.rcpt, case.client, case.smtputf8)
    assert (decision.reply.code, decision.reply.enhanced, decision.reply.text) == (
        case.code,
        case.enhanced,
        case.text,
    )
    assert decision.accepted is (case.code == 250)
    if case.routes is not None:
        assert routes(decision) == case.routes
    assert decision.trace[-1] == f"reply: {decision.reply.line()}"


def test_no_snapshot_at_all_is_a_temporary_lookup_failure() -> None:
    decision = decide(None, "<james@server1.example.com>")
    assert decision.reply.line() == (
        "451 4.3.0 <james@server1.example.com>: Temporary lookup failure"
    )
    # Never a 5xx because of a missing snapshot, postmaster and relaying included.
    for rcpt, client in [("<postmaster>", INTERNET), ("<a@gmail.com>", TRUSTED)]:
        assert decide(None, rcpt, client).reply.code == 451


def test_checks_that_need_no_snapshot_still_answer_without_one() -> None:
    assert decide(None, "<>").reply.code == 501
    assert decide(None, "<a%b@server1.example.com>").reply.code == 554
    assert decide(None, "<james>").reply.code == 504


@pytest.mark.parametrize(
    ("so_far", "limit", "code"),
    [(999, 1000, 250), (1000, 1000, 452), (5000, 1000, 452), (3, 3, 452), (10_000, 0, 250)],
    ids=["below", "at-limit", "far-beyond", "small-limit", "zero-is-unlimited"],
)
def test_recipient_limit(so_far: int, limit: int, code: int) -> None:
    pol = policy(smtpd_recipient_limit=limit)
    decision = decide(DATA, "<james@server1.example.com>", recipients_so_far=so_far, pol=pol)
    assert decision.reply.code == code
    if code == 452:
        assert decision.reply.line() == "452 4.5.3 Error: too many recipients"


def test_recipient_limit_is_checked_before_syntax() -> None:
    """Postfix counts before it parses: a bad address beyond the limit is 452."""
    assert decide(DATA, "<>", recipients_so_far=1000).reply.code == 452


def test_a_parsed_address_is_accepted_too() -> None:
    address = parse_path("<james@server1.example.com>")
    assert not isinstance(address, str)
    decision = decide_recipient(DATA, POLICY, address)  # type: ignore[arg-type]
    assert decision.reply.code == 250
    assert decision.recipient == "james@server1.example.com"


def test_refused_decisions_carry_no_deliveries() -> None:
    for rcpt in [
        "<nobody@plain.example.com>",
        "<x@other.example.com>",
        "<loop1@plain.example.com>",
    ]:
        decision = decide(DATA, rcpt)
        assert (decision.deliveries, decision.deferred, decision.bounces) == ((), (), ())
        assert decision.trace


def test_original_recipient_is_as_written() -> None:
    decision = decide(DATA, "<James+Tag@Server1.Example.com>")
    assert [d.original_recipient for d in decision.deliveries] == ["James+Tag@Server1.Example.com"]
    assert decision.recipient == "James+Tag@Server1.Example.com"


def test_sender_is_recorded_in_the_trace() -> None:
    decision = decide(DATA, "<james@server1.example.com>")
    assert "sender <sender@example.net>" in decision.trace


def test_bad_configured_postmaster_is_a_configuration_error() -> None:
    decision = decide(DATA, "<postmaster>", pol=policy(postmaster="postmaster"))
    assert decision.reply.line() == (
        "451 4.3.5 <postmaster>: Recipient address rejected: Server configuration error"
    )


def test_myhostname_that_is_our_domain_follows_its_rows() -> None:
    pol = policy(myhostname="lists.example.org")
    decision = decide(DATA, "<postmaster@lists.example.org>", pol=pol)
    assert routes(decision) == [("postmaster@lists.example.org", "lmtp", "[10.0.0.4]:24", False)]


def test_decide_message_counts_accepted_recipients_and_deduplicates() -> None:
    pol = policy(smtpd_recipient_limit=2)
    rcpts = [
        "<james@server1.example.com>",
        "<nobody@plain.example.com>",  # refused: does not count
        "<James+x@server1.example.com>",
        "<alice@plain.example.com>",  # third accepted one: over the limit
    ]
    decisions, plan = decide_message(DATA, pol, rcpts, INTERNET)
    assert [d.reply.code for d in decisions] == [250, 550, 250, 452]
    assert [(d.recipient, d.original_recipient) for d in plan.deliveries] == [
        ("james@server1.example.com", "james@server1.example.com"),
        ("james+x@server1.example.com", "James+x@server1.example.com"),
    ]


def test_configured_postmaster_in_our_domains_is_expanded_and_routed() -> None:
    pol = policy(postmaster="postmaster@plain.example.com")
    assert routes(decide(DATA, "<postmaster>", pol=pol)) == [
        ("postmaster@plain.example.com", "smtp", "[10.0.0.3]:25", False)
    ]
    pol = policy(postmaster="james@server1.example.com")
    assert routes(decide(DATA, "<postmaster@plain.example.com>", pol=pol)) == JAMES_ROUTE
