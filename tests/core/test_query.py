"""``mxgate query MAP KEY``: the tutorial's postmap -q answers, corrected."""

from __future__ import annotations

import pytest

from mxgate.core.query import MAPS, fold_key, query
from tests.core.data import tutorial

DATA = tutorial(
    domains=("xn--bcher-kva.example",),
    forwards={
        "sales@server1.example.com": [
            "david@server1.example.com",
            "boss@example.net, x@example.net",
        ],
        "empty@server1.example.com": "",
        "@xn--bcher-kva.example": "info@example.net",
    },
    transports={
        "other.example.com": {"maila": "lmtp:unix:private/dovecot-lmtp"},
        "*": {"": "   "},
        ".example.com": {"": "smtp:"},
    },
)


@pytest.mark.parametrize(
    ("map_name", "key", "expected"),
    [
        ("transport", "server1.example.com", "smtp:[10.0.0.2]"),
        ("transport", "SERVER1.example.com", "smtp:[10.0.0.2]"),
        ("transport", ".example.com", "smtp:"),
        ("transport", "other.example.com", None),
        ("transport", "*", None),
        ("transport", "nothing.example", None),
        ("relay_domains", "server1.example.com", "server1.example.com"),
        ("relay_domains", "Other.Example.Com", "other.example.com"),
        ("relay_domains", "bücher.example", "xn--bcher-kva.example"),
        ("relay_domains", "gmail.com", None),
        ("relay_domains", "", None),
        ("relay_recipients", "james@server1.example.com", "OK"),
        ("relay_recipients", "david@server1.example.com", "OK"),
        ("relay_recipients", "sales@server1.example.com", "OK"),
        ("relay_recipients", "anyone@server1.example.com", "OK"),
        ("relay_recipients", "anyone@other.example.com", "OK"),
        ("relay_recipients", "@other.example.com", "OK"),
        ("relay_recipients", "anyone@xn--bcher-kva.example", "OK"),
        ("relay_recipients", "anyone@gmail.com", None),
        ("relay_recipients", "gmail.com", None),
        (
            "virtual_forward",
            "sales@server1.example.com",
            "david@server1.example.com,boss@example.net,x@example.net",
        ),
        ("virtual_forward", "nobody@server1.example.com", "james@example.com"),
        ("virtual_forward", "empty@server1.example.com", "james@example.com"),
        ("virtual_forward", "@server1.example.com", "james@example.com"),
        ("virtual_forward", "James@Server1.example.com", "james@example.com"),
        ("virtual_forward", "anyone@other.example.com", None),
        ("virtual_forward", "server1.example.com", None),
        ("virtual_email2email", "james@server1.example.com", "james@server1.example.com"),
        ("virtual_email2email", "DAVID@server1.example.com", "david@server1.example.com"),
        ("virtual_email2email", "@other.example.com", "@other.example.com"),
        ("virtual_email2email", "anyone@other.example.com", None),
        ("virtual_email2email", "sales@server1.example.com", None),
    ],
    ids=lambda v: v if isinstance(v, str) and v else None,
)
def test_gateway_answers(map_name: str, key: str, expected: str | None) -> None:
    assert query(DATA, map_name, key) == expected


@pytest.mark.parametrize(
    ("node", "fallback", "key", "expected"),
    [
        ("maila", False, "other.example.com", "lmtp:unix:private/dovecot-lmtp"),
        ("maila", False, "server1.example.com", None),
        ("maila", True, "server1.example.com", "smtp:[10.0.0.2]"),
        ("", False, "other.example.com", None),
    ],
    ids=["node-row", "node-no-fallback", "node-fallback", "gateway-ignores-node-row"],
)
def test_transport_by_role(node: str, fallback: bool, key: str, expected: str | None) -> None:
    assert query(DATA, "transport", key, node, fallback) == expected


def test_unknown_map_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="unknown map 'virtual_mailbox'"):
        query(DATA, "virtual_mailbox", "x")
    assert set(MAPS) == {
        "transport",
        "relay_domains",
        "relay_recipients",
        "virtual_forward",
        "virtual_email2email",
    }


@pytest.mark.parametrize(
    ("key", "folded"),
    [
        (" James@Server1.Example.COM ", "james@server1.example.com"),
        ("@Other.example.com", "@other.example.com"),
        (".Example.COM", ".example.com"),
        ("*", "*"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("info@BÜCHER.example", "info@xn--bcher-kva.example"),
        ("bad..domain", "bad..domain"),
        ("", ""),
    ],
    ids=[
        "address",
        "catch-all",
        "parent",
        "wildcard",
        "u-label",
        "u-label-address",
        "bad",
        "empty",
    ],
)
def test_fold_key(key: str, folded: str) -> None:
    assert fold_key(key) == folded
