"""SPEC section 5 (routing per final recipient) and section 1 (roles)."""

from __future__ import annotations

import pytest

from mxgate.core.routing import resolve_route
from mxgate.core.transport import RouteKind
from tests.core.data import TRUSTED, decide, policy, routes, snapshot, tutorial

ROWS = {
    "full": ("x+y@a.corp.example", "smtp:[10.0.0.1]"),
    "unextended": ("x@a.corp.example", "smtp:[10.0.0.2]"),
    "domain": ("a.corp.example", "smtp:[10.0.0.3]"),
    "parent": (".corp.example", "smtp:[10.0.0.4]"),
    "grandparent": (".example", "smtp:[10.0.0.5]"),
    "wildcard": ("*", "smtp:[10.0.0.6]"),
}


@pytest.mark.parametrize(
    ("present", "winner"),
    [
        (["full", "unextended", "domain", "parent", "grandparent", "wildcard"], "full"),
        (["unextended", "domain", "parent", "grandparent", "wildcard"], "unextended"),
        (["domain", "parent", "grandparent", "wildcard"], "domain"),
        (["parent", "grandparent", "wildcard"], "parent"),
        (["grandparent", "wildcard"], "grandparent"),
        (["wildcard"], "wildcard"),
    ],
    ids=["full-address", "without-extension", "domain", "parent", "grandparent", "wildcard"],
)
def test_transport_lookup_order(present: list[str], winner: str) -> None:
    data = snapshot(
        domains=["a.corp.example"],
        relays=["@a.corp.example"],
        transports=dict(ROWS[name] for name in present),
    )
    decision = decide(data, "<x+y@a.corp.example>")
    assert decision.reply.code == 250
    assert routes(decision) == [
        ("x+y@a.corp.example", "smtp", f"[{ROWS[winner][1][6:-1]}]:25", False)
    ]
    assert f"transport row {ROWS[winner][0]} (node '')" in decision.deliveries[0].reason


def test_a_bare_parent_domain_does_not_match_subdomains() -> None:
    data = snapshot(
        domains=["sub.corp.example"],
        relays=["@sub.corp.example"],
        transports={"corp.example": "smtp:[10.0.0.1]"},
    )
    assert decide(data, "<a@sub.corp.example>").reply.code == 451


def test_a_dotted_parent_does_not_match_the_parent_itself() -> None:
    data = snapshot(
        domains=["corp.example"], relays=["@corp.example"], transports={".corp.example": "smtp:"}
    )
    assert decide(data, "<a@corp.example>").reply.code == 451


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("smtp:", ("a@sub.corp.example", "smtp", "sub.corp.example", True)),
        ("relay:", ("a@sub.corp.example", "relay", "sub.corp.example", True)),
        (":", ("a@sub.corp.example", "smtp", "sub.corp.example", True)),
        (":[10.0.0.9]", ("a@sub.corp.example", "smtp", "[10.0.0.9]:25", False)),
        ("smtp:relay.corp.example", ("a@sub.corp.example", "smtp", "relay.corp.example", True)),
        ("lmtp:", ("a@sub.corp.example", "lmtp", "[sub.corp.example]:24", False)),
    ],
    ids=["smtp-empty", "relay-empty", "noop", "empty-transport-field", "mx-host", "lmtp-empty"],
)
def test_empty_nexthop_inherits_the_recipient_domain(
    row: str, expected: tuple[str, str, str, bool]
) -> None:
    data = snapshot(
        domains=["sub.corp.example"],
        relays=["@sub.corp.example"],
        transports={".corp.example": row},
    )
    assert routes(decide(data, "<a@sub.corp.example>")) == [expected]


@pytest.mark.parametrize(
    ("node", "fallback", "transports", "expected"),
    [
        (
            "",
            False,
            {"server1.example.com": {"": "smtp:[10.0.0.2]", "maila": "lmtp:[10.1.1.1]"}},
            ("smtp", "[10.0.0.2]:25"),
        ),
        ("", False, {"server1.example.com": {"maila": "lmtp:[10.1.1.1]"}}, None),
        (
            "maila",
            False,
            {
                "server1.example.com": {
                    "": "smtp:[10.0.0.2]",
                    "maila": "lmtp:unix:private/dovecot-lmtp",
                }
            },
            ("lmtp", "unix:private/dovecot-lmtp"),
        ),
        ("maila", False, {"server1.example.com": {"": "smtp:[10.0.0.2]"}}, None),
        (
            "maila",
            True,
            {"server1.example.com": {"": "smtp:[10.0.0.2]"}},
            ("smtp", "[10.0.0.2]:25"),
        ),
        (
            "maila",
            True,
            {"server1.example.com": {"": "smtp:[10.0.0.2]"}, "*": {"maila": "lmtp:[127.0.0.1]:24"}},
            ("lmtp", "[127.0.0.1]:24"),
        ),
        ("mailb", False, {"server1.example.com": {"maila": "lmtp:[10.1.1.1]"}}, None),
    ],
    ids=[
        "gateway-uses-gateway-row",
        "gateway-ignores-node-rows",
        "node-uses-own-row",
        "node-without-fallback",
        "node-with-fallback",
        "node-own-wildcard-first",
        "node-ignores-other-nodes",
    ],
)
def test_roles(
    node: str,
    fallback: bool,
    transports: dict[str, dict[str, str]],
    expected: tuple[str, str] | None,
) -> None:
    data = tutorial()
    data.transports = transports
    pol = policy(node_name=node, node_fallback_to_gateway=fallback)
    decision = decide(data, "<james@server1.example.com>", pol=pol)
    if expected is None:
        assert decision.reply.code == 451
    else:
        assert decision.reply.code == 250
        assert [(d.route.transport, d.route.nexthop) for d in decision.deliveries] == [expected]


def test_the_domain_node_column_is_ignored() -> None:
    """SPEC section 1: both roles ignore domain/mailbox/relay node columns."""
    data = tutorial()
    data.domains = {d: "some-other-node" for d in data.domains}
    data.mailboxes = {m: "another" for m in data.mailboxes}
    assert decide(data, "<james@server1.example.com>").reply.code == 250


@pytest.mark.parametrize(
    ("default_transport", "relayhost", "expected"),
    [
        ("smtp:", "", ("smtp", "gmail.com", True)),
        ("smtp", "", ("smtp", "gmail.com", True)),
        ("smtp:", "[smarthost.example]:587", ("smtp", "[smarthost.example]:587", False)),
        ("smtp:", "smarthost.example", ("smtp", "smarthost.example", True)),
        ("smtp:", "[2001:db8::99]", ("smtp", "[2001:db8::99]:25", False)),
        ("relay:", "[10.9.9.9]", ("relay", "[10.9.9.9]:25", False)),
        ("smtp:[10.8.8.8]", "[smarthost.example]", ("smtp", "[10.8.8.8]:25", False)),
        ("lmtp:", "[10.7.7.7]", ("lmtp", "[10.7.7.7]:24", False)),
    ],
    ids=[
        "default-mx",
        "default-no-colon",
        "relayhost-bracketed",
        "relayhost-mx",
        "relayhost-ipv6",
        "relay-transport-with-relayhost",
        "default-nexthop-beats-relayhost",
        "lmtp-default-with-relayhost",
    ],
)
def test_not_our_domain_uses_default_transport_or_relayhost(
    default_transport: str, relayhost: str, expected: tuple[str, str, bool]
) -> None:
    pol = policy(default_transport=default_transport, relayhost=relayhost)
    decision = decide(tutorial(), "<someone@Gmail.com>", client=TRUSTED, pol=pol)
    assert decision.reply.code == 250
    assert [
        (d.route.transport, d.route.nexthop, d.route.mx_lookup) for d in decision.deliveries
    ] == [expected]


@pytest.mark.parametrize(
    ("default_transport", "relayhost", "reason"),
    [
        (
            "dovecot:",
            "",
            "default_transport 'dovecot:' is invalid: unsupported transport 'dovecot'",
        ),
        ("smtp:", "[broken", "relayhost '[broken' is invalid: missing ']'"),
    ],
    ids=["bad-default-transport", "bad-relayhost"],
)
def test_bad_default_route_is_no_route(default_transport: str, relayhost: str, reason: str) -> None:
    pol = policy(default_transport=default_transport, relayhost=relayhost)
    decision = decide(tutorial(), "<someone@gmail.com>", client=TRUSTED, pol=pol)
    assert decision.reply.line() == (
        f"451 4.3.0 <someone@gmail.com>: Recipient address rejected: Temporary failure: {reason}"
    )


def test_default_transport_error_bounces_relayed_mail() -> None:
    pol = policy(default_transport="error:5.7.1 no outbound mail")
    decision = decide(tutorial(), "<someone@gmail.com>", client=TRUSTED, pol=pol)
    assert decision.reply.line() == (
        "550 5.7.1 <someone@gmail.com>: Recipient address rejected: no outbound mail"
    )


def test_forward_to_the_outside_uses_the_default_route() -> None:
    decision = decide(tutorial(), "<anyone@server1.example.com>")
    assert routes(decision) == [("james@example.com", "smtp", "example.com", True)]
    pol = policy(relayhost="[smarthost.example]")
    decision = decide(tutorial(), "<anyone@server1.example.com>", pol=pol)
    assert routes(decision) == [("james@example.com", "smtp", "[smarthost.example]:25", False)]


def test_invalid_transport_row_defers_with_the_reason() -> None:
    data = tutorial(transports={"server1.example.com": "smtp:[10.0.0.2"})
    decision = decide(data, "<james@server1.example.com>")
    assert decision.reply.line() == (
        "451 4.3.0 <james@server1.example.com>: Recipient address rejected: Temporary failure: "
        "transport row server1.example.com is invalid: missing ']'"
    )


def test_resolve_route_again_sees_a_transport_added_later() -> None:
    """SPEC section 4: a deferred final recipient is re-resolved at each retry."""
    data = tutorial()
    before = resolve_route(data, policy(), "x@other.example.com")
    assert before.route is None and before.problem == "no transport row for x@other.example.com"
    data.transports["other.example.com"] = {"": "smtp:[10.0.0.3]:2525"}
    after = resolve_route(data, policy(), "x@other.example.com")
    assert after.route is not None
    assert (after.route.kind, after.route.nexthop) == (RouteKind.SMTP, "[10.0.0.3]:2525")
    assert after.source == "transport row other.example.com (node '') -> smtp:[10.0.0.3]:2525"


def test_resolve_route_of_garbage_is_a_problem_not_an_exception() -> None:
    resolution = resolve_route(tutorial(), policy(), "not an address")
    assert resolution.route is None
    assert resolution.problem == "'not an address' is not a valid address"
