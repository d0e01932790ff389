"""SPEC section 4: forwarding (virtual alias expansion), rule by rule."""

from __future__ import annotations

import pytest

from mxgate.core.address import Address, parse_path
from mxgate.core.decision import plan_message
from mxgate.core.expand import (
    FailureKind,
    expand,
    forward_targets,
    is_known,
    split_destinations,
)
from mxgate.core.snapshot import RoutingData
from tests.core.data import decide, finals, policy, snapshot

OURS = (
    "corp.example",
    "catch.example",
    "relayed.example",
    "notransport.example",
    "closed.example",
    "later.example",
    "void.example",
)

DATA = snapshot(
    domains=OURS,
    mailboxes=(
        "alice@corp.example",
        "bob@corp.example",
        "carol@corp.example",
        "zed@catch.example",
        "mbfwd@corp.example",
    ),
    relays=(
        "relayed@corp.example",
        "@relayed.example",
        "@closed.example",
        "@later.example",
        "@void.example",
        "@notransport.example",
    ),
    forwards={
        "mbfwd@corp.example": "outside@example.net",
        "list@corp.example": ["alice@corp.example", "bob@corp.example"],
        "team@corp.example": "alice@corp.example, bob@corp.example \t carol@corp.example,,",
        "blank@corp.example": ["", " , "],
        "ext@corp.example": "outside@example.net, bob@corp.example",
        "@catch.example": "alice@corp.example",
        "keep@corp.example": "keep@corp.example, outside2@example.net",
        "chain1@corp.example": "chain2@corp.example",
        "chain2@corp.example": "chain3@corp.example",
        "chain3@corp.example": "alice@corp.example",
        "mixed@corp.example": "Mixed.Case@Example.NET, Carol@CORP.example",
        "partial@corp.example": "alice@corp.example, ghost@corp.example",
        "lp1@corp.example": "lp2@corp.example, bob@corp.example",
        "lp2@corp.example": "lp1@corp.example",
        "both@corp.example": "lpa@corp.example, ghost@corp.example",
        "both2@corp.example": "ghost@corp.example, lpa@corp.example",
        "lpa@corp.example": "lpb@corp.example",
        "lpb@corp.example": "lpa@corp.example",
        "selfloop@corp.example": "selfloop@corp.example",
        "backref@corp.example": "backref@corp.example, br2@corp.example",
        "br2@corp.example": "backref@corp.example",
        "dup@corp.example": "alice@corp.example, list@corp.example, ALICE@corp.example",
        "broken@corp.example": "bob@corp.example not-qualified @@bad",
        "torelay@corp.example": "relayed@corp.example",
        "fan@corp.example": "bob@corp.example, team@corp.example",
        "quoted@corp.example": '"john, doe"@example.net, bob@corp.example',
        "mixroute@corp.example": "alice@corp.example, x@notransport.example",
        "allnoroute@corp.example": "x@notransport.example",
        "half@corp.example": "alice@corp.example, a@closed.example",
        "toerror@corp.example": "a@closed.example",
        "todiscard@corp.example": "a@void.example, a@later.example",
        "dead2@corp.example": "ghost@corp.example, ghost2@corp.example",
    },
    transports={
        "corp.example": "smtp:[10.0.0.1]",
        "catch.example": "smtp:[10.0.0.1]",
        "relayed.example": "smtp:[10.0.0.6]",
        "closed.example": "error:5.2.1 mailbox closed",
        "later.example": "retry:4.3.2 maintenance",
        "void.example": "discard:spam trap",
    },
)


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        # 1. mailbox or exact relay maps to itself
        ("alice@corp.example", ["alice@corp.example"]),
        ("relayed@corp.example", ["relayed@corp.example"]),
        ("mbfwd@corp.example", ["mbfwd@corp.example"]),
        # 2. all exact forward rows; lists in a column; empty items ignored
        ("list@corp.example", ["alice@corp.example", "bob@corp.example"]),
        ("team@corp.example", ["alice@corp.example", "bob@corp.example", "carol@corp.example"]),
        ("quoted@corp.example", ['"john, doe"@example.net', "bob@corp.example"]),
        # 3. user@domain for user+ext@domain, extension kept
        ("alice+news@corp.example", ["alice+news@corp.example"]),
        ("relayed+x@corp.example", ["relayed+x@corp.example"]),
        ("ext+tag@corp.example", ["outside+tag@example.net", "bob+tag@corp.example"]),
        ("zed+news@catch.example", ["zed+news@catch.example"]),
        # 4. forward catch-all (no extension carried over)
        ("nobody@catch.example", ["alice@corp.example"]),
        ("nobody+tag@catch.example", ["alice@corp.example"]),
        # 5. relay catch-all maps the address to itself
        ("anyone@relayed.example", ["anyone@relayed.example"]),
        ("Anyone+X@Relayed.example", ["anyone+x@relayed.example"]),
        # results in our domains are expanded again
        ("chain1@corp.example", ["alice@corp.example"]),
        ("torelay@corp.example", ["relayed@corp.example"]),
        # an address that maps to itself stays
        ("keep@corp.example", ["keep@corp.example", "outside2@example.net"]),
        ("selfloop@corp.example", ["selfloop@corp.example"]),
        ("backref@corp.example", ["backref@corp.example"]),
        # one copy per final address
        ("dup@corp.example", ["alice@corp.example", "bob@corp.example"]),
        # lower case in our domains, local part as written outside
        ("mixed@corp.example", ["Mixed.Case@example.net", "carol@corp.example"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_expansion_finals(rcpt: str, expected: list[str]) -> None:
    decision = decide(DATA, f"<{rcpt}>")
    assert decision.reply.line() == "250 2.1.5 Ok"
    assert finals(decision) == expected
    assert decision.bounces == ()


def test_forward_with_only_empty_destinations_is_not_known() -> None:
    decision = decide(DATA, "<blank@corp.example>")
    assert decision.reply.code == 550
    assert decision.reply.enhanced == "5.1.1"
    assert "User unknown in relay recipient table" in decision.reply.text


def test_without_a_delimiter_extensions_are_not_stripped() -> None:
    assert (
        decide(DATA, "<alice+news@corp.example>", pol=policy(recipient_delimiter="")).reply.code
        == 550
    )


def test_several_delimiters() -> None:
    decision = decide(DATA, "<alice-news@corp.example>", pol=policy(recipient_delimiter="+-"))
    assert finals(decision) == ["alice-news@corp.example"]


@pytest.mark.parametrize(
    ("rcpt", "delivered", "bounced"),
    [
        (
            "partial@corp.example",
            ["alice@corp.example"],
            [
                (
                    "ghost@corp.example",
                    "5.1.1",
                    "forward target ghost@corp.example is unknown (no row for ghost@corp.example)",
                )
            ],
        ),
        (
            "lp1@corp.example",
            ["bob@corp.example"],
            [
                (
                    "lp1@corp.example",
                    "5.4.6",
                    "mail forwarding loop: "
                    "lp1@corp.example -> lp2@corp.example -> lp1@corp.example",
                )
            ],
        ),
        (
            "broken@corp.example",
            ["bob@corp.example"],
            [
                (
                    "not-qualified",
                    "5.1.1",
                    "forward destination 'not-qualified' is not a fully-qualified address",
                ),
                (
                    "@@bad",
                    "5.1.1",
                    "forward destination '@@bad' is not a valid address (source route without ':')",
                ),
            ],
        ),
        (
            "half@corp.example",
            ["alice@corp.example"],
            [("a@closed.example", "5.2.1", "mailbox closed")],
        ),
    ],
    ids=["dead-end", "loop", "invalid-destination", "error-transport"],
)
def test_partial_failures_are_bounced_and_the_rest_delivered(
    rcpt: str, delivered: list[str], bounced: list[tuple[str, str, str]]
) -> None:
    decision = decide(DATA, f"<{rcpt}>")
    assert decision.reply.code == 250
    assert finals(decision) == delivered
    assert [(b.recipient, b.enhanced, b.reason) for b in decision.bounces] == bounced
    assert all(b.original_recipient == rcpt for b in decision.bounces)


@pytest.mark.parametrize(
    ("rcpt", "line"),
    [
        (
            "both@corp.example",
            "550 5.4.6 <both@corp.example>: Recipient address rejected: mail forwarding loop: "
            "lpa@corp.example -> lpb@corp.example -> lpa@corp.example",
        ),
        (
            "both2@corp.example",
            "550 5.4.6 <both2@corp.example>: Recipient address rejected: mail forwarding loop: "
            "lpa@corp.example -> lpb@corp.example -> lpa@corp.example",
        ),
        (
            "dead2@corp.example",
            "550 5.1.1 <dead2@corp.example>: Recipient address rejected: forward target "
            "ghost@corp.example is unknown (no row for ghost@corp.example)",
        ),
        (
            "toerror@corp.example",
            "550 5.2.1 <toerror@corp.example>: Recipient address rejected: mailbox closed",
        ),
        (
            "a@closed.example",
            "550 5.2.1 <a@closed.example>: Recipient address rejected: mailbox closed",
        ),
        (
            "allnoroute@corp.example",
            "451 4.3.0 <allnoroute@corp.example>: Recipient address rejected: Temporary failure: "
            "no transport row for x@notransport.example",
        ),
        (
            "a@later.example",
            "451 4.3.0 <a@later.example>: Recipient address rejected: Temporary failure: "
            "retry: 4.3.2 maintenance",
        ),
    ],
    ids=[
        "loop-wins-over-dead-end",
        "loop-wins-over-an-earlier-dead-end",
        "only-dead-ends",
        "only-error-transport",
        "error-transport-direct",
        "no-route-anywhere",
        "retry-transport",
    ],
)
def test_nothing_deliverable_is_refused_at_rcpt(rcpt: str, line: str) -> None:
    decision = decide(DATA, f"<{rcpt}>")
    assert decision.reply.line() == line


def test_partial_no_route_is_deferred_not_refused() -> None:
    decision = decide(DATA, "<mixroute@corp.example>")
    assert decision.reply.code == 250
    assert finals(decision) == ["alice@corp.example"]
    assert [(d.recipient, d.reason) for d in decision.deferred] == [
        ("x@notransport.example", "no transport row for x@notransport.example")
    ]


def test_discard_delivers_and_retry_defers() -> None:
    decision = decide(DATA, "<todiscard@corp.example>")
    assert decision.reply.code == 250
    assert [(d.recipient, d.route.transport, d.route.nexthop) for d in decision.deliveries] == [
        ("a@void.example", "discard", "spam trap")
    ]
    assert [d.recipient for d in decision.deferred] == ["a@later.example"]


@pytest.mark.parametrize(
    ("rcpt", "limit", "code", "enhanced"),
    [
        ("chain1@corp.example", 3, 250, "2.1.5"),
        ("chain1@corp.example", 2, 550, "5.4.6"),
        ("list@corp.example", 1, 250, "2.1.5"),
    ],
    ids=["at-limit", "beyond", "flat"],
)
def test_recursion_limit(rcpt: str, limit: int, code: int, enhanced: str) -> None:
    decision = decide(DATA, f"<{rcpt}>", pol=policy(virtual_alias_recursion_limit=limit))
    assert (decision.reply.code, decision.reply.enhanced) == (code, enhanced)
    if code == 550:
        assert decision.reply.text.endswith(
            f"more than {limit} nested forwards (virtual_alias_recursion_limit)"
        )


@pytest.mark.parametrize(
    ("rcpt", "limit", "code", "delivered"),
    [
        ("list@corp.example", 2, 250, ["alice@corp.example", "bob@corp.example"]),
        ("team@corp.example", 2, 550, []),
        ("fan@corp.example", 3, 250, ["bob@corp.example"]),
    ],
    ids=["at-limit", "beyond", "partial"],
)
def test_expansion_limit(rcpt: str, limit: int, code: int, delivered: list[str]) -> None:
    decision = decide(DATA, f"<{rcpt}>", pol=policy(virtual_alias_expansion_limit=limit))
    assert decision.reply.code == code
    assert finals(decision) == delivered
    if code == 550:
        assert decision.reply.enhanced == "5.4.6"
        assert decision.reply.text.endswith(
            f"more than {limit} addresses (virtual_alias_expansion_limit)"
        )
    if rcpt == "fan@corp.example":
        assert [(b.recipient, b.enhanced) for b in decision.bounces] == [
            ("team@corp.example", "5.4.6")
        ]


def _wide(n: int) -> RoutingData:
    targets = ", ".join(f"user{i}@example.net" for i in range(n))
    return snapshot(domains=["corp.example"], forwards={"wide@corp.example": targets})


@pytest.mark.parametrize(("n", "code"), [(1000, 250), (1001, 550)], ids=["1000", "1001"])
def test_default_fan_out_limit_is_1000(n: int, code: int) -> None:
    decision = decide(_wide(n), "<wide@corp.example>")
    assert decision.reply.code == code
    assert len(decision.deliveries) == (n if code == 250 else 0)


def test_deep_chains_do_not_overflow_the_stack() -> None:
    n = 5000
    forwards = {f"c{i}@corp.example": f"c{i + 1}@corp.example" for i in range(n)}
    data = snapshot(
        domains=["corp.example"],
        mailboxes=[f"c{n}@corp.example"],
        forwards=forwards,
        transports={"corp.example": "smtp:[10.0.0.1]"},
    )
    refused = decide(data, "<c0@corp.example>")
    assert (refused.reply.code, refused.reply.enhanced) == (550, "5.4.6")
    accepted = decide(data, "<c0@corp.example>", pol=policy(virtual_alias_recursion_limit=n))
    assert finals(accepted) == [f"c{n}@corp.example"]


def test_the_tree_records_each_step() -> None:
    decision = decide(DATA, "<lp1@corp.example>")
    assert [(s.depth, s.address, s.note) for s in decision.expansion] == [
        (0, "lp1@corp.example", "forward lp1@corp.example -> lp2@corp.example, bob@corp.example"),
        (1, "lp2@corp.example", "forward lp2@corp.example -> lp1@corp.example"),
        (
            2,
            "lp1@corp.example",
            "loop: mail forwarding loop: lp1@corp.example -> lp2@corp.example -> lp1@corp.example",
        ),
        (1, "bob@corp.example", "mailbox row bob@corp.example matched"),
    ]


def test_dag_shared_targets_are_expanded_once() -> None:
    decision = decide(DATA, "<dup@corp.example>")
    notes = [s.note for s in decision.expansion]
    assert "duplicate final recipient: dropped" in notes


def _addr(text: str) -> Address:
    parsed = parse_path(text)
    assert isinstance(parsed, Address)
    return parsed


def test_expand_direct() -> None:
    result = expand(
        DATA,
        _addr("both@corp.example"),
        delimiter="+",
        postmaster="",
        recursion_limit=1000,
        expansion_limit=1000,
    )
    assert result.known and result.finals == ()
    assert [f.kind for f in result.failures] == [FailureKind.LOOP, FailureKind.DEAD_END]


@pytest.mark.parametrize(
    ("rcpt", "known"),
    [
        ("alice@corp.example", True),
        ("relayed@corp.example", True),
        ("list@corp.example", True),
        ("alice+x@corp.example", True),
        ("anything@catch.example", True),
        ("anything@relayed.example", True),
        ("blank@corp.example", False),
        ("ghost@corp.example", False),
        ("postmaster@corp.example", False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_known_definition(rcpt: str, known: bool) -> None:
    assert is_known(DATA, _addr(rcpt), "+") is known


@pytest.mark.parametrize(
    ("column", "tokens"),
    [
        ("a@x.example", ["a@x.example"]),
        ("a@x.example,b@x.example", ["a@x.example", "b@x.example"]),
        (
            " a@x.example ,\tb@x.example\n c@x.example ,, ",
            ["a@x.example", "b@x.example", "c@x.example"],
        ),
        ("", []),
        (' "a, b"@x.example c@x.example', ['"a, b"@x.example', "c@x.example"]),
        ('"a\\" b"@x.example,d@x.example', ['"a\\" b"@x.example', "d@x.example"]),
        ('"unterminated, x', ['"unterminated, x']),
    ],
    ids=[
        "one",
        "comma",
        "mixed-separators",
        "empty",
        "quoted-comma",
        "escaped-quote",
        "unterminated",
    ],
)
def test_split_destinations(column: str, tokens: list[str]) -> None:
    assert split_destinations(column) == tokens


def test_forward_targets_join_rows_once() -> None:
    assert forward_targets(("a@x.example, b@x.example", "b@x.example", "")) == (
        "a@x.example",
        "b@x.example",
    )


def test_message_plan_deduplicates_across_recipients() -> None:
    first = decide(DATA, "<list@corp.example>")
    second = decide(DATA, "<Bob@corp.example>")
    third = decide(DATA, "<team@corp.example>")
    refused = decide(DATA, "<ghost@corp.example>")
    plan = plan_message([first, refused, second, third])
    assert [(d.recipient, d.original_recipient) for d in plan.deliveries] == [
        ("alice@corp.example", "list@corp.example"),
        ("bob@corp.example", "list@corp.example"),
        ("carol@corp.example", "team@corp.example"),
    ]


def test_message_plan_keeps_deferred_and_bounces_once() -> None:
    one = decide(DATA, "<mixroute@corp.example>")
    two = decide(DATA, "<partial@corp.example>")
    three = decide(DATA, "<dead2@corp.example>")  # refused: contributes nothing
    plan = plan_message([one, two, two, three])
    assert [d.recipient for d in plan.deliveries] == ["alice@corp.example"]
    assert [d.recipient for d in plan.deferred] == ["x@notransport.example"]
    assert [(b.recipient, b.original_recipient) for b in plan.bounces] == [
        ("ghost@corp.example", "partial@corp.example")
    ]


def test_a_catch_all_never_takes_routing_characters_in_a_forward_target() -> None:
    data = snapshot(
        domains=["corp.example", "catch.example"],
        mailboxes=["alice@corp.example"],
        forwards={"pct@corp.example": "a%b@catch.example", "@catch.example": "alice@corp.example"},
        transports={"corp.example": "smtp:[10.0.0.1]"},
    )
    decision = decide(data, "<pct@corp.example>")
    assert decision.reply.line() == (
        "550 5.1.1 <pct@corp.example>: Recipient address rejected: forward target "
        "a%b@catch.example is unknown (no row for a%b@catch.example)"
    )


def test_a_shared_forward_is_expanded_once_even_in_a_deep_dag() -> None:
    """Level i has two forwards, each to both forwards of level i+1: without
    memory of what was expanded, 2**40 paths (or the fan-out limit)."""
    levels = 40
    forwards = {
        f"n{i}{side}@corp.example": f"n{i + 1}a@corp.example, n{i + 1}b@corp.example"
        for i in range(levels)
        for side in "ab"
    }
    data = snapshot(
        domains=["corp.example"],
        mailboxes=[f"n{levels}a@corp.example", f"n{levels}b@corp.example"],
        forwards=forwards,
        transports={"corp.example": "smtp:[10.0.0.1]"},
    )
    decision = decide(data, "<n0a@corp.example>")
    assert decision.reply.code == 250
    assert finals(decision) == [f"n{levels}a@corp.example", f"n{levels}b@corp.example"]
    assert decision.bounces == ()
    # Each node of a level below the second is reached twice, expanded once.
    assert sum(s.note == "already expanded above" for s in decision.expansion) == 2 * (levels - 2)
    assert len(decision.expansion) < 5 * levels
