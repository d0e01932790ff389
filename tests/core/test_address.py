"""Path parsing: RFC 5321 syntax, limits, SMTPUTF8, IDNA, normalisation."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any

import pytest

from mxgate.core.address import (
    Address,
    AddressError,
    AddressProblem,
    normalize_domain,
    parse_path,
    quote_local,
    split_extension,
    unquote_local,
)

SYNTAX = AddressProblem.SYNTAX
TOO_LONG = AddressProblem.TOO_LONG
NEEDS_SMTPUTF8 = AddressProblem.NEEDS_SMTPUTF8

VALID: list[tuple[str, str, bool, str, str, dict[str, Any]]] = [
    # id, text, smtputf8, local, domain, other fields expected
    ("plain", "<james@server1.example.com>", False, "james", "server1.example.com", {}),
    ("no-brackets", "james@server1.example.com", False, "james", "server1.example.com", {}),
    ("space-after-colon", " <james@x.example>", False, "james", "x.example", {}),
    ("tab-and-trailing-blank", "\t<james@x.example> ", False, "james", "x.example", {}),
    ("space-no-brackets", " james@x.example", False, "james", "x.example", {}),
    (
        "case-domain-folded",
        "<James@Server1.EXAMPLE.com>",
        False,
        "James",
        "server1.example.com",
        {},
    ),
    (
        "atext-specials",
        "<a.b-c_d+e/f=g?h^i`j{k|l}m~n#o$p&q'r*s@x.example>",
        False,
        "a.b-c_d+e/f=g?h^i`j{k|l}m~n#o$p&q'r*s",
        "x.example",
        {},
    ),
    (
        "quoted-dot-atom-is-unquoted",
        '<"o\'brien"@x.example>',
        False,
        "o'brien",
        "x.example",
        {"quoted": False},
    ),
    ("quoted-pair-dot-atom", '<"a\\b"@x.example>', False, "ab", "x.example", {"quoted": False}),
    ("quoted-blank", '<"john doe"@x.example>', False, '"john doe"', "x.example", {"quoted": True}),
    (
        "quoted-needless-escape",
        '<"john\\ doe"@x.example>',
        False,
        '"john doe"',
        "x.example",
        {"quoted": True},
    ),
    (
        "quoted-escaped-quote",
        '<"a\\"b"@x.example>',
        False,
        '"a\\"b"',
        "x.example",
        {"quoted": True},
    ),
    ("quoted-leading-dot", '<".a"@x.example>', False, '".a"', "x.example", {"quoted": True}),
    (
        "percent-hack",
        "<a%b.example@x.example>",
        False,
        "a%b.example",
        "x.example",
        {"routing_chars": True},
    ),
    (
        "bang-path",
        "<host!user@x.example>",
        False,
        "host!user",
        "x.example",
        {"routing_chars": True},
    ),
    (
        "unquoted-second-at",
        "<user@gmail.com@x.example>",
        False,
        "user@gmail.com",
        "x.example",
        {"routing_chars": True},
    ),
    (
        "quoted-at",
        '<"user@gmail.com"@x.example>',
        False,
        '"user@gmail.com"',
        "x.example",
        {"routing_chars": True, "quoted": True},
    ),
    (
        "quoted-percent-dot-atom",
        '<"a%b"@x.example>',
        False,
        "a%b",
        "x.example",
        {"routing_chars": True, "quoted": False},
    ),
    (
        "source-route",
        "<@a.example,@B.example:james@x.example>",
        False,
        "james",
        "x.example",
        {"source_route": ("a.example", "b.example")},
    ),
    (
        "ipv4-literal",
        "<postmaster@[192.0.2.10]>",
        False,
        "postmaster",
        "[192.0.2.10]",
        {"literal": ip_address("192.0.2.10")},
    ),
    (
        "ipv6-literal",
        "<a@[IPv6:2001:DB8::25]>",
        False,
        "a",
        "[ipv6:2001:db8::25]",
        {"literal": ip_address("2001:db8::25")},
    ),
    (
        "ipv6-literal-long-form",
        "<a@[IPv6:2001:db8:0:0:0:0:0:25]>",
        False,
        "a",
        "[ipv6:2001:db8::25]",
        {},
    ),
    ("unqualified", "postmaster", False, "postmaster", "", {}),
    ("unqualified-bracketed", "<Postmaster>", False, "Postmaster", "", {}),
    ("null-path", "<>", False, "", "", {}),
    ("null-path-blank", " <> ", False, "", "", {}),
    (
        "utf8-local-and-idna",
        "<jörg@bücher.example>",
        True,
        "jörg",
        "xn--bcher-kva.example",
        {"non_ascii": True},
    ),
    (
        "idna-domain-only",
        "<info@BÜCHER.example>",
        True,
        "info",
        "xn--bcher-kva.example",
        {"non_ascii": True},
    ),
    ("idna2003-maps-sharp-s", "<a@straße.example>", True, "a", "strasse.example", {}),
    ("a-label-as-written", "<a@XN--BCHER-KVA.example>", False, "a", "xn--bcher-kva.example", {}),
    ("ideographic-full-stop", "<a@例子。广告>", True, "a", "xn--fsqu00a.xn--4rr70v", {}),
    (
        "utf8-quoted",
        '<"jörg müller"@x.example>',
        True,
        '"jörg müller"',
        "x.example",
        {"quoted": True},
    ),
    ("local-64-octets", f"<{'a' * 64}@x.example>", False, "a" * 64, "x.example", {}),
    (
        "address-254-octets",
        f"<{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 59}.e>",
        False,
        "a" * 64,
        f"{'b' * 63}.{'c' * 63}.{'d' * 59}.e",
        {},
    ),
    ("numeric-labels", "<a@1.2.3.4>", False, "a", "1.2.3.4", {"literal": None}),
]


@pytest.mark.parametrize(
    ("text", "smtputf8", "local", "domain", "fields"),
    [v[1:] for v in VALID],
    ids=[v[0] for v in VALID],
)
def test_valid_paths(
    text: str, smtputf8: bool, local: str, domain: str, fields: dict[str, Any]
) -> None:
    parsed = parse_path(text, smtputf8)
    assert isinstance(parsed, Address), parsed
    assert (parsed.local, parsed.domain) == (local, domain)
    for name, value in fields.items():
        assert getattr(parsed, name) == value, name


INVALID: list[tuple[str, str, bool, AddressProblem]] = [
    ("nothing", "", False, SYNTAX),
    ("blank", "   ", False, SYNTAX),
    ("open-bracket-only", "<", False, SYNTAX),
    ("unbalanced-left", "<a@x.example", False, SYNTAX),
    ("unbalanced-right", "a@x.example>", False, SYNTAX),
    ("trailing-dot-domain", "<a@x.example.>", False, SYNTAX),
    ("empty-label", "<a@x..example>", False, SYNTAX),
    ("leading-dot-domain", "<a@.x.example>", False, SYNTAX),
    ("empty-domain", "<a@>", False, SYNTAX),
    ("double-at-empty-domain", "<james@@>", False, SYNTAX),
    ("leading-dot-local", "<.a@x.example>", False, SYNTAX),
    ("trailing-dot-local", "<a.@x.example>", False, SYNTAX),
    ("double-dot-local", "<a..b@x.example>", False, SYNTAX),
    ("blank-in-local", "<a b@x.example>", False, SYNTAX),
    ("blank-inside-brackets", "< a@x.example>", False, SYNTAX),
    ("nul", "<a\x00b@x.example>", False, SYNTAX),
    ("nul-smtputf8", "<a\x00b@x.example>", True, SYNTAX),
    ("crlf", "<a@x.example>\r\n", False, SYNTAX),
    ("tab-inside", "<a\tb@x.example>", False, SYNTAX),
    ("del", "<a\x7fb@x.example>", False, SYNTAX),
    ("nul-in-quotes", '<"a\x00b"@x.example>', False, SYNTAX),
    ("c1-control", "<a\x85b@x.example>", True, SYNTAX),
    ("lone-surrogate", "<a\ud800b@x.example>", True, SYNTAX),
    ("unterminated-quote", '<"abc@x.example>', False, SYNTAX),
    ("escape-at-end-of-quote", '<"abc\\">', False, SYNTAX),
    ("text-after-quote", '<"a"b@x.example>', False, SYNTAX),
    ("empty-quoted", '<""@x.example>', False, SYNTAX),
    ("quote-inside-atom", '<a"b@x.example>', False, SYNTAX),
    ("bad-ipv4-literal", "<a@[999.1.1.1]>", False, SYNTAX),
    ("short-ipv4-literal", "<a@[1.2.3]>", False, SYNTAX),
    ("leading-zero-literal", "<a@[01.2.3.4]>", False, SYNTAX),
    ("bad-ipv6-literal", "<a@[IPv6:zz::1]>", False, SYNTAX),
    ("ipv6-without-tag", "<a@[2001:db8::1]>", False, SYNTAX),
    ("scoped-ipv6-literal", "<a@[IPv6:fe80::1%eth0]>", False, SYNTAX),
    ("general-literal-tag", "<a@[tag:content]>", False, SYNTAX),
    ("unclosed-literal", "<a@[1.2.3.4>", False, SYNTAX),
    ("underscore-domain", "<a@b_c.example>", False, SYNTAX),
    ("hyphen-label", "<a@-b.example>", False, SYNTAX),
    ("label-64", f"<a@{'b' * 64}.example>", False, SYNTAX),
    ("route-without-colon", "<@x.example>", False, SYNTAX),
    ("route-hop-without-at", "<@a.example,b.example:x@y.example>", False, SYNTAX),
    ("route-literal-hop", "<@[1.2.3.4]:x@y.example>", False, SYNTAX),
    ("route-empty-mailbox", "<@a.example:>", False, SYNTAX),
    ("route-unqualified", "<@a.example:postmaster>", False, SYNTAX),
    ("bad-idna", "<a@xn--ü.example>", True, SYNTAX),
    ("local-65", f"<{'a' * 65}@x.example>", False, TOO_LONG),
    ("local-65-octets-utf8", f"<{'ü' * 33}@x.example>", True, TOO_LONG),
    ("address-255", f"<{'a' * 64}@{'b' * 63}.{'c' * 63}.{'d' * 60}.e>", False, TOO_LONG),
    ("path-over-256", f"<@{'r' * 60}.example:{'a' * 60}@{'b' * 63}.{'c' * 63}>", False, TOO_LONG),
    ("absurd-length", "a" * 100_000 + "@x.example", False, TOO_LONG),
    ("utf8-local-without-smtputf8", "<jörg@x.example>", False, NEEDS_SMTPUTF8),
    ("u-label-without-smtputf8", "<a@bücher.example>", False, NEEDS_SMTPUTF8),
    ("utf8-quoted-without-smtputf8", '<"jörg"@x.example>', False, NEEDS_SMTPUTF8),
]


@pytest.mark.parametrize(
    ("text", "smtputf8", "problem"), [v[1:] for v in INVALID], ids=[v[0] for v in INVALID]
)
def test_invalid_paths(text: str, smtputf8: bool, problem: AddressProblem) -> None:
    parsed = parse_path(text, smtputf8)
    assert isinstance(parsed, AddressError), parsed
    assert parsed.problem is problem
    assert parsed.detail


@pytest.mark.parametrize(
    ("written", "key", "shown"),
    [
        (
            "<James+News@Server1.Example.COM>",
            "james+news@server1.example.com",
            "James+News@server1.example.com",
        ),
        ('<"John Doe"@x.example>', '"john doe"@x.example', '"John Doe"@x.example'),
        ("<POSTMASTER>", "postmaster", "POSTMASTER"),
        ("<>", "", ""),
    ],
    ids=["extension", "quoted", "unqualified", "null"],
)
def test_key_is_lower_case_and_str_keeps_local_case(written: str, key: str, shown: str) -> None:
    parsed = parse_path(written)
    assert isinstance(parsed, Address)
    assert parsed.key == key
    assert str(parsed) == shown


def test_null_and_unqualified_flags() -> None:
    null = parse_path("<>")
    bare = parse_path("postmaster")
    assert isinstance(null, Address) and isinstance(bare, Address)
    assert null.is_null and not null.is_qualified
    assert not bare.is_null and not bare.is_qualified
    literal = parse_path("<a@[192.0.2.1]>")
    assert isinstance(literal, Address) and literal.is_literal and not literal.has_source_route


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("example.com.", None),
        ("", None),
        ("a..b", None),
        ("a" * 64 + ".example", None),
    ],
    ids=["ascii", "u-label", "trailing-dot", "empty", "empty-label", "long-label"],
)
def test_normalize_domain(text: str, expected: str | None) -> None:
    result = normalize_domain(text)
    if expected is None:
        assert isinstance(result, AddressError)
    else:
        assert result == expected


@pytest.mark.parametrize(
    ("local", "delimiter", "expected"),
    [
        ("james+news", "+", ("james", "+news")),
        ("james+a+b", "+", ("james", "+a+b")),
        ("james+", "+", ("james", "+")),
        ("+james", "+", None),
        ("james", "+", None),
        ("james-news", "+-", ("james", "-news")),
        ("james+news", "", None),
    ],
    ids=["plain", "first-delimiter", "trailing", "leading", "none", "several-delimiters", "off"],
)
def test_split_extension(local: str, delimiter: str, expected: tuple[str, str] | None) -> None:
    assert split_extension(local, delimiter) == expected


def test_quote_and_unquote_are_inverse() -> None:
    for content in ["john doe", 'a"b', "a\\b", "x"]:
        assert unquote_local(quote_local(content)) == content
    assert unquote_local("plain") == "plain"


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("<a@x.example.>", "domain ends with a dot"),
        ("<a@x.example", "unbalanced angle brackets"),
        ("<a\x00@x.example>", "control character in address"),
        ("<jörg@x.example>", "non-ASCII address without SMTPUTF8"),
        ("", "empty path"),
    ],
    ids=["trailing-dot", "unbalanced", "control", "non-ascii", "empty"],
)
def test_error_details(text: str, detail: str) -> None:
    parsed = parse_path(text)
    assert isinstance(parsed, AddressError)
    assert parsed.detail == detail
