"""Next-hop resolution against a real (tiny) DNS server on 127.0.0.1, and the
static table resolver."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from mxgate.core.outcome import Bounced, Deferred
from mxgate.core.transport import own_endpoint
from mxgate.delivery import Candidate, DnsResolver, StaticResolver, resolve_nexthop
from mxgate.delivery.nexthop import NameResolver, NoNextHop

from .peers import ZoneServer
from .util import route, run

RECORDS = {
    ("example.test", "MX"): [
        "10 mx1.example.test.",
        "10 mx2.example.test.",
        "20 backup.example.test.",
    ],
    ("mx1.example.test", "A"): ["127.0.0.2"],
    ("mx2.example.test", "A"): ["127.0.0.3"],
    ("mx2.example.test", "AAAA"): ["::1"],
    ("backup.example.test", "A"): ["127.0.0.4"],
    ("implicit.test", "A"): ["127.0.0.5"],
    ("nullmx.test", "MX"): ["0 ."],
    ("mxnowhere.test", "MX"): ["10 ghost.nowhere.test."],
    ("nothing.test", "TXT"): ['"no mail here"'],
    ("relay.test", "A"): ["127.0.0.7"],
    ("halfbroken.test", "MX"): ["10 broken.test.", "20 mx1.example.test."],
    # Mail loops: me.test is this gateway (127.0.0.9 port 25).
    ("me.test", "A"): ["127.0.0.9"],
    ("backup-is-me.test", "MX"): ["10 mx1.example.test.", "20 me.test.", "30 backup.example.test."],
    ("primary-is-me.test", "MX"): ["10 me.test.", "20 mx1.example.test."],
    ("shared-with-me.test", "MX"): ["10 me.test.", "10 mx1.example.test."],
    ("lost-primary.test", "MX"): ["10 ghost.nowhere.test.", "20 me.test."],
    ("implicit-me.test", "A"): ["127.0.0.9"],
}


@pytest.fixture(scope="module")
def zone() -> Iterator[ZoneServer]:
    with ZoneServer(
        RECORDS, servfail=frozenset({"broken.test"}), silent=frozenset({"slow.test"})
    ) as server:
        yield server


@pytest.fixture
def dns(zone: ZoneServer) -> DnsResolver:
    return DnsResolver(["127.0.0.1"], port=zone.port, timeout=0.5)


def resolve(resolver: NameResolver, transport: str, domain: str, seed: int = 1, **kw: object):
    return run(resolve_nexthop(route(transport), domain, resolver, random.Random(seed), **kw))  # type: ignore[arg-type]


def labels(result: list[Candidate] | NoNextHop) -> list[str]:
    assert isinstance(result, list), result
    return [c.label for c in result]


def test_mx_by_preference_then_addresses(dns: DnsResolver) -> None:
    got = labels(resolve(dns, "smtp:", "example.test", preference="ipv4"))
    mx1, mx2 = (
        ["mx1.example.test[127.0.0.2]:25"],
        ["mx2.example.test[127.0.0.3]:25", "mx2.example.test[::1]:25"],
    )
    assert got in (
        mx1 + mx2 + ["backup.example.test[127.0.0.4]:25"],
        mx2 + mx1 + ["backup.example.test[127.0.0.4]:25"],
    )


def test_equal_preferences_are_shuffled_by_the_injected_random(dns: DnsResolver) -> None:
    firsts = {
        labels(resolve(dns, "smtp:", "example.test", seed=s))[0].split("[")[0] for s in range(12)
    }
    assert firsts == {"mx1.example.test", "mx2.example.test"}
    # Same seed, same order: the randomness is an argument, not a global.
    assert resolve(dns, "smtp:", "example.test", seed=7) == resolve(
        dns, "smtp:", "example.test", seed=7
    )


def test_address_preference_ipv6(dns: DnsResolver) -> None:
    got = labels(resolve(dns, "smtp:[mx2.example.test]", "x.test", preference="ipv6"))
    assert got == ["mx2.example.test[::1]:25", "mx2.example.test[127.0.0.3]:25"]


def test_implicit_mx_is_the_domain_itself(dns: DnsResolver) -> None:
    assert labels(resolve(dns, "smtp:", "implicit.test")) == ["implicit.test[127.0.0.5]:25"]


def test_host_port_looks_up_mx_of_the_host(dns: DnsResolver) -> None:
    got = labels(resolve(dns, "smtp:example.test:2525", "other.test", preference="ipv4"))
    assert all(label.endswith(":2525") for label in got) and len(got) == 4


def test_bracketed_host_skips_mx(dns: DnsResolver, zone: ZoneServer) -> None:
    zone.queries.clear()
    assert labels(resolve(dns, "smtp:[relay.test]:2526", "x.test")) == [
        "relay.test[127.0.0.7]:2526"
    ]
    assert ("relay.test", "MX") not in zone.queries


def test_literal_addresses_need_no_dns(zone: ZoneServer) -> None:
    nothing = StaticResolver()
    assert labels(resolve(nothing, "smtp:[127.0.0.1]:2526", "x.test")) == [
        "127.0.0.1[127.0.0.1]:2526"
    ]
    assert labels(resolve(nothing, "lmtp:[::1]:24", "x.test")) == ["::1[::1]:24"]
    assert labels(resolve(nothing, "smtp:", "[127.0.0.9]")) == ["127.0.0.9[127.0.0.9]:25"]
    unix = resolve(nothing, "lmtp:unix:/run/dovecot/lmtp", "x.test")
    assert unix == [Candidate("localhost", unix_path="/run/dovecot/lmtp")]


def test_null_mx_bounces_5_1_10(dns: DnsResolver) -> None:
    got = resolve(dns, "smtp:", "nullmx.test")
    assert isinstance(got, Bounced) and got.reply.enhanced == "5.1.10"


def test_nxdomain_bounces_5_1_2(dns: DnsResolver) -> None:
    got = resolve(dns, "smtp:", "nx.test")
    assert isinstance(got, Bounced) and got.reply.enhanced == "5.1.2"
    assert "name=nx.test type=MX: Host not found" in got.reply.text


def test_the_recipient_domain_filled_in_by_the_routing_core_is_not_a_configured_host(
    dns: DnsResolver,
) -> None:
    """core.routing hands over ``smtp:`` with the recipient domain filled in
    (Route.for_domain): its NXDOMAIN, null MX or loop is the domain's own
    answer and bounces. Before, any route with a host counted as configured
    here, so mail to a domain that does not exist was deferred for days."""
    for domain, enhanced in (("nx.test", "5.1.2"), ("nullmx.test", "5.1.10")):
        filled = route("smtp:").for_domain(domain)
        got = run(resolve_nexthop(filled, domain, dns, random.Random(1)))
        assert isinstance(got, Bounced) and got.reply.enhanced == enhanced, (domain, got)
    # A row that names the recipient domain as its host is still a row: deferred.
    got = run(resolve_nexthop(route("smtp:[nx.test]:2525"), "nx.test", dns, random.Random(1)))
    assert isinstance(got, Deferred) and got.reply.enhanced == "4.3.5", got
    filled = route("smtp:").for_domain("Primary-Is-Me.test")
    got = run(resolve_nexthop(filled, "primary-is-me.test", dns, random.Random(1), myself=ME))
    assert isinstance(got, Bounced) and got.reply.enhanced == "5.4.6", got


def test_servfail_and_timeout_defer_4_4_3(dns: DnsResolver) -> None:
    for domain in ("broken.test", "slow.test"):
        got = resolve(dns, "smtp:", domain)
        assert isinstance(got, Deferred) and got.reply.enhanced == "4.4.3", domain
        assert "try again" in got.reply.text


def test_one_broken_exchanger_does_not_hide_the_others(dns: DnsResolver) -> None:
    assert labels(resolve(dns, "smtp:", "halfbroken.test")) == ["mx1.example.test[127.0.0.2]:25"]


def test_mx_pointing_nowhere_and_no_address_bounce_5_4_4(dns: DnsResolver) -> None:
    for domain in ("mxnowhere.test", "nothing.test"):
        got = resolve(dns, "smtp:", domain)
        assert isinstance(got, Bounced) and got.reply.enhanced == "5.4.4", (domain, got)


def test_a_configured_next_hop_that_does_not_exist_defers(dns: DnsResolver) -> None:
    got = resolve(dns, "smtp:typo.test:25", "example.test")
    assert isinstance(got, Deferred) and got.reply.enhanced == "4.3.5"
    got = resolve(dns, "smtp:[typo.test]", "example.test")
    assert isinstance(got, Deferred) and "configured next hop" in got.reply.text


def test_address_limit(dns: DnsResolver) -> None:
    assert len(labels(resolve(dns, "smtp:", "example.test", limit=2))) == 2


def test_static_resolver() -> None:
    static = StaticResolver(
        mx={"example.test": [(10, "mx.example.test")], "null.test": [(0, ".")]},
        a={"mx.example.test": ["127.0.0.1"], "plain.test": ["127.0.0.2"]},
        failing=["flaky.test"],
    )
    assert labels(resolve(static, "smtp:", "Example.TEST.")) == ["mx.example.test[127.0.0.1]:25"]
    assert labels(resolve(static, "smtp:", "plain.test")) == ["plain.test[127.0.0.2]:25"]
    assert isinstance(resolve(static, "smtp:", "null.test"), Bounced)
    assert isinstance(resolve(static, "smtp:", "flaky.test"), Deferred)
    assert isinstance(resolve(static, "smtp:", "unknown.test"), Bounced)


ME = frozenset({own_endpoint("127.0.0.9", 25), own_endpoint("::1", 2525)})


def test_a_backup_mx_relays_only_to_better_exchangers(dns: DnsResolver) -> None:
    """As smtp(8): exchangers at and below our own preference are dropped."""
    got = labels(resolve(dns, "smtp:", "backup-is-me.test", myself=ME))
    assert got == ["mx1.example.test[127.0.0.2]:25"]
    # Without knowing ourselves (the old behaviour), we were a candidate.
    assert "me.test[127.0.0.9]:25" in labels(resolve(dns, "smtp:", "backup-is-me.test"))


@pytest.mark.parametrize(
    "domain", ["primary-is-me.test", "shared-with-me.test", "implicit-me.test"]
)
def test_mail_whose_best_mx_is_this_gateway_loops_back_to_myself(
    dns: DnsResolver, domain: str
) -> None:
    got = resolve(dns, "smtp:", domain, myself=ME)
    assert isinstance(got, Bounced), got
    assert (got.reply.code, got.reply.enhanced) == (550, "5.4.6")
    assert got.reply.text == f"mail for {domain} loops back to myself"


def test_a_backup_mx_whose_primary_has_no_address_waits_for_it(dns: DnsResolver) -> None:
    got = resolve(dns, "smtp:", "lost-primary.test", myself=ME)
    assert isinstance(got, Deferred) and got.reply.enhanced == "4.4.4", got
    assert "unable to find primary relay for lost-primary.test" in got.reply.text


def test_a_configured_next_hop_that_is_this_gateway_defers(dns: DnsResolver) -> None:
    """A transport row or relayhost naming ourselves is our mistake: the
    mail waits for the fix instead of bouncing (as for a mistyped host)."""
    for transport in ("smtp:[127.0.0.9]", "smtp:[me.test]:25", "smtp:me.test", "smtp:[::1]:2525"):
        got = resolve(dns, transport, "example.test", myself=ME)
        assert isinstance(got, Deferred), (transport, got)
        assert got.reply.enhanced == "4.3.5" and "loops back to myself" in got.reply.text


def test_our_address_on_another_port_or_over_lmtp_is_no_loop(dns: DnsResolver) -> None:
    """A content filter or an LMTP server on this host is another service."""
    assert labels(resolve(dns, "smtp:[127.0.0.9]:10025", "x.test", myself=ME)) == [
        "127.0.0.9[127.0.0.9]:10025"
    ]
    assert labels(resolve(dns, "lmtp:[127.0.0.9]:25", "x.test", myself=ME)) == [
        "127.0.0.9[127.0.0.9]:25"
    ]
    assert labels(resolve(dns, "smtp:[0:0::1]:2526", "x.test", myself=ME)) == ["::1[::1]:2526"]


def test_an_ipv4_mapped_address_is_the_ipv4_address() -> None:
    assert own_endpoint("::ffff:127.0.0.9", 25) == own_endpoint("127.0.0.9", 25)
    got = resolve(StaticResolver(), "smtp:[::ffff:127.0.0.9]:25", "x.test", myself=ME)
    assert isinstance(got, Deferred) and "loops back to myself" in got.reply.text, got
