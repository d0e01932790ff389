"""From a route and a recipient domain to the ordered servers to try.

Owns the next-hop rules of smtp(8)/lmtp(8) (SPEC section 5):
``[host]:port`` is one host, no MX lookup (A/AAAA of the name, or the
literal address); ``host:port`` and an empty nexthop (the recipient domain)
look up MX records, sorted by preference with equal preferences shuffled by
an injected random source (RFC 5321 5.1), then the A/AAAA records of each
exchanger; no MX records means the domain itself (the implicit MX); a null
MX (RFC 7505: one MX, preference 0, exchange ".") bounces with 5.1.10;
``lmtp:unix:/path`` is a UNIX socket. Also the two name resolvers: DNS
through dnspython's async resolver (pointable at any server and port, so
tests serve their own zone) and a static table for tests and development.

Failures are values (``NoNextHop``: a ``core.outcome`` Deferred or Bounced,
worded by ``core.outcome``): NXDOMAIN for the recipient domain bounces
(5.1.2); a name that will not resolve for now (SERVFAIL, timeout) defers
(4.4.3); a domain with neither MX nor address bounces (5.4.4). A
*configured* next hop (a transport row or relayhost naming a host) that
does not exist defers (4.3.5) rather than bounces, as Postfix does with a
mistyped relayhost: a typo in one row must not bounce everyone's mail.

Never connects to anything and never retries: one call, one answer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Literal, Protocol, cast

import dns.asyncresolver
import dns.exception
import dns.resolver

from mxgate.core.outcome import (
    Bounced,
    Deferred,
    dns_not_found,
    dns_temporary_failure,
    loops_back_to_myself,
    no_mail_host,
    null_mx,
)
from mxgate.core.reply import Reply
from mxgate.core.transport import Endpoint, Route, RouteKind, own_endpoint

Family = Literal["A", "AAAA"]
AddressPreference = Literal["any", "ipv4", "ipv6"]
DEFAULT_LOOKUP_TIMEOUT = 10.0
MX_ADDRESS_LIMIT = 5  # Postfix smtp_mx_address_limit


@dataclass(frozen=True, slots=True)
class Candidate:
    """One server to try: host name, address and port, or a UNIX socket."""

    hostname: str
    ip: str = ""
    port: int = 0
    unix_path: str = ""

    @property
    def label(self) -> str:
        """Postfix's relay= notation: ``mx.example.com[192.0.2.1]:25``."""
        if self.unix_path:
            return self.unix_path
        return f"{self.hostname}[{self.ip}]:{self.port}"


NoNextHop = Deferred | Bounced
"""No server to try: the verdict for every recipient of the route."""


class DnsError(Exception):
    """A lookup that failed: ``nxdomain`` (the name does not exist) or not
    (SERVFAIL, timeout, no server answered: try again later)."""

    def __init__(self, name: str, rdtype: str, *, nxdomain: bool) -> None:
        super().__init__(f"{name} {rdtype}: {'NXDOMAIN' if nxdomain else 'temporary failure'}")
        self.name, self.rdtype, self.nxdomain = name, rdtype, nxdomain


class NameResolver(Protocol):
    """What the next-hop rules need from DNS. Both raise ``DnsError``; a name
    that exists without records of the type gives an empty list."""

    async def mx(self, name: str) -> list[tuple[int, str]]: ...

    async def addresses(self, name: str, family: Family) -> list[str]: ...


class DnsResolver:
    """dnspython's async stub resolver. ``nameservers=None`` reads the system
    configuration (/etc/resolv.conf); otherwise those servers on ``port``
    (tests: a server on 127.0.0.1). Every lookup is bounded by ``timeout``."""

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = DEFAULT_LOOKUP_TIMEOUT,
    ) -> None:
        if nameservers is None:
            self._resolver = dns.asyncresolver.Resolver()
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = port
        self._resolver.lifetime = timeout
        self.timeout = timeout

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        try:
            # Absolute name, no search list: "example.com" must never become
            # "example.com.corp.example" (RFC 5321 5.1 resolves domains as is).
            return await asyncio.wait_for(
                self._resolver.resolve(
                    name.rstrip(".") + ".", rdtype, search=False, raise_on_no_answer=False
                ),
                self.timeout,
            )
        except dns.resolver.NXDOMAIN:
            raise DnsError(name, rdtype, nxdomain=True) from None
        except (dns.exception.DNSException, TimeoutError, OSError):
            raise DnsError(name, rdtype, nxdomain=False) from None

    async def mx(self, name: str) -> list[tuple[int, str]]:
        answer = await self._query(name, "MX")
        if answer.rrset is None:
            return []
        return [
            (int(rr.preference), rr.exchange.to_text(omit_final_dot=True) or ".")
            for rr in answer.rrset
        ]

    async def addresses(self, name: str, family: Family) -> list[str]:
        answer = await self._query(name, family)
        if answer.rrset is None:
            return []
        return [str(rr.address) for rr in answer.rrset]


class StaticResolver:
    """Answers from tables (tests, development, air-gapped set-ups). A name
    in none of the tables is NXDOMAIN; a name in none of one table exists
    without records of that type; a name in ``failing`` fails temporarily.
    Names are compared without case and trailing dot."""

    def __init__(
        self,
        mx: Mapping[str, Sequence[tuple[int, str]]] | None = None,
        a: Mapping[str, Sequence[str]] | None = None,
        aaaa: Mapping[str, Sequence[str]] | None = None,
        failing: Sequence[str] = (),
    ) -> None:
        self._mx = {_key(k): list(v) for k, v in (mx or {}).items()}
        self._a = {_key(k): list(v) for k, v in (a or {}).items()}
        self._aaaa = {_key(k): list(v) for k, v in (aaaa or {}).items()}
        self._failing = {_key(k) for k in failing}

    def _check(self, name: str, rdtype: str) -> str:
        key = _key(name)
        if key in self._failing:
            raise DnsError(name, rdtype, nxdomain=False)
        if key not in self._mx and key not in self._a and key not in self._aaaa:
            raise DnsError(name, rdtype, nxdomain=True)
        return key

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return list(self._mx.get(self._check(name, "MX"), []))

    async def addresses(self, name: str, family: Family) -> list[str]:
        table = self._a if family == "A" else self._aaaa
        return list(table.get(self._check(name, family), []))


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _configured(outcome: NoNextHop) -> NoNextHop:
    """A configured next hop that cannot exist is our mistake: defer."""
    return Deferred(Reply(451, "4.3.5", f"{outcome.reply.text} (configured next hop)"))


async def resolve_nexthop(
    route: Route,
    domain: str,
    resolver: NameResolver,
    rng: random.Random,
    *,
    preference: AddressPreference = "any",
    limit: int = MX_ADDRESS_LIMIT,
    myself: frozenset[Endpoint] = frozenset(),
) -> list[Candidate] | NoNextHop:
    """The servers to try for ``route`` (SMTP or LMTP) and a recipient in
    ``domain``, best first, at most ``limit`` addresses.

    ``myself``: where this gateway takes mail (``own_endpoint``). For SMTP,
    as smtp(8) does, mail exchangers at or below the preference of the first
    one that is this gateway are dropped (a backup MX relays to better ones
    only), and when none is left the mail "loops back to myself": 5.4.6, or
    4.4.4 when better exchangers exist but had no address. LMTP next hops are
    never checked (Postfix's lmtp(8) does not either)."""
    if route.unix_path:
        return [Candidate("localhost", unix_path=route.unix_path)]
    # A host named by a transport row or relayhost, not the recipient domain
    # that an empty nexthop stands for (filled in by the routing core, or here).
    route = route.for_domain(domain)
    configured = not route.filled
    host, port = route.host, route.port
    check = bool(myself) and route.kind is RouteKind.SMTP
    try:
        literal = Candidate(host, str(ip_address(host)), port)
    except ValueError:
        pass
    else:
        if check and own_endpoint(literal.ip, port) in myself:
            return _loop(host, configured)
        return [literal]
    exchangers: list[tuple[int, str]] = []
    if route.mx_lookup:
        try:
            records = await resolver.mx(host)
        except DnsError as err:
            if not err.nxdomain:
                return dns_temporary_failure(host, "MX")
            return _configured(dns_not_found(host, "MX")) if configured else dns_not_found(host)
        if len(records) == 1 and records[0][0] == 0 and records[0][1].strip(".") == "":
            return _configured(null_mx(host)) if configured else null_mx(host)
        exchangers = _order(records, rng)
    if not exchangers:  # [host], or RFC 5321 5.1 implicit MX: the name itself
        exchangers = [(0, host)]
    lookups = await asyncio.gather(
        *(_host_addresses(name, resolver, rng, preference) for _pref, name in exchangers)
    )
    candidates: list[tuple[int, Candidate]] = []
    seen: set[str] = set()
    failures: list[DnsError] = []
    for (pref, name), found in zip(exchangers, lookups, strict=True):
        if isinstance(found, DnsError):
            failures.append(found)
            continue
        for ip in found:
            if ip not in seen:
                seen.add(ip)
                candidates.append((pref, Candidate(name, ip, port)))
    if candidates and check:
        mine = next((p for p, c in candidates if own_endpoint(c.ip, port) in myself), None)
        if mine is not None:
            best = candidates[0][0]
            candidates = [(p, c) for p, c in candidates if p < mine]
            if not candidates:
                if best == exchangers[0][0]:
                    return _loop(host, configured)
                # Better exchangers exist but have no address (yet): a
                # backup MX waits for them instead of taking the mail itself.
                return Deferred(Reply(451, "4.4.4", f"unable to find primary relay for {host}"))
    if candidates:
        return [c for _p, c in candidates[:limit]]
    temporary = next((f for f in failures if not f.nxdomain), None)
    if temporary is not None:
        return dns_temporary_failure(temporary.name, temporary.rdtype)
    outcome: NoNextHop
    if not failures:
        outcome = no_mail_host(exchangers[0][1], "A")
    elif exchangers == [(0, host)]:
        outcome = dns_not_found(host, "A")
    else:  # MX records that all point nowhere: RFC 3463 X.4.4, unable to route
        outcome = Bounced(
            Reply(
                550,
                "5.4.4",
                f"Host or domain name not found. Name service error for name={host} "
                "type=MX: no mail exchanger has an address",
            )
        )
    return _configured(outcome) if configured else outcome


def _loop(host: str, configured: bool) -> NoNextHop:
    """The best next hop is this gateway: a loop. From the recipient
    domain's MX records it bounces, as Postfix's; from a transport row or
    relayhost that names us it is our own mistake, deferred like any
    configured next hop that cannot work (``_configured``)."""
    outcome = loops_back_to_myself(host)
    return _configured(outcome) if configured else outcome


def _order(records: Sequence[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Exchangers by preference, equal preferences in random order
    (RFC 5321 5.1); the "." of a null MX among other records is skipped."""
    by_pref: dict[int, list[str]] = {}
    for pref, name in records:
        name = name.rstrip(".").lower()
        if name:
            by_pref.setdefault(pref, []).append(name)
    ordered: list[tuple[int, str]] = []
    for pref in sorted(by_pref):
        group = sorted(set(by_pref[pref]))
        rng.shuffle(group)
        ordered.extend((pref, name) for name in group)
    return ordered


async def _host_addresses(
    name: str, resolver: NameResolver, rng: random.Random, preference: AddressPreference
) -> list[str] | DnsError:
    """IPv4 and IPv6 addresses of one host, families ordered by
    ``preference`` ("any": a random family first, as Postfix's
    smtp_address_preference). NXDOMAIN only when both lookups say so."""
    # gather() returns a list, though typed as a tuple: compiled code checks.
    results: list[Any] = await cast(
        Any,
        asyncio.gather(
            resolver.addresses(name, "A"), resolver.addresses(name, "AAAA"), return_exceptions=True
        ),
    )
    v4, v6 = results
    found: dict[str, list[str]] = {}
    errors: list[DnsError] = []
    for family, result in (("A", v4), ("AAAA", v6)):
        if isinstance(result, DnsError):
            errors.append(result)
        elif isinstance(result, BaseException):
            raise result
        else:
            found[family] = result
    if not found:
        return next((e for e in errors if not e.nxdomain), errors[0])
    if not any(found.values()) and any(not e.nxdomain for e in errors):
        return next(e for e in errors if not e.nxdomain)
    first_v6 = preference == "ipv6" or (preference == "any" and rng.random() < 0.5)
    order = ("AAAA", "A") if first_v6 else ("A", "AAAA")
    return [ip for family in order for ip in found.get(family, [])]
