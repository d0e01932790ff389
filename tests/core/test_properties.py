"""Properties over arbitrary input: nothing raises, nothing relays openly."""

from __future__ import annotations

import json
from ipaddress import ip_address

from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.core.address import (
    MAX_ADDRESS,
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    Address,
    AddressError,
    parse_path,
)
from mxgate.core.expand import forward_targets, is_known
from mxgate.core.explain import to_json_dict, to_text
from mxgate.core.query import MAPS, query
from mxgate.core.snapshot import RoutingData
from mxgate.core.transport import Route, TransportError, parse_relayhost, parse_transport
from tests.core.data import INTERNET, POLICY, TRUSTED, decide, snapshot

# Every character, lone surrogates included (the default strategy leaves them out).
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=300)

PIECES = [
    "<",
    ">",
    "@",
    "%",
    "!",
    '"',
    "\\",
    ":",
    ",",
    "[",
    "]",
    "IPv6:",
    "ipv6:",
    ".",
    " ",
    "\t",
    "\x00",
    "\r\n",
    "\x7f",
    "\x85",
    "\ud800",
    "postmaster",
    "Postmaster",
    "james",
    "a",
    "ü",
    "例",
    "。",
    "xn--",
    "-",
    "+",
    "192.0.2.10",
    "198.51.100.1",
    "2001:db8::25",
    "::1",
    "%eth0",
    "server1.example.com",
    "other.example.com",
    "gmail.com",
    "bücher.example",
    "a" * 70,
    "b" * 300,
]
ADDRESSY = st.lists(st.sampled_from(PIECES) | st.text(ANY_CHAR, max_size=3), max_size=25).map(
    "".join
)
LONG = st.integers(0, 3000).map(lambda n: "<" + "a" * n + "@x.example>")

# Structurally plausible paths, so that the valid branches are explored too.
ATEXT = "abcXYZ019!#$%&'*+-/=?^_`{|}~@üé例"
ATOMS = st.lists(st.text(st.sampled_from(ATEXT), min_size=1, max_size=8), min_size=1, max_size=4)
QTEXT = st.text(st.sampled_from(' abc.,@%!"\\()<>[]:;ü\x00'), max_size=10)
LOCAL = ATOMS.map(".".join) | QTEXT.map(
    lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
LABEL = st.text(st.sampled_from("abcXY09-ü例"), min_size=1, max_size=12)
DOMAIN = (
    st.lists(LABEL, min_size=1, max_size=4).map(".".join)
    | st.ip_addresses(v=4).map(lambda ip: f"[{ip}]")
    | st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip}]")
)
ROUTE = st.lists(DOMAIN, max_size=2).map(
    lambda ds: ",".join(f"@{d}" for d in ds) + ":" if ds else ""
)
PLAUSIBLE = st.tuples(
    st.sampled_from(["<{}>", "{}", " <{}>", "<{}", "{}>"]),
    ROUTE,
    LOCAL,
    st.sampled_from(["@", ""]),
    DOMAIN,
).map(lambda p: p[0].format(p[1] + p[2] + (p[3] + p[4] if p[3] else "")))
PATHS = ANY_TEXT | ADDRESSY | LONG | PLAUSIBLE | PLAUSIBLE


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))


@settings(max_examples=600, deadline=None)
@given(PATHS, st.booleans())
def test_parse_path_never_raises_and_respects_the_limits(text: str, smtputf8: bool) -> None:
    result = parse_path(text, smtputf8)
    assert isinstance(result, Address | AddressError)
    if isinstance(result, AddressError) or result.is_null:
        return
    shown = str(result)
    assert _octets(result.local) <= MAX_LOCAL_PART
    assert len(result.domain) <= MAX_DOMAIN
    assert _octets(shown) <= MAX_ADDRESS
    assert result.domain.isascii() and result.domain == result.domain.lower()
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in shown)
    if not smtputf8:
        assert shown.isascii()
    # Canonical form is stable: parsing what we print gives the same address.
    again = parse_path(f"<{shown}>", smtputf8=True)
    assert isinstance(again, Address)
    assert (again.local, again.domain, again.quoted, again.routing_chars) == (
        result.local,
        result.domain,
        result.quoted,
        result.routing_chars,
    )


@settings(max_examples=300, deadline=None)
@given(
    ANY_TEXT
    | st.sampled_from(["smtp:[", "lmtp:unix:", "error:5.", "relay:[ipv6:"]).flatmap(
        lambda p: ANY_TEXT.map(lambda t: p + t)
    )
)
def test_transport_parsing_never_raises(value: str) -> None:
    assert isinstance(parse_transport(value), Route | TransportError)
    assert isinstance(parse_relayhost(value), Route | TransportError)


# --- random snapshots ---------------------------------------------------------

OUR = ["a.test", "b.test", "c.test"]
OUTSIDE = ["out.example", "[198.51.100.1]"]
LOCALS = ["x", "y", "z", "postmaster", "X.Y", '"q q"']
ADDRESSES = [f"{lp}@{d}" for lp in LOCALS for d in OUR + OUTSIDE]
TRANSPORTS = [
    "smtp:[10.0.0.1]",
    "smtp:",
    "lmtp:unix:/run/lmtp",
    "error:5.1.1 gone",
    "retry:",
    "discard:",
    "bogus:",
    "",
    "smtp:[broken",
]
DESTINATIONS = st.lists(
    st.sampled_from([*ADDRESSES, "", " , ", "junk", "@@", "a%b@a.test", "y+ext@a.test"]),
    max_size=4,
).map(", ".join)


@st.composite
def snapshots(draw: st.DrawFn) -> RoutingData:
    domains = draw(st.lists(st.sampled_from(OUR), unique=True))
    sources = st.sampled_from(
        [a for a in ADDRESSES if a.split("@")[1] in OUR] + [f"@{d}" for d in OUR]
    )
    return snapshot(
        domains=domains,
        mailboxes=draw(st.lists(st.sampled_from([a for a in ADDRESSES if "@" in a]), max_size=4)),
        relays=draw(st.lists(sources, max_size=3)),
        forwards=draw(
            st.dictionaries(sources, st.lists(DESTINATIONS, min_size=1, max_size=2), max_size=6)
        ),
        transports=draw(
            st.dictionaries(
                st.sampled_from([*OUR, ".test", "*", *ADDRESSES]),
                st.sampled_from(TRANSPORTS),
                max_size=4,
            )
        ),
    )


KNOWN_RCPTS = st.sampled_from(
    [f"<{a}>" for a in ADDRESSES]
    + [
        "<postmaster>",
        "<x>",
        "<>",
        "<x+tag@a.test>",
        "<X@A.TEST>",
        "<x%y@a.test>",
        "<@a.test:x@b.test>",
        "<postmaster@[192.0.2.10]>",
        "<x@[198.51.100.1]>",
        "<x@a.test@out.example>",
        '<"x@out.example"@a.test>',
    ]
)
RCPTS = st.integers(0, 3).flatmap(lambda n: PATHS if n == 0 else KNOWN_RCPTS)
CLIENTS = st.sampled_from([INTERNET, TRUSTED, None, "garbage", ip_address("::ffff:203.0.113.7")])
CODES = {250, 451, 452, 501, 504, 550, 553, 554}


@settings(max_examples=500, deadline=None)
@given(snapshots() | st.none(), RCPTS, CLIENTS, st.booleans(), st.integers(0, 1200))
def test_decide_never_raises(
    data: RoutingData | None, rcpt: str, client: object, smtputf8: bool, so_far: int
) -> None:
    decision = decide(data, rcpt, client, smtputf8, so_far)
    assert decision.reply.code in CODES
    if decision.accepted:
        assert decision.deliveries
        assert decision.reply.line() == "250 2.1.5 Ok"
    else:
        assert not (decision.deliveries or decision.deferred or decision.bounces)
        if data is None:
            assert decision.reply.code < 550 or decision.reply.code in (553, 554)
    doc = to_json_dict(decision)
    json.dumps(doc)
    assert to_text(decision).startswith(decision.reply.line())


def _forward_tokens(data: RoutingData) -> list[Address]:
    out = []
    for rows in data.forwards.values():
        for token in forward_targets(rows):
            parsed = parse_path(token, smtputf8=True)
            if isinstance(parsed, Address):
                out.append(parsed)
    return out


@settings(max_examples=500, deadline=None)
@given(snapshots(), RCPTS, st.booleans())
def test_no_open_relay(data: RoutingData, rcpt: str, smtputf8: bool) -> None:
    """A client outside mynetworks reaches a next hop outside our domains
    only where a forward row (or the configured postmaster) leads there, and
    a final recipient in our domains only by a transport row."""
    decision = decide(data, rcpt, INTERNET, smtputf8)
    if not decision.accepted:
        return
    tokens = _forward_tokens(data)
    for delivery in decision.deliveries:
        final = parse_path(delivery.recipient, smtputf8=True)
        assert isinstance(final, Address)
        if final.domain in data.domains:
            assert "transport row" in delivery.reason, delivery
            continue
        assert delivery.recipient == POLICY.postmaster or any(
            t.domain == final.domain
            and (t.local == final.local or final.local.startswith(f"{t.local}+"))
            for t in tokens
        ), delivery
    target = parse_path(rcpt, smtputf8)
    if isinstance(target, Address) and target.domain in data.domains:
        assert target.local.lower() == "postmaster" or is_known(data, target, "+")


@settings(max_examples=200, deadline=None)
@given(snapshots(), st.sampled_from(MAPS), PATHS)
def test_query_never_raises(data: RoutingData, map_name: str, key: str) -> None:
    answer = query(data, map_name, key, "maila", True)
    assert answer is None or isinstance(answer, str)
