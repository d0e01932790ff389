"""``mxgate.core.rules``: normal forms of operator input and the forward vetting."""

from __future__ import annotations

import pytest

from mxgate.core import rules
from mxgate.core.rules import ExpansionSettings, Refusal
from mxgate.core.snapshot import RoutingData


@pytest.mark.parametrize(
    ("function", "text", "stored"),
    [
        (rules.domain_name, "Example.COM", "example.com"),
        (rules.domain_name, " bücher.example ", "xn--bcher-kva.example"),
        (rules.mailbox_address, "James@Server1.Example.COM", "james@server1.example.com"),
        (rules.mailbox_address, "<x@bücher.example>", "x@xn--bcher-kva.example"),
        (rules.mailbox_address, '"o\'brien"@d.example', "o'brien@d.example"),
        (rules.mailbox_address, '"A B"@d.example', '"a b"@d.example'),
        (rules.source, "@Other.Example.com", "@other.example.com"),
        (rules.source, "User+Tag@d.example", "user+tag@d.example"),
        (rules.transport_key, "*", "*"),
        (rules.transport_key, ".Example.COM", ".example.com"),
        (rules.transport_key, "Bob@D.example", "bob@d.example"),
        (rules.transport_value, " smtp:[192.0.2.1]:25 ", "smtp:[192.0.2.1]:25"),
        (rules.node_name, "maila", "maila"),
        (rules.like_pattern, "User*_%?", "user%\\_\\%_"),
    ],
)
def test_normal_forms(function: object, text: str, stored: str) -> None:
    assert function(text) == stored  # type: ignore[operator]


@pytest.mark.parametrize(
    ("function", "text", "words"),
    [
        (rules.domain_name, "[192.0.2.1]", "address literal"),
        (rules.domain_name, "a..b", "not a domain name"),
        (rules.domain_name, "x" * 64 + ".example", "not a domain name"),
        (rules.mailbox_address, "x@[192.0.2.1]", "address literal"),
        (rules.mailbox_address, "a!b@d.example", "relay access denied"),
        (rules.mailbox_address, "@a,@b:x@d.example", "source route"),
        (rules.mailbox_address, "<>", "fully-qualified"),
        (rules.mailbox_address, "x" * 65 + "@d.example", "local part longer"),
        (rules.source, "@", "not a domain name"),
        (rules.transport_value, "", "empty transport"),
        (rules.node_name, "a b", "node name"),
        (rules.node_name, "n" * 51, "longer than 50"),
        (rules.quota, "-1", "quota"),
        (rules.quota, "99999999999T", "larger than the column"),
    ],
)
def test_refusals(function: object, text: str, words: str) -> None:
    with pytest.raises(Refusal, match=words):
        function(text)  # type: ignore[operator]


def test_comment_width_and_clearing() -> None:
    assert rules.comment("") is None and rules.comment(None) is None
    with pytest.raises(Refusal, match="longer than 500"):
        rules.comment("x" * 501)


def test_quota_units() -> None:
    assert [rules.quota(t) for t in ("0", "512K", "10M", "1GiB", "2 g")] == [
        0,
        512 * 1024,
        10 * 1024**2,
        1024**3,
        2 * 1024**3,
    ]


def test_destinations_keep_their_case_outside_our_domains() -> None:
    ours = {"d.example"}
    assert rules.destination("Bob@D.Example", ours) == "bob@d.example"
    assert rules.destination("Bob@Elsewhere.Example", ours) == "Bob@elsewhere.example"


def test_route_keys() -> None:
    assert rules.route_keys("a@b.c.example") == [
        "a@b.c.example",
        "b.c.example",
        ".c.example",
        ".example",
        "*",
    ]
    assert rules.route_keys("@b.example") == ["b.example", ".example", "*"]


def data() -> RoutingData:
    return RoutingData(
        domains={"d.example": None},
        mailboxes={"m@d.example": "n"},
        forwards={"a@d.example": ("b@d.example",)},
    )


def test_vet_forward_refuses_a_loop_and_adds_nothing_to_the_database() -> None:
    with pytest.raises(Refusal, match=r"loop: mail forwarding loop: b@d\.example -> a@d\.example"):
        rules.vet_forward(data(), "b@d.example", ["a@d.example"], ExpansionSettings())


def test_vet_forward_dead_ends_and_force() -> None:
    with pytest.raises(Refusal, match=r"dead end: forward target x@d\.example is unknown"):
        rules.vet_forward(data(), "c@d.example", ["x@d.example"], ExpansionSettings())
    warnings = rules.vet_forward(
        data(), "c@d.example", ["x@d.example"], ExpansionSettings(), force=True
    )
    assert warnings and "dead end" in warnings[0]


def test_vet_forward_refuses_a_forward_to_itself_that_nothing_else_takes() -> None:
    # z -> z stays (SPEC section 4), and nothing but the forward knows z: the
    # gateway would accept it and relay it to a next hop without its mailbox.
    with pytest.raises(Refusal, match=r"z@d\.example maps to itself, but no mailbox"):
        rules.vet_forward(data(), "z@d.example", ["z@d.example"], ExpansionSettings())
    warnings = rules.vet_forward(
        data(), "z@d.example", ["z@d.example", "copy@x.example"], ExpansionSettings(), force=True
    )
    assert warnings and "maps to itself" in warnings[0]
    # Taken by a relay catch-all of its domain: fine.
    relayed = data()
    relayed.relays["@d.example"] = "n"
    assert rules.vet_forward(relayed, "z@d.example", ["z@d.example"], ExpansionSettings()) == []


def test_vet_forward_ignores_problems_it_did_not_cause() -> None:
    # a -> b is already a dead end; adding a second, good destination is fine.
    assert rules.vet_forward(data(), "a@d.example", ["m@d.example"], ExpansionSettings()) == []


def test_vet_forward_shadowed_source() -> None:
    with pytest.raises(Refusal, match="is a mailbox"):
        rules.vet_forward(data(), "m@d.example", ["z@x.example"], ExpansionSettings())
    assert rules.vet_forward(
        data(), "m@d.example", ["z@x.example"], ExpansionSettings(), force=True
    )


def test_vet_forward_source_outside_our_domains() -> None:
    with pytest.raises(Refusal, match="not one of our domains"):
        rules.vet_forward(data(), "@x.example", ["z@d.example"], ExpansionSettings())
