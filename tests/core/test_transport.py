"""Transport strings (transport(5) syntax) and the transport(5) key order."""

from __future__ import annotations

import pytest

from mxgate.core.address import Address, parse_path
from mxgate.core.transport import (
    Route,
    RouteKind,
    TransportError,
    find_transport_row,
    parse_relayhost,
    parse_transport,
    role_value,
    transport_keys,
)

SMTP, LMTP = RouteKind.SMTP, RouteKind.LMTP

# id, value, (kind, transport, host, port, mx_lookup, unix_path), nexthop text
PARSED: list[tuple[str, str, tuple[RouteKind, str, str, int, bool, str], str]] = [
    (
        "smtp-bracketed-port",
        "smtp:[10.0.0.2]:2525",
        (SMTP, "smtp", "10.0.0.2", 2525, False, ""),
        "[10.0.0.2]:2525",
    ),
    (
        "smtp-bracketed",
        "smtp:[10.0.0.2]",
        (SMTP, "smtp", "10.0.0.2", 25, False, ""),
        "[10.0.0.2]:25",
    ),
    (
        "smtp-bracketed-name",
        "smtp:[Mail.Example.com]",
        (SMTP, "smtp", "mail.example.com", 25, False, ""),
        "[mail.example.com]:25",
    ),
    (
        "smtp-host-port-mx",
        "smtp:mail.example.com:587",
        (SMTP, "smtp", "mail.example.com", 587, True, ""),
        "mail.example.com:587",
    ),
    (
        "smtp-host-mx",
        "smtp:example.com",
        (SMTP, "smtp", "example.com", 25, True, ""),
        "example.com",
    ),
    ("smtp-empty-nexthop", "smtp:", (SMTP, "smtp", "", 25, True, ""), "$domain"),
    ("smtp-no-colon", "smtp", (SMTP, "smtp", "", 25, True, ""), "$domain"),
    (
        "relay-is-smtp",
        "relay:[10.0.0.3]",
        (SMTP, "relay", "10.0.0.3", 25, False, ""),
        "[10.0.0.3]:25",
    ),
    ("relay-empty", "relay:", (SMTP, "relay", "", 25, True, ""), "$domain"),
    (
        "service-name-port",
        "smtp:[10.0.0.2]:submission",
        (SMTP, "smtp", "10.0.0.2", 587, False, ""),
        "[10.0.0.2]:587",
    ),
    (
        "inet-prefix",
        "smtp:inet:[10.0.0.2]:25",
        (SMTP, "smtp", "10.0.0.2", 25, False, ""),
        "[10.0.0.2]:25",
    ),
    (
        "ipv6-bracketed-port",
        "smtp:[2001:db8::1]:25",
        (SMTP, "smtp", "2001:db8::1", 25, False, ""),
        "[2001:db8::1]:25",
    ),
    (
        "ipv6-bracketed",
        "smtp:[2001:DB8:0::1]",
        (SMTP, "smtp", "2001:db8::1", 25, False, ""),
        "[2001:db8::1]:25",
    ),
    (
        "ipv6-tagged",
        "smtp:[IPv6:2001:db8::1]:2525",
        (SMTP, "smtp", "2001:db8::1", 2525, False, ""),
        "[2001:db8::1]:2525",
    ),
    (
        "ipv6-tagged-lower",
        "smtp:[ipv6:2001:db8::1]",
        (SMTP, "smtp", "2001:db8::1", 25, False, ""),
        "[2001:db8::1]:25",
    ),
    (
        "lmtp-bracketed-port",
        "lmtp:[10.0.0.5]:24",
        (LMTP, "lmtp", "10.0.0.5", 24, False, ""),
        "[10.0.0.5]:24",
    ),
    (
        "lmtp-default-port",
        "lmtp:[10.0.0.5]",
        (LMTP, "lmtp", "10.0.0.5", 24, False, ""),
        "[10.0.0.5]:24",
    ),
    (
        "lmtp-host-no-mx",
        "lmtp:mailstore.example.com",
        (LMTP, "lmtp", "mailstore.example.com", 24, False, ""),
        "[mailstore.example.com]:24",
    ),
    (
        "lmtp-unix",
        "lmtp:unix:/var/run/dovecot/lmtp",
        (LMTP, "lmtp", "", 0, False, "/var/run/dovecot/lmtp"),
        "unix:/var/run/dovecot/lmtp",
    ),
    (
        "lmtp-unix-relative",
        "lmtp:unix:private/dovecot-lmtp",
        (LMTP, "lmtp", "", 0, False, "private/dovecot-lmtp"),
        "unix:private/dovecot-lmtp",
    ),
    (
        "lmtp-inet",
        "lmtp:inet:10.0.0.5:2424",
        (LMTP, "lmtp", "10.0.0.5", 2424, False, ""),
        "[10.0.0.5]:2424",
    ),
    (
        "empty-transport-field",
        ":[10.0.0.9]",
        (SMTP, "smtp", "10.0.0.9", 25, False, ""),
        "[10.0.0.9]:25",
    ),
    ("noop-entry", ":", (SMTP, "smtp", "", 25, True, ""), "$domain"),
    (
        "upper-case-name",
        "SMTP:[10.0.0.2]",
        (SMTP, "smtp", "10.0.0.2", 25, False, ""),
        "[10.0.0.2]:25",
    ),
    (
        "surrounding-blanks",
        "  smtp:[10.0.0.2]  ",
        (SMTP, "smtp", "10.0.0.2", 25, False, ""),
        "[10.0.0.2]:25",
    ),
    (
        "unbracketed-ip-no-mx",
        "smtp:10.0.0.2:25",
        (SMTP, "smtp", "10.0.0.2", 25, False, ""),
        "[10.0.0.2]:25",
    ),
]


@pytest.mark.parametrize(
    ("value", "fields", "nexthop"), [p[1:] for p in PARSED], ids=[p[0] for p in PARSED]
)
def test_delivering_transports(
    value: str, fields: tuple[RouteKind, str, str, int, bool, str], nexthop: str
) -> None:
    route = parse_transport(value)
    assert isinstance(route, Route), route
    kind, transport, host, port, mx, unix = fields
    assert (route.kind, route.transport, route.host, route.port, route.mx_lookup) == (
        kind,
        transport,
        host,
        port,
        mx,
    )
    assert route.unix_path == unix
    assert route.nexthop == nexthop
    assert route.delivers


@pytest.mark.parametrize(
    ("value", "kind", "enhanced", "text", "nexthop"),
    [
        (
            "error:",
            RouteKind.ERROR,
            "5.0.0",
            "Address is undeliverable",
            "5.0.0 Address is undeliverable",
        ),
        (
            "error",
            RouteKind.ERROR,
            "5.0.0",
            "Address is undeliverable",
            "5.0.0 Address is undeliverable",
        ),
        (
            "error:mailbox closed",
            RouteKind.ERROR,
            "5.0.0",
            "mailbox closed",
            "5.0.0 mailbox closed",
        ),
        (
            "error:5.1.1 User unknown",
            RouteKind.ERROR,
            "5.1.1",
            "User unknown",
            "5.1.1 User unknown",
        ),
        ("error:4.2.1 held", RouteKind.ERROR, "5.2.1", "held", "5.2.1 held"),
        ("retry:", RouteKind.RETRY, "4.0.0", "Try again later", "4.0.0 Try again later"),
        (
            "retry:4.3.2 maintenance until 18:00",
            RouteKind.RETRY,
            "4.3.2",
            "maintenance until 18:00",
            "4.3.2 maintenance until 18:00",
        ),
        (
            "retry:5.3.2 forced transient",
            RouteKind.RETRY,
            "4.3.2",
            "forced transient",
            "4.3.2 forced transient",
        ),
        ("discard:", RouteKind.DISCARD, "", "", ""),
        ("discard:spam trap", RouteKind.DISCARD, "", "spam trap", "spam trap"),
    ],
    ids=[
        "error-empty",
        "error-no-colon",
        "error-text",
        "error-dsn",
        "error-forced-5",
        "retry-empty",
        "retry-dsn",
        "retry-forced-4",
        "discard",
        "discard-text",
    ],
)
def test_non_delivering_transports(
    value: str, kind: RouteKind, enhanced: str, text: str, nexthop: str
) -> None:
    route = parse_transport(value)
    assert isinstance(route, Route), route
    assert (route.kind, route.enhanced, route.text, route.nexthop) == (
        kind,
        enhanced,
        text,
        nexthop,
    )
    assert route.delivers is (kind is RouteKind.DISCARD)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "dovecot:",
        "virtual:",
        "local:",
        "smtp:2001:db8::1",
        "smtp:[2001:db8::1",
        "smtp:[10.0.0.2]x",
        "smtp:[10.0.0.2]:",
        "smtp:[10.0.0.2]:0",
        "smtp:[10.0.0.2]:65536",
        "smtp:[10.0.0.2]:nosuchservice",
        "smtp:[]",
        "smtp:[ipv6:]",
        "smtp:[999.0.0.1]",
        "smtp:999.0.0.1",
        "smtp:[fe80::1%eth0]",
        "smtp:bad_host.example",
        "smtp:host .example",
        "smtp::25",
        "smtp:unix:/tmp/sock",
        "lmtp:unix:",
        "smtp:-bad.example",
    ],
    ids=lambda v: repr(v),
)
def test_invalid_transports_are_values(value: str) -> None:
    result = parse_transport(value)
    assert isinstance(result, TransportError), result
    assert result.value == value
    assert result.reason


@pytest.mark.parametrize(
    ("domain", "host", "mx"),
    [
        ("example.com", "example.com", True),
        ("[192.0.2.1]", "192.0.2.1", False),
        ("[ipv6:2001:db8::1]", "2001:db8::1", False),
    ],
    ids=["domain", "ipv4-literal", "ipv6-literal"],
)
def test_empty_nexthop_takes_the_recipient_domain(domain: str, host: str, mx: bool) -> None:
    route = parse_transport("smtp:")
    assert isinstance(route, Route)
    filled = route.for_domain(domain)
    assert (filled.host, filled.mx_lookup, filled.port) == (host, mx, 25)
    lmtp = parse_transport("lmtp:")
    assert isinstance(lmtp, Route)
    assert (lmtp.for_domain("example.com").host, lmtp.for_domain("example.com").mx_lookup) == (
        "example.com",
        False,
    )


@pytest.mark.parametrize(
    ("transport", "domain", "label"),
    [
        ("smtp:", "Example.COM", "smtp:$domain"),
        ("smtp:", "[192.0.2.1]", "smtp:$domain"),
        ("smtp:", "[ipv6:2001:db8::1]", "smtp:$domain"),
        ("lmtp:", "example.com", "lmtp:$domain"),
        ("smtp:[10.0.0.2]", "example.com", "smtp:[10.0.0.2]:25"),
        # A row that names the recipient domain as its host is still a row.
        ("smtp:[example.com]:2525", "example.com", "smtp:[example.com]:2525"),
        ("relay:mx.example.net:2525", "example.com", "relay:mx.example.net:2525"),
        ("lmtp:unix:/run/dovecot/lmtp", "example.com", "lmtp:unix:/run/dovecot/lmtp"),
        ("error:5.1.1 no such user here", "example.com", "error:"),
        ("retry:try later", "example.com", "retry:"),
        ("discard:spam trap", "example.com", "discard:"),
    ],
)
def test_the_metric_label_of_a_next_hop_is_bounded(transport: str, domain: str, label: str) -> None:
    """One label per transport-table next hop; the recipient's domain (MX
    routing, one per domain) and error/retry/discard texts never become one."""
    route = parse_transport(transport)
    assert isinstance(route, Route)
    assert route.for_domain(domain).metric_label(domain) == label


def test_a_given_nexthop_is_kept() -> None:
    route = parse_transport("smtp:[10.0.0.2]")
    assert isinstance(route, Route)
    assert route.for_domain("example.com") is route


@pytest.mark.parametrize(
    ("value", "host", "port", "mx"),
    [
        ("[relay.example.net]:587", "relay.example.net", 587, False),
        ("[10.9.9.9]", "10.9.9.9", 25, False),
        ("relay.example.net", "relay.example.net", 25, True),
        ("relay.example.net:2525", "relay.example.net", 2525, True),
        ("[IPv6:2001:db8::9]:26", "2001:db8::9", 26, False),
    ],
    ids=["bracketed-port", "bracketed", "mx", "mx-port", "ipv6"],
)
def test_relayhost(value: str, host: str, port: int, mx: bool) -> None:
    route = parse_relayhost(value)
    assert isinstance(route, Route)
    assert (route.kind, route.host, route.port, route.mx_lookup) == (SMTP, host, port, mx)


@pytest.mark.parametrize("value", ["", "[x", "smtp:[10.0.0.1]", "a b"], ids=repr)
def test_bad_relayhost(value: str) -> None:
    assert isinstance(parse_relayhost(value), TransportError)


def _address(text: str) -> Address:
    parsed = parse_path(text)
    assert isinstance(parsed, Address)
    return parsed


@pytest.mark.parametrize(
    ("rcpt", "delimiter", "keys"),
    [
        (
            "james@server1.example.com",
            "+",
            ["james@server1.example.com", "server1.example.com", ".example.com", ".com", "*"],
        ),
        (
            "James+News@Sub.Server1.example.com",
            "+",
            [
                "james+news@sub.server1.example.com",
                "james@sub.server1.example.com",
                "sub.server1.example.com",
                ".server1.example.com",
                ".example.com",
                ".com",
                "*",
            ],
        ),
        ("james+news@example", "", ["james+news@example", "example", "*"]),
        ("a@[192.0.2.1]", "+", ["a@[192.0.2.1]", "[192.0.2.1]", "*"]),
    ],
    ids=["plain", "extension-and-parents", "no-delimiter", "literal"],
)
def test_transport_key_order(rcpt: str, delimiter: str, keys: list[str]) -> None:
    """transport(5): full address, without extension, domain, .parents, *."""
    assert transport_keys(_address(rcpt), delimiter) == keys


TABLE = {
    "server1.example.com": {"": "smtp:[10.0.0.2]", "maila": "lmtp:unix:private/dovecot-lmtp"},
    "*": {"maila": "lmtp:[127.0.0.1]:24"},
    "gw-only.example.com": {"": "smtp:[10.0.0.7]"},
    "empty.example.com": {"": "   ", "maila": ""},
    ".example.com": {"": "smtp:[10.0.0.8]"},
}


@pytest.mark.parametrize(
    ("keys", "node", "fallback", "expected"),
    [
        (["server1.example.com", "*"], "", False, ("server1.example.com", "", "smtp:[10.0.0.2]")),
        (
            ["server1.example.com", "*"],
            "maila",
            False,
            ("server1.example.com", "maila", "lmtp:unix:private/dovecot-lmtp"),
        ),
        (["gw-only.example.com", "*"], "maila", False, ("*", "maila", "lmtp:[127.0.0.1]:24")),
        (["gw-only.example.com", "*"], "maila", True, ("*", "maila", "lmtp:[127.0.0.1]:24")),
        (["gw-only.example.com"], "maila", False, None),
        (["gw-only.example.com"], "maila", True, ("gw-only.example.com", "", "smtp:[10.0.0.7]")),
        (["gw-only.example.com"], "mailb", True, ("gw-only.example.com", "", "smtp:[10.0.0.7]")),
        (["empty.example.com", ".example.com"], "", False, (".example.com", "", "smtp:[10.0.0.8]")),
        (["nothing.example"], "", False, None),
    ],
    ids=[
        "gateway",
        "node-own-row",
        "node-own-wildcard-beats-gateway-domain",
        "fallback-only-after-own-rows",
        "node-no-fallback",
        "node-fallback",
        "other-node-fallback",
        "empty-value-is-absent",
        "no-row",
    ],
)
def test_role_rows(
    keys: list[str], node: str, fallback: bool, expected: tuple[str, str, str] | None
) -> None:
    row = find_transport_row(TABLE, keys, node, fallback)
    assert (None if row is None else (row.key, row.node, row.value)) == expected


def test_role_value_per_key() -> None:
    assert role_value(TABLE["server1.example.com"], "", False) == "smtp:[10.0.0.2]"
    assert role_value(TABLE["gw-only.example.com"], "maila", False) is None
    assert role_value(TABLE["gw-only.example.com"], "maila", True) == "smtp:[10.0.0.7]"
    assert role_value(TABLE["empty.example.com"], "", False) is None
    assert role_value(None, "", False) is None
