"""``explain=False`` (the SMTP session's call) decides exactly as ``explain=True``.

Without ``explain`` the decision skips the trace and the expansion tree and
takes shortcuts (no walker for a forward whose targets are final at once);
the reply, the deliveries, the deferred and the bounced recipients, reasons
included, must not change. The ``decide`` helper of data.py checks that on
every call of the core tests; here every address of the core tests' tables is
decided under many policies (limits of 0, 1 and 2 included, where the
shortcuts must give way), and random snapshots under random policies.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.core.address import Address, parse_path
from mxgate.core.expand import expand
from mxgate.core.policy import decide_message, decide_recipient
from mxgate.core.routing import RoutingPolicy
from mxgate.core.snapshot import RoutingData
from tests.core.data import INTERNET, POLICY, TRUSTED, outcome, tutorial
from tests.core.test_expand import DATA as EXPAND_DATA
from tests.core.test_policy import DATA as POLICY_DATA
from tests.core.test_properties import CLIENTS, RCPTS, snapshots

TABLES = {"expand": EXPAND_DATA, "policy": POLICY_DATA, "tutorial": tutorial()}

POLICIES = [
    replace(POLICY, virtual_alias_recursion_limit=r, virtual_alias_expansion_limit=e)
    for r in (0, 1, 2, 1000)
    for e in (0, 1, 2, 1000)
] + [
    replace(POLICY, recipient_delimiter=""),
    replace(POLICY, recipient_delimiter="+-"),
    replace(POLICY, postmaster=""),
    replace(POLICY, node_name="maila", node_fallback_to_gateway=True),
    replace(POLICY, default_transport="smtp:", relayhost="[192.0.2.99]:2525"),
]


def recipients(data: RoutingData) -> list[str]:
    """Every address the table names, as rows and as forward targets, with
    extensions and in upper case, plus strangers at each domain."""
    addresses: set[str] = set()
    for key in [*data.mailboxes, *data.relays, *data.forwards]:
        addresses.add(f"someone{key}" if key.startswith("@") else key)
    for rows in data.forwards.values():
        for column in rows:
            addresses.update(t for t in column.replace(",", " ").split() if "@" in t)
    for domain in data.domains:
        addresses.update({f"nobody@{domain}", f"postmaster@{domain}", f"Postmaster@{domain}"})
    out = []
    for address in sorted(addresses):
        local, _, domain = address.rpartition("@")
        out += [address, f"{local}+tag@{domain}", address.upper(), f"{local}-x+y@{domain}"]
    return [*out, "postmaster", "someone@outside.example", "<>", "a%b@server1.example.com"]


def assert_same(data: RoutingData | None, pol: RoutingPolicy, rcpt: str, client: object) -> None:
    args = (data, pol, rcpt, client, "sender@example.net")
    explained = decide_recipient(*args, explain=True)  # type: ignore[arg-type]
    fast = decide_recipient(*args)  # type: ignore[arg-type]
    assert outcome(fast) == outcome(explained), (rcpt, pol)
    assert (fast.trace, fast.expansion) == ((), ())
    assert explained.trace[-1] == f"reply: {explained.reply.line()}"


@pytest.mark.parametrize("name", TABLES)
def test_every_address_of_the_test_tables(name: str) -> None:
    data = TABLES[name]
    rcpts = recipients(data)
    for pol in POLICIES:
        for client in (INTERNET, TRUSTED):
            for rcpt in rcpts:
                assert_same(data, pol, rcpt, client)


POLICY_VARIANTS = st.builds(
    lambda r, e, d, pm: replace(
        POLICY,
        virtual_alias_recursion_limit=r,
        virtual_alias_expansion_limit=e,
        recipient_delimiter=d,
        postmaster=pm,
    ),
    st.integers(0, 3) | st.just(1000),
    st.integers(0, 3) | st.just(1000),
    st.sampled_from(["+", "", "+-"]),
    st.sampled_from(["hostmaster@admin.test", "x@a.test", ""]),
)


@settings(max_examples=400, deadline=None)
@given(snapshots() | st.none(), POLICY_VARIANTS, RCPTS, CLIENTS)
def test_random_snapshots_and_policies(
    data: RoutingData | None, pol: RoutingPolicy, rcpt: str, client: object
) -> None:
    assert_same(data, pol, rcpt, client)


def test_a_message_is_planned_the_same() -> None:
    rcpts = recipients(EXPAND_DATA)
    fast, fast_plan = decide_message(EXPAND_DATA, POLICY, rcpts, INTERNET)
    explained, plan = decide_message(EXPAND_DATA, POLICY, rcpts, INTERNET, explain=True)
    assert fast_plan == plan
    assert [outcome(d) for d in fast] == [outcome(d) for d in explained]
    assert all(d.trace for d in explained) and not any(d.trace for d in fast)


def test_expand_records_steps_only_when_explaining() -> None:
    address = parse_path("<list@corp.example>")
    assert isinstance(address, Address)
    limits = {"delimiter": "+", "postmaster": "", "recursion_limit": 9, "expansion_limit": 9}
    quiet = expand(EXPAND_DATA, address, **limits)  # type: ignore[arg-type]
    told = expand(EXPAND_DATA, address, explain=True, **limits)  # type: ignore[arg-type]
    assert quiet.steps == () and told.steps
    assert (quiet.known, quiet.finals, quiet.failures) == (told.known, told.finals, told.failures)


def test_address_key_is_computed_once_and_is_not_part_of_the_value() -> None:
    address = parse_path("<James+Tag@Server1.Example.COM>")
    assert isinstance(address, Address)
    assert address.key == "james+tag@server1.example.com"
    assert address == Address("James+Tag", "server1.example.com")
    assert "key" not in repr(address)
    lowered = replace(address, local="other")
    assert lowered.key == "other@server1.example.com"
    assert Address("PostMaster", "").key == "postmaster"


def test_trusted_client_relaying_is_the_same_either_way() -> None:
    for client in (TRUSTED, ip_address("::ffff:10.1.2.3"), "10.9.9.9"):
        assert_same(POLICY_DATA, POLICY, "<Someone@Elsewhere.example>", client)
