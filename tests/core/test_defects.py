"""SPEC section 9: each known defect of the tutorial's set-up, one test each,
showing what mxgate does instead. (The password column width is a schema
matter, tested with the migrations in tests/directory.)"""

from __future__ import annotations

from mxgate.core.query import query
from tests.core.data import INTERNET, decide, finals, policy, routes, snapshot, tutorial


def test_relay_domains_query_without_where_clause() -> None:
    """Tutorial: every domain is a relay domain. mxgate: only rows of domain."""
    data = tutorial()
    assert query(data, "relay_domains", "gmail.com") is None
    assert query(data, "relay_domains", "Server1.Example.com") == "server1.example.com"
    assert decide(data, "<someone@gmail.com>", INTERNET).reply.line() == (
        "554 5.7.1 <someone@gmail.com>: Relay access denied"
    )


def test_forward_query_gives_specific_and_catch_all_both() -> None:
    """Tutorial: source='@d' OR source='addr' delivers to both. mxgate: the
    specific row wins."""
    data = tutorial(forwards={"sales@server1.example.com": "david@server1.example.com"})
    decision = decide(data, "<sales@server1.example.com>")
    assert finals(decision) == ["david@server1.example.com"]
    assert query(data, "virtual_forward", "sales@server1.example.com") == (
        "david@server1.example.com"
    )
    assert query(data, "virtual_forward", "other@server1.example.com") == "james@example.com"


def test_forward_primary_key_allows_one_row_per_source() -> None:
    """Tutorial: PRIMARY KEY (source). mxgate: several rows for one source."""
    data = tutorial(
        forwards={"team@server1.example.com": ["james@server1.example.com", "boss@example.net"]}
    )
    assert finals(decide(data, "<team@server1.example.com>")) == [
        "james@server1.example.com",
        "boss@example.net",
    ]


def test_transport_unique_domain_forbids_gateway_and_node_rows() -> None:
    """Tutorial: UNIQUE (domain). mxgate: a gateway row and a node row coexist,
    and each role takes its own."""
    data = tutorial(
        transports={
            "server1.example.com": {
                "": "smtp:[10.0.0.2]",
                "maila": "lmtp:unix:private/dovecot-lmtp",
            }
        }
    )
    gateway = decide(data, "<james@server1.example.com>")
    node = decide(data, "<james@server1.example.com>", pol=policy(node_name="maila"))
    assert [d.route.nexthop for d in gateway.deliveries] == ["[10.0.0.2]:25"]
    assert [d.route.nexthop for d in node.deliveries] == ["unix:private/dovecot-lmtp"]


def test_accept_first_route_later_causes_backscatter() -> None:
    """Tutorial: unroutable mail accepted, then bounced. mxgate: 451 at RCPT."""
    decision = decide(tutorial(), "<david@other.example.com>")
    assert (decision.reply.code, decision.reply.enhanced) == (451, "4.3.0")
    assert decision.deliveries == ()


def test_database_down_defers_every_rcpt() -> None:
    """Tutorial: every RCPT gets 451 while PostgreSQL is down. mxgate decides
    from the in-memory snapshot alone; only with no snapshot at all is it 451."""
    assert decide(tutorial(), "<james@server1.example.com>").reply.code == 250
    assert decide(tutorial(), "<nobody@other.example.com>").reply.code == 451  # no route
    assert decide(None, "<james@server1.example.com>").reply.enhanced == "4.3.0"


def test_plus_address_goes_to_the_catch_all() -> None:
    """Tutorial: user+ext@d matched the catch-all before user@d. mxgate: the
    mailbox (or exact forward) of user@d wins, the extension kept."""
    data = tutorial(forwards={"info@server1.example.com": "boss@example.net"})
    assert routes(decide(data, "<james+news@server1.example.com>")) == [
        ("james+news@server1.example.com", "smtp", "[10.0.0.2]:25", False)
    ]
    assert finals(decide(data, "<info+sales@server1.example.com>")) == ["boss+sales@example.net"]
    assert finals(decide(data, "<nobody+x@server1.example.com>")) == ["james@example.com"]


def test_upper_case_rows_never_match() -> None:
    """Tutorial: lookups are lower-case, so rows stored in upper case are dead.
    mxgate: every key is folded, in the snapshot and at lookup."""
    data = tutorial()
    assert finals(decide(data, "<JAMES@Server1.Example.COM>")) == ["james@server1.example.com"]
    assert query(data, "relay_recipients", "David@SERVER1.example.com") == "OK"
    assert query(data, "transport", "SERVER1.EXAMPLE.COM") == "smtp:[10.0.0.2]"


def test_forward_loop_is_accepted_then_deferred_after_data() -> None:
    """Tutorial: a loop is accepted at RCPT, then 451 4.6.0 after DATA for the
    whole message. mxgate: 550 5.4.6 at RCPT when nothing else is
    deliverable; otherwise only the looping part is bounced."""
    data = tutorial(
        forwards={
            "a@server1.example.com": "b@server1.example.com",
            "b@server1.example.com": "a@server1.example.com",
            "c@server1.example.com": "a@server1.example.com, james@server1.example.com",
        }
    )
    refused = decide(data, "<a@server1.example.com>")
    assert (refused.reply.code, refused.reply.enhanced) == (550, "5.4.6")
    partial = decide(data, "<c@server1.example.com>")
    assert partial.reply.code == 250
    assert finals(partial) == ["james@server1.example.com"]
    assert [(b.recipient, b.enhanced) for b in partial.bounces] == [
        ("a@server1.example.com", "5.4.6")
    ]


def test_relay_recipient_query_scans_the_whole_mailbox_table() -> None:
    """Tutorial: every unknown recipient scans the mailbox table (~14
    rejections per second with 1M mailboxes). mxgate: rejected from the
    in-memory snapshot, no database involved (here, 200k mailboxes). How fast
    is measured by bench/routing.py, not here."""
    data = snapshot(
        domains=[f"d{i}.example" for i in range(100)],
        mailboxes=[f"user{i}@d{i % 100}.example" for i in range(200_000)],
    )
    for i in range(5000):
        reply = decide(data, f"<nobody{i}@d{i % 100}.example>").reply
        assert (reply.code, reply.enhanced) == (550, "5.1.1")
