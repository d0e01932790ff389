"""``mxgate explain`` rendering: the JSON shape of SPEC section 10, and text."""

from __future__ import annotations

import json

from mxgate.core.explain import describe_route, to_json_dict, to_text
from mxgate.core.transport import Route, parse_transport
from tests.core.data import decide, tutorial

DATA = tutorial(
    domains=("closed.example", "plain.example"),
    relays=("@closed.example",),
    forwards={
        "team@server1.example.com": (
            "james+team@server1.example.com, ghost@plain.example, x@closed.example,"
            " y@other.example.com"
        ),
    },
    transports={"closed.example": "error:5.2.1 mailbox closed"},
)


def test_json_shape_of_a_catch_all_to_the_outside() -> None:
    decision = decide(DATA, "<anyone@server1.example.com>")
    doc = to_json_dict(decision)
    assert list(doc) == ["reply", "deliveries", "deferred", "bounces", "trace"]
    assert doc["reply"] == {"code": 250, "enhanced": "2.1.5", "text": "Ok"}
    assert doc["deliveries"] == [
        {
            "recipient": "james@example.com",
            "original_recipient": "anyone@server1.example.com",
            "transport": "smtp",
            "nexthop": "example.com",
            "mx_lookup": True,
        }
    ]
    assert doc["deferred"] == [] and doc["bounces"] == []
    trace = doc["trace"]
    assert isinstance(trace, list)
    assert (
        "anyone@server1.example.com: forward @server1.example.com (catch-all) -> james@example.com"
        in trace
    )
    json.dumps(doc)  # serialisable as is


def test_json_of_a_mixed_expansion() -> None:
    doc = to_json_dict(decide(DATA, "<team@server1.example.com>"))
    assert doc["reply"] == {"code": 250, "enhanced": "2.1.5", "text": "Ok"}
    assert doc["deliveries"] == [
        {
            "recipient": "james+team@server1.example.com",
            "original_recipient": "team@server1.example.com",
            "transport": "smtp",
            "nexthop": "[10.0.0.2]:25",
            "mx_lookup": False,
        }
    ]
    assert doc["deferred"] == [
        {"recipient": "y@other.example.com", "reason": "no transport row for y@other.example.com"}
    ]
    assert doc["bounces"] == [
        {
            "recipient": "ghost@plain.example",
            "enhanced": "5.1.1",
            "reason": "forward target ghost@plain.example is unknown "
            "(no row for ghost@plain.example)",
        },
        {"recipient": "x@closed.example", "enhanced": "5.2.1", "reason": "mailbox closed"},
    ]


def test_json_of_a_refusal() -> None:
    doc = to_json_dict(decide(DATA, "<someone@gmail.com>"))
    assert doc["reply"] == {
        "code": 554,
        "enhanced": "5.7.1",
        "text": "<someone@gmail.com>: Relay access denied",
    }
    assert (doc["deliveries"], doc["deferred"], doc["bounces"]) == ([], [], [])
    assert doc["trace"] == [
        "sender <sender@example.net>",
        "recipient <someone@gmail.com> is 'someone@gmail.com' for lookups",
        "client 203.0.113.7 is not in mynetworks",
        "gmail.com is not one of our domains",
        "reply: 554 5.7.1 <someone@gmail.com>: Relay access denied",
    ]


def test_text_reads_reply_then_tree_then_routes() -> None:
    text = to_text(decide(DATA, "<team@server1.example.com>"))
    lines = text.splitlines()
    assert lines[0] == "250 2.1.5 Ok"
    assert lines[1] == "  recipient <team@server1.example.com>"
    tree = lines[lines.index("expansion:") + 1 : lines.index("deliveries:") - 1]
    assert tree == [
        "  team@server1.example.com  [forward team@server1.example.com -> "
        "james+team@server1.example.com, ghost@plain.example, x@closed.example, "
        "y@other.example.com]",
        "    james+team@server1.example.com  [mailbox row james@server1.example.com matched "
        "(extension +team kept)]",
        "    ghost@plain.example  [dead end: forward target ghost@plain.example is "
        "unknown (no row for ghost@plain.example)]",
        "    x@closed.example  [relay @closed.example matched (catch-all)]",
        "    y@other.example.com  [relay @other.example.com matched (catch-all)]",
    ]
    assert "  james+team@server1.example.com -> smtp to [10.0.0.2]:25 (no MX lookup)" in lines
    assert "  y@other.example.com: no transport row for y@other.example.com" in lines
    assert "  x@closed.example: 5.2.1 mailbox closed" in lines
    assert lines.index("deliveries:") < lines.index("trace:")
    assert text.endswith("\n")


def test_text_of_a_refusal_has_no_route_sections() -> None:
    text = to_text(decide(DATA, "<nobody@other.example.com>"))
    assert text.startswith(
        "451 4.3.0 <nobody@other.example.com>: Recipient address rejected: "
        "Temporary failure: no transport row for nobody@other.example.com\n"
    )
    assert "deliveries:" not in text
    assert "expansion:" in text and "trace:" in text


def _route(value: str) -> Route:
    route = parse_transport(value)
    assert isinstance(route, Route)
    return route


def test_describe_route() -> None:
    assert describe_route(_route("smtp:example.com")) == "smtp to example.com (MX lookup)"
    assert describe_route(_route("lmtp:unix:/run/lmtp")) == "lmtp to unix:/run/lmtp (UNIX socket)"
    assert describe_route(_route("discard:")) == "discard"
    assert describe_route(_route("discard:trap")) == "discard (trap)"
    assert describe_route(_route("retry:")) == "retry: 4.0.0 Try again later"
