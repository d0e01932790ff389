"""``mxgate.core.check``: each kind of finding, from rows crafted to have it."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from mxgate.core.check import (
    CheckSettings,
    Finding,
    RawRows,
    Severity,
    check,
    fold,
    summary,
)
from mxgate.core.rules import ExpansionSettings
from mxgate.core.transport import own_endpoint

D = "d.example"
GOOD = RawRows(
    domains=[(D, "maila"), ("e.example", "maila")],
    mailboxes=[(f"james@{D}", "maila"), ("eve@e.example", "maila")],
    relays=[(f"david@{D}", "maila")],
    forwards=[(f"info@{D}", f"james@{D}"), (f"info@{D}", "someone@outside.example")],
    transports=[(D, "", "smtp:[192.0.2.1]"), (".example", "", "smtp:[192.0.2.2]:2525")],
)


def with_rows(**extra: Sequence[tuple[str | None, ...]]) -> RawRows:
    """GOOD plus some rows."""
    fields = {name: [*getattr(GOOD, name), *rows] for name, rows in extra.items()}
    return RawRows(**{**{n: getattr(GOOD, n) for n in GOOD.__dataclass_fields__}, **fields})


def findings(rows: RawRows, **settings: object) -> list[Finding]:
    return check(rows, CheckSettings(**settings))  # type: ignore[arg-type]


def kinds(rows: RawRows, **settings: object) -> set[tuple[str, str, str]]:
    return {(f.severity.value, f.kind, f.key) for f in findings(rows, **settings)}


def test_an_address_kept_by_its_forward_and_taken_by_a_row_is_fine() -> None:
    # A forward to itself beside a relay catch-all (the relay takes it), or for
    # user+ext whose user is a mailbox: nothing to say.
    rows = with_rows(
        relays=[("@e.example", "maila")],
        forwards=[("z@e.example", "z@e.example"), (f"james+x@{D}", f"james+x@{D}")],
    )
    assert not [f for f in findings(rows) if f.kind == "forward-to-itself"]


def test_good_rows_have_no_errors_or_warnings() -> None:
    # The node has no transport rows at all: one info, nothing more.
    assert kinds(GOOD) == {("info", "node-without-transport", "maila")}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # forward loops (each loop once, whichever source finds it)
        ({"forwards": [(f"a@{D}", f"b@{D}"), (f"b@{D}", f"a@{D}")]},
         ("error", "forward-loop", f"a@{D}")),
        ({"forwards": [(f"self@{D}", f"other@{D}"), (f"other@{D}", f"SELF@{D}")]},
         ("error", "forward-loop", f"other@{D}")),
        # a forward target in our domains that nothing takes
        ({"forwards": [(f"x@{D}", f"ghost@{D}")]}, ("error", "dead-end", f"x@{D}")),
        ({"forwards": [(f"x@{D}", "not an address")]}, ("error", "bad-destination", f"x@{D}")),
        # a forward that keeps an address nothing else takes (it stays, and its
        # next hop has no mailbox for it), directly or further down
        ({"forwards": [(f"z@{D}", f"z@{D}"), (f"z@{D}", "copy@outside.example")]},
         ("warning", "forward-to-itself", f"z@{D}")),
        ({"forwards": [(f"y@{D}", f"z@{D}"), (f"z@{D}", f"Z@{D}")]},
         ("warning", "forward-to-itself", f"y@{D}")),
        # a domain with mailboxes and no transport row for the gateways
        ({"domains": [("noroute.test", "maila")], "mailboxes": [("bob@noroute.test", "maila")]},
         ("error", "no-transport", "noroute.test")),
        ({"domains": [("noroute.test", None)], "relays": [("@noroute.test", "maila")]},
         ("error", "no-transport", "noroute.test")),
        # transports
        ({"transports": [("e.example", "", "frob:x")]}, ("error", "bad-transport", "e.example")),
        ({"transports": [("e.example", "", "smtp:[unclosed")]},
         ("error", "bad-transport", "e.example")),
        ({"transports": [("e.example", "", "  ")]}, ("warning", "empty-transport", "e.example")),
        # rows that are dead: sources and mailboxes outside our domains
        ({"relays": [("x@other.test", "maila")]}, ("warning", "outside-domains", "x@other.test")),
        ({"forwards": [("@other.test", f"james@{D}")]},
         ("warning", "outside-domains", "@other.test")),
        ({"mailboxes": [("m@other.test", "maila")]},
         ("warning", "outside-domains", "m@other.test")),
        # case variants and upper case
        ({"mailboxes": [(f"James@{D}", "mailb")]}, ("warning", "case-variant", f"james@{D}")),
        ({"domains": [("D.example", "x")]}, ("warning", "case-variant", D)),
        ({"transports": [(D.upper(), "", "smtp:")]}, ("warning", "case-variant", D)),
        ({"relays": [(f"Zed@{D}", "maila")]}, ("info", "upper-case", f"Zed@{D}")),
        # keys lookups never use
        ({"domains": [("bücher.example", None)]}, ("warning", "bad-key", "bücher.example")),
        ({"relays": [("no-domain", "maila")]}, ("warning", "bad-key", "no-domain")),
        # the same destination twice for one source (any case, rows or lists)
        ({"forwards": [(f"info@{D}", f"James@{D}, x@y.example")]},
         ("warning", "duplicate", f"info@{D}")),
        ({"forwards": [(f"Info@{D}", "someone@outside.example")]},
         ("warning", "duplicate", f"info@{D}")),
        # empty forward destinations, shadowed forwards
        ({"forwards": [(f"empty@{D}", " , ")]}, ("warning", "empty-destination", f"empty@{D}")),
        ({"forwards": [(f"james@{D}", "x@outside.example")]},
         ("warning", "forward-shadowed", f"james@{D}")),
        # catch-all beside mailboxes
        ({"forwards": [(f"@{D}", "all@outside.example")]},
         ("info", "catch-all-with-mailboxes", f"@{D}")),
        ({"relays": [(f"@{D}", "maila")]}, ("info", "catch-all-with-mailboxes", f"@{D}")),
        # a node that has transport rows, but none for some of its mailboxes
        ({"transports": [("e.example", "maila", "lmtp:unix:/run/lmtp")]},
         ("warning", "node-without-transport", D)),
    ],
)  # fmt: skip
def test_each_kind_of_finding(
    extra: dict[str, Sequence[tuple[str | None, ...]]], expected: tuple[str, str, str]
) -> None:
    assert expected in kinds(with_rows(**extra))


def test_a_loop_is_reported_once_and_explained() -> None:
    rows = with_rows(
        forwards=[(f"a@{D}", f"b@{D}"), (f"b@{D}", f"c@{D}"), (f"c@{D}", f"a@{D}")],
    )
    loops = [f for f in findings(rows) if f.kind == "forward-loop"]
    assert len(loops) == 1
    assert f"a@{D} -> b@{D} -> c@{D} -> a@{D}" in loops[0].message
    assert "5.4.6" in loops[0].message


def test_chains_deeper_than_the_limit() -> None:
    chain = [(f"n{i}@{D}", f"n{i + 1}@{D}") for i in range(5)] + [(f"n5@{D}", f"james@{D}")]
    assert "forward-limit" not in {f.kind for f in findings(with_rows(forwards=chain))}
    limited = findings(with_rows(forwards=chain), expansion=ExpansionSettings(recursion_limit=3))
    assert any(f.kind == "forward-limit" and f.severity is Severity.ERROR for f in limited)


def test_a_catch_all_loop_is_found_through_a_probe_address() -> None:
    rows = with_rows(
        domains=[("c.test", None)],
        transports=[("c.test", "", "smtp:")],
        forwards=[("@c.test", f"back@{D}"), (f"back@{D}", "anyone@c.test")],
    )
    assert any(f.kind == "forward-loop" for f in findings(rows))


def test_routes_are_checked_for_the_configured_role() -> None:
    rows = with_rows(transports=[(D, "maila", "lmtp:unix:/run/lmtp")])
    # As node maila: e.example has no row of maila's, and no gateway fallback.
    as_node = kinds(rows, node_name="maila")
    assert ("error", "no-transport", "e.example") in as_node
    assert ("error", "no-transport", D) not in as_node
    # With the fallback the gateway row for .example applies.
    with_fallback = kinds(rows, node_name="maila", node_fallback_to_gateway=True)
    assert not [k for k in with_fallback if k[1] == "no-transport"]


def test_address_level_transport_rows_count() -> None:
    rows = with_rows(
        domains=[("x.test", None)],
        mailboxes=[("a@x.test", "maila"), ("b@x.test", "maila")],
        transports=[("a@x.test", "", "smtp:[192.0.2.3]")],
    )
    [finding] = [f for f in findings(rows) if f.kind == "no-transport"]
    assert finding.key == "x.test" and "1 mailbox/relay" in finding.message
    assert "b@x.test" in finding.message and "a@x.test" not in finding.message


def test_findings_are_sorted_by_severity_and_counted() -> None:
    rows = with_rows(
        forwards=[(f"x@{D}", f"ghost@{D}")],
        relays=[("x@other.test", "maila")],
    )
    result = findings(rows)
    order = [f.severity for f in result]
    assert order == sorted(order, key=[Severity.ERROR, Severity.WARNING, Severity.INFO].index)
    assert summary(result) == {"error": 1, "warning": 1, "info": 1}


def test_fold_prefers_the_lower_case_variant() -> None:
    data = fold(RawRows(mailboxes=[("A@d.example", "n1"), ("a@d.example", "n2")]))
    assert data.mailboxes == {"a@d.example": "n2"}


def test_a_transport_row_that_names_this_gateway_is_an_error() -> None:
    """The gateway takes mail on 192.0.2.1 port 25 and [2001:db8::1]:2525:
    D's row smtp:[192.0.2.1] sends D's mail back to it (the delivery defers
    it 4.3.5, "loops back to myself"). Other ports (a content filter), LMTP,
    host names (DNS decides) and other nodes' rows are not this gateway's."""
    me = frozenset({own_endpoint("192.0.2.1", 25), own_endpoint("2001:db8::1", 2525)})
    rows = with_rows(
        transports=[
            ("v6.example", "", "smtp:[2001:DB8:0::1]:2525"),
            ("filter.example", "", "smtp:[192.0.2.1]:10025"),
            ("lmtp.example", "", "lmtp:[192.0.2.1]:25"),
            ("named.example", "", "smtp:[mx.d.example]"),
            (D, "maila", "smtp:[192.0.2.1]"),
        ]
    )
    found = {k for k in kinds(rows, myself=me) if k[1] == "transport-to-myself"}
    assert found == {
        ("error", "transport-to-myself", D),
        ("error", "transport-to-myself", "v6.example"),
    }
    [text] = [f.message for f in findings(rows, myself=me) if f.key == D]
    assert "transport d.example (node '') -> smtp:[192.0.2.1] is this gateway" in text
    # Without knowing where it listens (the default), nothing is said.
    assert not {k for k in kinds(rows) if k[1] == "transport-to-myself"}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"relayhost": "[192.0.2.77]"}, "relayhost"),
        ({"relayhost": "[192.0.2.77]:25"}, "relayhost"),
        ({"default_transport": "smtp:[192.0.2.77]:25"}, "default_transport"),
        (
            {"default_transport": "relay:[192.0.2.77]", "relayhost": "[192.0.2.9]"},
            "default_transport",
        ),
        ({"relayhost": "[192.0.2.77]:2525"}, None),  # another port: a content filter
        ({"default_transport": "smtp:[192.0.2.9]", "relayhost": "[192.0.2.77]"}, None),  # unused
        ({"default_transport": "lmtp:", "relayhost": "[192.0.2.77]:25"}, None),  # LMTP
        ({"relayhost": "mx.outside.example"}, None),  # a name: DNS decides at delivery
    ],
)
def test_a_relayhost_or_default_transport_that_names_this_gateway_is_an_error(
    settings: dict[str, str], key: str | None
) -> None:
    me = frozenset({own_endpoint("192.0.2.77", 25)})
    found = [f for f in findings(GOOD, myself=me, **settings) if f.kind == "transport-to-myself"]
    assert [(f.severity.value, f.table, f.key) for f in found] == (
        [("error", "settings", key)] if key else []
    )
