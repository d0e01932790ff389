"""Every route type, end to end: the real ``mxgate serve`` in front, real
SMTP/LMTP servers behind it, a DNS server for the MX records, all on loopback.

One database of this module's own holds a domain per route type (each with a
relay catch-all, so every address of it is known), and the gateway of the
module relays to one ``ThreadedPeer`` per route: ``smtp:[127.0.0.1]:port``,
``smtp:mx.test:port`` (MX lookup), ``smtp:`` (MX of the recipient domain, and
the implicit MX: port 25 of a loopback address of its own), ``relay:``,
``lmtp:`` over TCP and over a UNIX socket; ``error:``, ``discard:`` and
``retry:`` rows; the relayhost (the "internet", where forwards to outside
addresses and bounces to outside senders go). The ``ZoneServer`` answers the
gateway's DNS queries on 127.0.0.1: no test lets a gateway near the system
resolver.

The peers answer by address (``RecipientRule``): local parts starting with
``reject`` get 550, ``defer`` 451. Tests share the gateway and the peers, so
each one uses addresses and Message-IDs of its own and looks only at those.

Also ``smtp:[host name]`` (address lookup, no MX) and ``smtp:[::1]`` (when
there is an IPv6 loopback); the 50-recipient split; a next hop that is down and
comes back; DSNs read with Python's email parser (failures, RET, ENVID, ORCPT,
NOTIFY=NEVER, the null sender's failures to the postmaster, and the "relayed"
notice for NOTIFY=SUCCESS through a next hop without DSN); kill -9 during
delivery; the queue commands on a running gateway; a node-role gateway; and
the hop-count limit.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import EmailMessage, Message
from pathlib import Path

import asyncpg
import pytest

from mxgate.directory.migrate import migrate
from tests.delivery.peers import PeerScript, ZoneServer, always
from tests.e2e.gateway import (
    HOSTNAME,
    INSIDE,
    OUTSIDE,
    Gateway,
    SettingValue,
    blackhole_port,
    queue_cli,
    split_received,
    wait_until,
)
from tests.e2e.peers import Arrived, ClosedPort, RecipientRule, ThreadedPeer
from tests.pg import PgServer

POSTMASTER = "pm@bracket.test"
PROXY = "127.0.0.77"  # where a (pretend) NAT passes port 25 to the gateway
NO_DSN = ("PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES")
SENDER = "sender@elsewhere.example"  # outside our domains: its mail leaves by the relayhost
FAST_RETRIES: dict[str, SettingValue] = {
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "queue_run_delay": "1s",
}


# -- the next hops ------------------------------------------------------------------


def ipv6_peer(rule: RecipientRule) -> ThreadedPeer | None:
    """A peer on ::1, None when this machine has no IPv6 loopback."""
    try:
        return ThreadedPeer(PeerScript(greeting="220 v6 ESMTP", rcpt=rule), host="::1")
    except OSError:
        return None


def port25_peer(rule: RecipientRule) -> ThreadedPeer | None:
    """A peer on port 25 of a loopback address of its own (an MX host, as
    ``smtp:`` with an empty nexthop connects to port 25); None when this
    process may not listen there (not root, or taken)."""
    rng = random.Random()
    for _ in range(5):
        host = f"127.{rng.randrange(100, 250)}.{rng.randrange(1, 250)}.{rng.randrange(1, 250)}"
        try:
            return ThreadedPeer(PeerScript(greeting="220 mx1 ESMTP", rcpt=rule), host=host, port=25)
        except PermissionError:
            return None
        except OSError:
            continue
    return None


@dataclass
class Hops:
    """Every next hop of the module's database, and the DNS server."""

    smtp: ThreadedPeer  # smtp:[127.0.0.1]:port
    mx: ThreadedPeer  # smtp:mx.test:port
    relay: ThreadedPeer  # relay:[127.0.0.1]:port
    lmtp: ThreadedPeer  # lmtp:[127.0.0.1]:port
    lmtp_unix: ThreadedPeer  # lmtp:unix:/path
    node_lmtp: ThreadedPeer  # lmtp:[127.0.0.1]:port, node 'maila' rows
    slow: ThreadedPeer  # smtp:[127.0.0.1]:port, the kill -9 test
    internet: ThreadedPeer  # relayhost
    port25: ThreadedPeer | None  # smtp: (MX or A of the recipient domain)
    ipv6: ThreadedPeer | None  # smtp:[::1]:port
    flaky: ClosedPort  # smtp:[127.0.0.1]:port, nothing listening until a test starts it
    rule: RecipientRule  # how the SMTP peers answer RCPT and the LMTP ones the dot
    zone: ZoneServer
    unix_path: Path

    def all_peers(self) -> list[ThreadedPeer]:
        peers = [
            self.smtp,
            self.mx,
            self.relay,
            self.lmtp,
            self.lmtp_unix,
            self.node_lmtp,
            self.slow,
            self.internet,
        ]
        return peers + [peer for peer in (self.port25, self.ipv6) if peer is not None]


def lmtp_script(greeting: str, rule: RecipientRule) -> PeerScript:
    # Every recipient accepted at RCPT: the verdict comes after the dot, one per
    # recipient (RFC 2033 4.2).
    return PeerScript(
        lmtp=True, greeting=greeting, rcpt=always("250 2.1.5 Ok"), lmtp_dot=rule.at_dot
    )


@pytest.fixture(scope="module")
def hops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hops]:
    rule = RecipientRule()
    unix_path = tmp_path_factory.mktemp("lmtp") / "lmtp.sock"
    started: list[ThreadedPeer] = []

    def peer(script: PeerScript, unix: Path | None = None) -> ThreadedPeer:
        started.append(ThreadedPeer(script, unix_path=str(unix) if unix else None))
        return started[-1]

    flaky = ClosedPort()
    try:
        smtp = peer(PeerScript(greeting="220 bracket.test ESMTP", rcpt=rule))
        mx = peer(PeerScript(greeting="220 mail.mx.test ESMTP", rcpt=rule))
        # A next hop that does not offer DSN (for the "relayed" notification).
        relay = peer(PeerScript(greeting="220 relay ESMTP", rcpt=rule, extensions=NO_DSN))
        lmtp = peer(lmtp_script("220 lmtp.test LMTP", rule))
        lmtp_unix = peer(lmtp_script("220 unix LMTP", rule), unix_path)
        node_lmtp = peer(lmtp_script("220 maila LMTP", rule))
        slow = peer(PeerScript(greeting="220 slow ESMTP", rcpt=rule))
        internet = peer(PeerScript(greeting="220 internet ESMTP", rcpt=rule))
        port25, ipv6 = port25_peer(rule), ipv6_peer(rule)
        started.extend(peer for peer in (port25, ipv6) if peer is not None)
        records: dict[tuple[str, str], list[str]] = {
            ("mx.test", "MX"): ["10 mail.mx.test."],
            ("mail.mx.test", "A"): [INSIDE],
            # The best MX is this gateway, reached through a proxy (proxy_interfaces).
            ("loop.test", "MX"): ["10 mx.loop.test."],
            ("mx.loop.test", "A"): [PROXY],
        }
        if port25 is not None:
            records[("mxrelay.test", "MX")] = ["10 mx1.mxrelay.test."]
            records[("mx1.mxrelay.test", "A")] = [port25.host]
            records[("implicit.test", "A")] = [port25.host]  # no MX: the implicit MX
        with ZoneServer(records) as zone:
            yield Hops(
                smtp=smtp,
                mx=mx,
                relay=relay,
                lmtp=lmtp,
                lmtp_unix=lmtp_unix,
                node_lmtp=node_lmtp,
                slow=slow,
                internet=internet,
                port25=port25,
                ipv6=ipv6,
                flaky=flaky,
                rule=rule,
                zone=zone,
                unix_path=unix_path,
            )
    finally:
        for each in started:
            each.close()
        flaky.release()


def transports(hops: Hops) -> list[tuple[str, str, str]]:
    """(domain, transport, node) of every route of the module."""
    return [
        ("bracket.test", f"smtp:[{INSIDE}]:{hops.smtp.port}", ""),
        ("mxhost.test", f"smtp:mx.test:{hops.mx.port}", ""),
        ("bracketname.test", f"smtp:[mail.mx.test]:{hops.mx.port}", ""),
        ("ipv6.test", f"smtp:[::1]:{hops.ipv6.port if hops.ipv6 else blackhole_port()}", ""),
        ("mxrelay.test", "smtp:", ""),
        ("implicit.test", "smtp:", ""),
        ("loop.test", "smtp:", ""),
        ("relaykind.test", f"relay:[{INSIDE}]:{hops.relay.port}", ""),
        ("lmtp.test", f"lmtp:[{INSIDE}]:{hops.lmtp.port}", ""),
        ("unix.test", f"lmtp:unix:{hops.unix_path}", ""),
        ("error.test", "error:5.7.1 go away", ""),
        ("discard.test", "discard:", ""),
        ("retry.test", "retry:4.3.2 later", ""),
        ("flaky.test", f"smtp:[{INSIDE}]:{hops.flaky.port}", ""),
        ("slow.test", f"smtp:[{INSIDE}]:{hops.slow.port}", ""),
        # The node role (node_name = "maila") uses these rows, the gateway never.
        ("bracket.test", f"lmtp:[{INSIDE}]:{hops.node_lmtp.port}", "maila"),
        # A gateway row that would reach nothing, in case a node took it.
        ("nodeless.test", f"smtp:[{INSIDE}]:{blackhole_port()}", ""),
    ]


FORWARDS = [
    ("mixed@bracket.test", "mixed-ok@bracket.test, mixed-err@error.test"),
    ("out@bracket.test", "Someone@Elsewhere.example"),
]


async def _fill(dsn: str, hops: Hops) -> None:
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        rows = transports(hops)
        domains = sorted({domain for domain, _t, _n in rows})
        await conn.executemany(
            "INSERT INTO domain (domain, node, comment) VALUES ($1, 'maila', 'routes')",
            [(d,) for d in domains],
        )
        await conn.executemany(
            "INSERT INTO relay (source, node, comment) VALUES ($1, 'maila', 'routes')",
            [(f"@{d}",) for d in domains],
        )
        await conn.executemany(
            "INSERT INTO transport (domain, transport, node, comment) "
            "VALUES ($1, $2, $3, 'routes')",
            rows,
        )
        await conn.executemany(
            "INSERT INTO forward (source, destination, comment) VALUES ($1, $2, 'routes')",
            FORWARDS,
        )
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def routes_database(pg_server: PgServer, hops: Hops) -> Iterator[str]:
    dsn = pg_server.create_database()
    try:
        asyncio.run(_fill(dsn, hops))
        yield dsn
    finally:
        pg_server.drop_database(dsn)


def make_gateway(root: Path, dsn: str, hops: Hops, **settings: SettingValue) -> Gateway:
    """A gateway (not started) on ``dsn``: DNS from the zone server, the
    internet peer as relayhost, fast retries."""
    gw = Gateway(
        root,
        dsn,
        relayhost=f"[{INSIDE}]:{hops.internet.port}",
        dns_nameservers=[f"{INSIDE}:{hops.zone.port}"],
        postmaster=POSTMASTER,
        proxy_interfaces=[PROXY],
    )
    gw.write_config(**FAST_RETRIES, **settings)
    return gw


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, routes_database: str, hops: Hops
) -> Iterator[Gateway]:
    gw = make_gateway(tmp_path_factory.mktemp("routes"), routes_database, hops)
    try:
        gw.start()
        yield gw
        gw.stop()
    finally:
        gw.close()


# -- sending and looking -------------------------------------------------------------


def message(message_id: str, subject: str = "route test", body: str = "Hello.") -> bytes:
    return (
        f"From: <{SENDER}>\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n\r\n{body}\r\n"
    ).encode()


def send(
    gateway: Gateway,
    recipients: Sequence[str],
    data: bytes,
    *,
    sender: str = SENDER,
    source: str = OUTSIDE,
    mail_options: Sequence[str] = (),
    rcpt_options: dict[str, Sequence[str]] | None = None,
) -> str:
    """One accepted transaction; its queue id."""
    with gateway.smtp(source) as client:
        client.ehlo("client.example.org")
        code, text = client.mail(sender, list(mail_options))
        assert code == 250, (code, text)
        for recipient in recipients:
            options = list((rcpt_options or {}).get(recipient, ()))
            code, text = client.rcpt(recipient, options)
            assert code == 250, (recipient, code, text)
        code, text = client.data(data)
    assert code == 250, (code, text)
    return text.decode().rsplit(" ", 1)[-1]


def rcpt_reply(gateway: Gateway, recipient: str) -> tuple[int, str]:
    """The reply to RCPT TO:<recipient> from a client of the internet."""
    with gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.example.org")
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt(recipient)
        client.rset()
    return code, text.decode()


def assert_arrived(arrived: Arrived, sender: str, recipients: list[str], sent: bytes) -> None:
    """The envelope as sent, and the body: our Received: header, then the bytes sent."""
    assert arrived.sender == sender
    assert arrived.rcpts == recipients
    received, rest = split_received(arrived.data)
    assert rest == sent
    assert received["ip"] == OUTSIDE.encode()


def dsns(peer: ThreadedPeer, about: str) -> list[Arrived]:
    """Notifications (from <>) at ``peer`` that quote the Message-ID ``about``."""
    return [a for a in peer.arrivals() if a.sender == "" and about.encode() in a.data]


def wait_dsn(peer: ThreadedPeer, about: str, timeout: float = 20.0) -> Arrived:
    wait_until(lambda: bool(dsns(peer, about)), timeout)
    [dsn] = dsns(peer, about)
    return dsn


def parse(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def report_blocks(dsn: EmailMessage) -> tuple[Message, list[Message]]:
    """The per-message fields and the per-recipient blocks of a delivery report."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    status = [p for p in dsn.iter_parts() if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1, [p.get_content_type() for p in dsn.iter_parts()]
    payload = status[0].get_payload()
    assert isinstance(payload, list)
    blocks = [block for block in payload if isinstance(block, Message)]
    assert len(blocks) == len(payload) >= 2, payload
    return blocks[0], blocks[1:]


def block_for(blocks: list[Message], address: str) -> Message:
    found = [b for b in blocks if str(b["Final-Recipient"]).endswith(f"; {address}")]
    assert len(found) == 1, [str(b) for b in blocks]
    return found[0]


def unique_id(name: str) -> str:
    return f"<{name}.{time.monotonic_ns()}@client.example.org>"


# -- one test per route type -----------------------------------------------------------


ROUTES = [
    # (domain, peer of Hops, what the log's relay= says)
    ("bracket.test", "smtp", "{ip}[{ip}]:{port}"),
    ("mxhost.test", "mx", "mail.mx.test[{ip}]:{port}"),
    ("bracketname.test", "mx", "mail.mx.test[{ip}]:{port}"),
    ("ipv6.test", "ipv6", "::1[::1]:{port}"),
    ("mxrelay.test", "port25", "mx1.mxrelay.test[{ip}]:25"),
    ("implicit.test", "port25", "implicit.test[{ip}]:25"),
    ("relaykind.test", "relay", "{ip}[{ip}]:{port}"),
    ("lmtp.test", "lmtp", "{ip}[{ip}]:{port}"),
    ("unix.test", "lmtp_unix", "localhost[{path}]"),
]


@pytest.mark.parametrize(("domain", "hop", "relay"), ROUTES, ids=[r[0] for r in ROUTES])
def test_each_route_reaches_its_next_hop_with_the_envelope(
    gateway: Gateway, hops: Hops, domain: str, hop: str, relay: str
) -> None:
    peer = getattr(hops, hop)
    if peer is None:
        pytest.skip(f"no {hop} peer: no IPv6 loopback, or port 25 not ours to listen on")
    assert isinstance(peer, ThreadedPeer)
    mark = gateway.log_size()
    mid = unique_id(domain)
    sent = message(mid, subject=f"via {domain}")
    recipients = [f"one@{domain}", f"two@{domain}"]
    qid = send(gateway, recipients, sent)
    [arrived] = peer.wait_for(mid)
    assert_arrived(arrived, SENDER, recipients, sent)
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    where = relay.format(ip=peer.host, port=peer.port, path=hops.unix_path)
    lines = [line for line in gateway.log(mark).splitlines() if f"{qid}: to=<" in line]
    assert len(lines) == 2, lines
    for recipient, line in zip(recipients, sorted(lines), strict=True):
        assert f"{qid}: to=<{recipient}>, relay={where}, delay=" in line, line
        assert "dsn=2.0.0, status=sent (" in line, line
    if hop == "lmtp" or hop == "lmtp_unix":
        assert any(line.startswith("LHLO ") for line in peer.commands())
    if domain == "mxhost.test":
        assert ("mx.test", "MX") in hops.zone.queries
        assert ("mail.mx.test", "A") in hops.zone.queries
    if domain == "bracketname.test":  # [host]: its address, no MX lookup
        assert ("mail.mx.test", "MX") not in hops.zone.queries
    if domain == "mxrelay.test":
        assert ("mxrelay.test", "MX") in hops.zone.queries
    if domain == "implicit.test":
        assert ("implicit.test", "MX") in hops.zone.queries
        assert ("implicit.test", "A") in hops.zone.queries


def test_lmtp_replies_per_recipient_one_refused_one_delivered(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    mid = unique_id("lmtp-split")
    sent = message(mid)
    qid = send(gateway, ["fine@lmtp.test", "reject-lmtp@lmtp.test"], sent)
    [arrived] = hops.lmtp.wait_for(mid)
    # Both accepted at RCPT; the verdicts came one per recipient after the dot.
    assert arrived.rcpts == ["fine@lmtp.test", "reject-lmtp@lmtp.test"]
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    lines = gateway.log(mark).splitlines()
    [sent_line] = [line for line in lines if f"{qid}: to=<fine@lmtp.test>" in line]
    [bounced_line] = [line for line in lines if f"{qid}: to=<reject-lmtp@lmtp.test>" in line]
    assert "status=sent" in sent_line and "status=bounced" in bounced_line
    dsn = parse(wait_dsn(hops.internet, mid).data)
    _head, blocks = report_blocks(dsn)
    assert [str(b["Final-Recipient"]) for b in blocks] == ["rfc822; reject-lmtp@lmtp.test"]
    assert str(blocks[0]["Diagnostic-Code"]).startswith("smtp; 550 5.1.1 ")


def test_error_route_alone_is_refused_at_rcpt(gateway: Gateway) -> None:
    code, text = rcpt_reply(gateway, "anyone@error.test")
    assert (code, text) == (550, "5.7.1 <anyone@error.test>: Recipient address rejected: go away")


def test_error_route_in_an_expansion_is_bounced(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    mid = unique_id("mixed")
    qid = send(gateway, ["mixed@bracket.test"], message(mid))
    [arrived] = hops.smtp.wait_for(mid)
    assert arrived.rcpts == ["mixed-ok@bracket.test"]
    dsn = parse(wait_dsn(hops.internet, mid).data)
    _head, [block] = report_blocks(dsn)
    assert str(block["Final-Recipient"]) == "rfc822; mixed-err@error.test"
    assert str(block["Action"]) == "failed" and str(block["Status"]) == "5.7.1"
    [text] = [p for p in dsn.iter_parts() if p.get_content_type() == "text/plain"]
    assert "<mixed-err@error.test> (expanded from <mixed@bracket.test>): go away" in (
        " ".join(text.get_content().split())
    )
    gateway.wait_for_log(rf"{qid}: removed", since=mark)


def test_discard_route_accepts_logs_and_delivers_nothing(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    mid = unique_id("discard")
    qid = send(gateway, ["gone@discard.test"], message(mid))
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    line = gateway.wait_for_log(rf"^.*{qid}: to=<gone@discard\.test>.*$", since=mark)[0]
    assert "status=sent" in line and "discard" in line, line
    for peer in hops.all_peers():
        assert not peer.with_id(mid)


def test_retry_route_alone_is_deferred_at_rcpt(gateway: Gateway) -> None:
    code, text = rcpt_reply(gateway, "later@retry.test")
    assert code == 451, text
    assert text.startswith("4.") and "retry: 4.3.2 later" in text, text


def test_outside_targets_leave_by_the_relayhost(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    # A forward to an outside address, from a client of the internet...
    mid = unique_id("forward-out")
    sent = message(mid)
    qid = send(gateway, ["out@bracket.test"], sent)
    [arrived] = hops.internet.wait_for(mid)
    # The local part as the forward row wrote it; the domain in lower case.
    # The sender rewritten by SRS (tests/e2e/test_srs.py), since it is a forward.
    assert arrived.sender.startswith("SRS0=")
    assert arrived.sender.endswith(f"=elsewhere.example=sender@{HOSTNAME}")
    assert_arrived(arrived, arrived.sender, ["Someone@elsewhere.example"], sent)
    gateway.wait_for_log(
        rf"{qid}: to=<Someone@elsewhere\.example>, orig_to=<out@bracket\.test>, "
        rf"relay={INSIDE}\[{INSIDE}\]:{hops.internet.port}, .*status=sent",
        since=mark,
    )
    # ... and relaying for mynetworks.
    mid = unique_id("relayed")
    sent = message(mid)
    send(gateway, ["someone@faraway.example"], sent, source=INSIDE)
    [arrived] = hops.internet.wait_for(mid)
    assert arrived.rcpts == ["someone@faraway.example"]
    assert split_received(arrived.data)[1] == sent


def test_60_recipients_for_one_next_hop_go_as_50_plus_10(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    mid = unique_id("sixty")
    sent = message(mid)
    recipients = [f"r{n:02}@bracket.test" for n in range(60)]
    qid = send(gateway, recipients, sent)
    hops.smtp.wait_for(mid, count=2)
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    transactions = hops.smtp.with_id(mid)  # all of them, now that it is done
    assert [len(t.rcpts) for t in transactions] == [50, 10]
    assert transactions[0].rcpts + transactions[1].rcpts == recipients
    for each in transactions:
        assert_arrived(each, SENDER, each.rcpts, sent)


# -- a next hop that is down, then back ------------------------------------------------


def test_next_hop_down_then_back_gets_every_message_once(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    ids = {unique_id(f"flaky{n}"): f"f{n}@flaky.test" for n in range(3)}
    qids = {send(gateway, [rcpt], message(mid)): mid for mid, rcpt in ids.items()}
    for qid in qids:
        gateway.wait_for_log(rf"{qid}: to=<f\d@flaky\.test>.*status=deferred", since=mark)
    listing = queue_cli(gateway, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    entries = {e["id"]: e for e in json.loads(listing.stdout) if e["id"] in qids}
    assert set(entries) == set(qids)
    for entry in entries.values():
        assert "Connection refused" in entry["reason"], entry
        assert entry["recipients"][0]["state"] == "deferred"
    hops.flaky.release()
    peer = ThreadedPeer(PeerScript(greeting="220 back ESMTP"), port=hops.flaky.port)
    try:
        # No flush: the queue manager's own retries find the next hop back.
        for qid in qids:
            gateway.wait_for_log(rf"{qid}: removed", since=mark)
        arrived = Counter(a.message_id for a in peer.arrivals())
        assert arrived == Counter(set(qids.values())), arrived
        assert set(gateway.messages()).isdisjoint(qids)
    finally:
        peer.close()


# -- DSNs --------------------------------------------------------------------------------


def test_permanent_failure_produces_a_delivery_status_notification(
    gateway: Gateway, hops: Hops
) -> None:
    mark = gateway.log_size()
    mid = unique_id("dsn")
    sent = message(mid, subject="will bounce", body="BODY-TEXT-NOT-RETURNED")
    qid = send(
        gateway,
        ["reject-orcpt@bracket.test", "reject-plain@bracket.test", "ok-dsn@bracket.test"],
        sent,
        mail_options=["RET=HDRS", "ENVID=env-routes-1"],
        rcpt_options={
            "reject-orcpt@bracket.test": [
                "NOTIFY=FAILURE",
                "ORCPT=rfc822;Reject-Orcpt@bracket.test",
            ]
        },
    )
    arrival = wait_dsn(hops.internet, mid)
    # To the sender, at the sender's next hop (the relayhost), from the null sender.
    assert arrival.sender == "" and arrival.rcpts == [SENDER]
    dsn = parse(arrival.data)
    assert [a.addr_spec for a in dsn["To"].addresses] == [SENDER]
    assert [a.addr_spec for a in dsn["From"].addresses] == [f"MAILER-DAEMON@{HOSTNAME}"]
    head, blocks = report_blocks(dsn)
    assert str(head["Original-Envelope-Id"]) == "env-routes-1"
    assert str(head["Reporting-MTA"]) == f"dns; {HOSTNAME}"
    assert len(blocks) == 2  # one report, every failed recipient; not the delivered one
    with_orcpt = block_for(blocks, "reject-orcpt@bracket.test")
    assert str(with_orcpt["Original-Recipient"]) == "rfc822;Reject-Orcpt@bracket.test"
    plain = block_for(blocks, "reject-plain@bracket.test")
    assert plain["Original-Recipient"] is None
    for block, address in ((with_orcpt, "reject-orcpt"), (plain, "reject-plain")):
        assert str(block["Final-Recipient"]) == f"rfc822; {address}@bracket.test"
        assert str(block["Action"]) == "failed"
        assert str(block["Status"]) == "5.1.1"
        assert str(block["Remote-MTA"]) == f"dns; {INSIDE}"
        assert str(block["Diagnostic-Code"]) == (
            f"smtp; 550 5.1.1 <{address}@bracket.test>: no such user here"
        )
    # RET=HDRS: the headers come back, the body does not.
    [returned] = [p for p in dsn.iter_parts() if p.get_content_type() == "text/rfc822-headers"]
    headers = returned.get_content()
    assert f"Message-ID: {mid}" in headers and "Subject: will bounce" in headers
    assert b"BODY-TEXT-NOT-RETURNED" not in arrival.data
    # The delivered recipient went on with the DSN parameters (the peer offers DSN).
    [delivered] = hops.smtp.wait_for(mid)
    assert delivered.rcpts == ["ok-dsn@bracket.test"]
    assert "RET=HDRS" in delivered.mail_from and "ENVID=env-routes-1" in delivered.mail_from
    [rcpt_line] = [c for c in hops.smtp.commands() if c.startswith("RCPT TO:<ok-dsn@")]
    assert "ORCPT=rfc822;ok-dsn@bracket.test" in rcpt_line
    gateway.wait_for_log(rf"{qid}: removed", since=mark)


def test_mail_whose_best_mx_is_this_gateway_bounces_as_a_loop(gateway: Gateway, hops: Hops) -> None:
    """loop.test's only MX is this gateway (its proxy address): the mail
    bounces at once with 5.4.6 "loops back to myself", as Postfix's smtp(8)
    says. Before, the gateway connected to itself (through the proxy in real
    life, here a dead address: deferred for days) and the mail went round
    until the hop limit."""
    mark = gateway.log_size()
    mid = unique_id("loop")
    qid = send(gateway, ["someone@loop.test"], message(mid))
    block = block_for(
        report_blocks(parse(wait_dsn(hops.internet, mid).data))[1], "someone@loop.test"
    )
    assert str(block["Status"]) == "5.4.6"
    assert "mail for loop.test loops back to myself" in str(block["Diagnostic-Code"])
    gateway.wait_for_log(
        rf"{qid}: to=<someone@loop.test>, relay=none, .*dsn=5\.4\.6, status=bounced "
        r"\(5\.4\.6 mail for loop\.test loops back to myself\)",
        since=mark,
    )


def test_an_smtputf8_client_may_send_orcpt_in_utf8(gateway: Gateway, hops: Hops) -> None:
    """RFC 6533 3: in an SMTPUTF8 transaction ORCPT=utf-8; may carry the
    address as UTF-8. It is accepted (it was a 501) and goes on to the next
    hop in the ASCII form, \\x{HEX} for each non-ASCII character."""
    mid = unique_id("orcpt-utf8")
    send(
        gateway,
        ["ok-dsn@bracket.test"],
        message(mid),
        mail_options=["SMTPUTF8"],
        rcpt_options={"ok-dsn@bracket.test": ["ORCPT=utf-8;J\u00f6rg+2Bnews@b\u00fccher.test"]},
    )
    hops.smtp.wait_for(mid)
    lines = [c for c in hops.smtp.commands() if "J\\x{F6}rg" in c]
    orcpt = "ORCPT=utf-8;J\\x{F6}rg\\x{2B}news@b\\x{FC}cher.test"
    assert lines == [f"RCPT TO:<ok-dsn@bracket.test> {orcpt}"]


def test_full_return_by_default(gateway: Gateway, hops: Hops) -> None:
    mid = unique_id("dsn-full")
    sent = message(mid, body="THE-WHOLE-BODY")
    send(gateway, ["reject-full@bracket.test"], sent)
    dsn = parse(wait_dsn(hops.internet, mid).data)
    [original] = [p for p in dsn.iter_parts() if p.get_content_type() == "message/rfc822"]
    inner = original.get_content()
    assert str(inner["Message-ID"]) == mid
    assert "THE-WHOLE-BODY" in inner.get_content()


def test_notify_success_through_a_next_hop_without_dsn_is_reported_relayed(
    gateway: Gateway, hops: Hops
) -> None:
    """RFC 3461 5.2.2: NOTIFY=SUCCESS and a next hop that cannot carry it on:
    a "relayed" notification to the sender."""
    mark = gateway.log_size()
    mid = unique_id("relayed-dsn")
    qid = send(
        gateway,
        ["success@relaykind.test"],
        message(mid),
        mail_options=["ENVID=env-relayed"],
        rcpt_options={"success@relaykind.test": ["NOTIFY=SUCCESS,FAILURE"]},
    )
    [arrived] = hops.relay.wait_for(mid)
    assert "ENVID" not in arrived.mail_from  # no DSN parameters to it
    [rcpt_line] = [c for c in hops.relay.commands() if c.startswith("RCPT TO:<success@")]
    assert rcpt_line == "RCPT TO:<success@relaykind.test>"
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    dsn = parse(wait_dsn(hops.internet, mid).data)
    head, [block] = report_blocks(dsn)
    assert str(head["Original-Envelope-Id"]) == "env-relayed"
    assert str(block["Final-Recipient"]) == "rfc822; success@relaykind.test"
    assert str(block["Action"]) == "relayed"
    assert str(block["Status"]).startswith("2.")


def test_notify_never_sends_no_dsn(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    mid = unique_id("never")
    qid = send(
        gateway,
        ["reject-never@bracket.test"],
        message(mid),
        rcpt_options={"reject-never@bracket.test": ["NOTIFY=NEVER"]},
    )
    gateway.wait_for_log(rf"{qid}: to=<reject-never@bracket\.test>.*status=bounced", since=mark)
    # The DSN would be queued before the message is removed: after the
    # removal, its absence is final.
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    assert f"{qid}: sender non-delivery notification" not in gateway.log(mark)
    for peer in hops.all_peers():
        assert not dsns(peer, mid)


def test_failure_of_a_null_sender_message_goes_to_the_postmaster(
    gateway: Gateway, hops: Hops
) -> None:
    mark = gateway.log_size()
    mid = unique_id("null-sender")
    qid = send(gateway, ["reject-null@bracket.test"], message(mid), sender="")
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    arrival = wait_dsn(hops.smtp, mid)  # pm@bracket.test is routed to the smtp peer
    assert arrival.sender == "" and arrival.rcpts == [POSTMASTER]
    dsn = parse(arrival.data)
    _head, [block] = report_blocks(dsn)
    assert str(block["Final-Recipient"]) == "rfc822; reject-null@bracket.test"
    assert str(block["Action"]) == "failed"
    assert not dsns(hops.internet, mid)


# -- kill -9 during delivery -------------------------------------------------------------


def test_kill_9_during_delivery_loses_nothing(
    tmp_path: Path, routes_database: str, hops: Hops
) -> None:
    count, concurrency = 12, 2
    gw = make_gateway(
        tmp_path / "killed",
        routes_database,
        hops,
        default_destination_concurrency_limit=concurrency,
    )
    slow = hops.slow
    slow.set(dot_delay=0.5)  # each transaction waits half a second for its 250

    def answered() -> int:
        return len(slow.arrivals()) - slow.waiting_at_dot()

    try:
        gw.start()
        acked: dict[str, str] = {}  # queue id -> Message-ID
        with gw.smtp(OUTSIDE) as client:
            client.ehlo("client.example.org")
            for n in range(count):
                mid = unique_id(f"kill{n}")
                assert client.mail(SENDER)[0] == 250
                assert client.rcpt(f"k{n}@slow.test")[0] == 250
                code, text = client.data(message(mid))
                assert code == 250, text
                acked[text.decode().rsplit(" ", 1)[-1]] = mid
        # Some delivered, some waiting for their 250, the rest not tried yet.
        wait_until(lambda: answered() >= 4 and slow.waiting_at_dot() >= 1, 20)
        gw.kill()
        # The peer has the bodies of these and never said 250: they must come again.
        unanswered = slow.waiting_at_dot()
        before = len(slow.arrivals())
        slow.set(dot_delay=0.0)
        mark = gw.log_size()
        gw.start()
        # Recovery at start puts the messages the killed queue manager held back in line.
        requeued = gw.wait_for_log(r"^mxgate: spool .* (\d+) returned from active/", since=mark)
        assert int(requeued[1]) >= 1, requeued[0]
        for qid in acked:  # before the kill or after the restart
            gw.wait_for_log(rf"{qid}: removed")
        assert not set(gw.messages()) & set(acked)
        arrived = Counter(a.message_id for a in slow.arrivals())
        missing = [mid for mid in acked.values() if arrived[mid] == 0]
        assert not missing, f"lost: {missing}"
        duplicates = sum(arrived[mid] - 1 for mid in acked.values())
        print(
            f"\nkill -9 during delivery: {count} acknowledged, {before} bodies at the peer "
            f"before the kill, {unanswered} of them unanswered, {duplicates} duplicates"
        )
        assert duplicates >= unanswered
        # At least once, and no more than what was in flight can come twice.
        assert duplicates <= 2 * concurrency
        gw.stop()
    finally:
        slow.set(dot_delay=0.0)
        gw.close()


# -- queue commands on a running gateway --------------------------------------------------


def until_done(gateway: Gateway, expected: str, *args: str) -> str:
    """Run ``mxgate queue ARGS`` until its summary starts with ``expected``
    (a message being retried right now is left alone and reported busy)."""
    outputs: list[str] = []

    def attempt() -> bool:
        result = queue_cli(gateway, *args)
        outputs.append(result.stdout + result.stderr)
        return result.returncode == 0 and result.stdout.startswith(expected)

    wait_until(attempt, 20)
    return outputs[-1]


def rcpt_count(peer: ThreadedPeer, address: str) -> int:
    return sum(1 for line in peer.commands() if line.upper().startswith(f"RCPT TO:<{address}>"))


def test_queue_show_hold_release_delete_on_a_running_gateway(gateway: Gateway, hops: Hops) -> None:
    mark = gateway.log_size()
    held = "held@bracket.test"
    hops.rule.set(held, "451 4.2.0 held: not now")
    mid = unique_id("held")
    qid = send(gateway, [held], message(mid))
    gateway.wait_for_log(rf"{qid}: to=<held@bracket\.test>.*status=deferred", since=mark)

    shown = queue_cli(gateway, "show", qid)
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)
    assert entry["id"] == qid and entry["queue"] in ("deferred", "active")
    [recipient] = entry["recipients"]
    assert recipient["address"] == held and "held: not now" in recipient["last_reply"]

    assert until_done(gateway, "held 1 message(s)", "hold", qid)
    [listed] = [
        e for e in json.loads(queue_cli(gateway, "list", "--json").stdout) if e["id"] == qid
    ]
    assert listed["queue"] == "hold"
    tries = rcpt_count(hops.smtp, held)
    time.sleep(2.5)  # more than two queue runs and the longest backoff
    assert rcpt_count(hops.smtp, held) == tries, "a held message was retried"

    hops.rule.set(held, None)  # the next hop takes it now
    assert until_done(gateway, "released 1 message(s)", "release", qid)
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    assert len(hops.smtp.with_id(mid)) == 1

    victim = "defer-delete@bracket.test"  # deferred for ever by the peer
    mid = unique_id("delete")
    doomed = send(gateway, [victim], message(mid))
    gateway.wait_for_log(rf"{doomed}: to=<defer-delete@bracket\.test>.*status=deferred", since=mark)
    assert until_done(gateway, "deleted 1 message(s)", "delete", "--recipient", victim)
    assert doomed not in gateway.messages()
    listing = json.loads(queue_cli(gateway, "list", "--json").stdout)
    assert doomed not in {e["id"] for e in listing}
    assert not hops.smtp.with_id(mid)


# -- the node role ---------------------------------------------------------------------------


def test_node_role_uses_the_node_rows(tmp_path: Path, routes_database: str, hops: Hops) -> None:
    node = make_gateway(tmp_path / "node", routes_database, hops, node_name="maila")
    try:
        node.start()
        mid = unique_id("node")
        sent = message(mid)
        qid = send(node, ["someone@bracket.test"], sent)
        [arrived] = hops.node_lmtp.wait_for(mid)
        assert_arrived(arrived, SENDER, ["someone@bracket.test"], sent)
        assert not hops.smtp.with_id(mid)  # the gateway row is not the node's
        node.wait_for_log(rf"{qid}: removed")
        # A domain with a gateway row only: no route for the node, refused for now.
        code, text = rcpt_reply(node, "someone@nodeless.test")
        assert code == 451 and text.startswith("4.3.0 "), text
        node.stop()
    finally:
        node.close()


# -- mail loops ---------------------------------------------------------------------------------


def hops_message(received: int, message_id: str) -> bytes:
    trace = "".join(
        f"Received: from hop{n}.example.org by hop{n + 1}.example.org; "
        "Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        for n in range(received)
    )
    return trace.encode() + message(message_id)


def test_more_than_50_received_headers_is_refused_at_end_of_data(
    gateway: Gateway, hops: Hops
) -> None:
    mark = gateway.log_size()
    before = set(gateway.messages())
    loop_id = unique_id("loop")
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.example.org").code == 250
        assert client.command(f"MAIL FROM:<{SENDER}>").code == 250
        assert client.command("RCPT TO:<loop@bracket.test>").code == 250
        assert client.command("DATA").code == 354
        client.send(hops_message(51, loop_id) + b".\r\n")
        reply = client.reply()
        assert (reply.code, reply.text) == (554, "5.4.6 Error: too many hops (mail loop)")
        assert client.command("QUIT").code == 221
    rejected = gateway.wait_for_log(r"(\w+): reject: END-OF-MESSAGE .*554 5\.4\.6", since=mark)
    assert rejected[1] not in gateway.messages()
    assert set(gateway.messages()) <= before
    # 50 is the limit, not over it: accepted (and delivered, with our header on top).
    mid = unique_id("fifty-hops")
    sent = hops_message(50, mid)
    send(gateway, ["fifty@bracket.test"], sent)
    [arrived] = hops.smtp.wait_for(mid)
    assert split_received(arrived.data)[1] == sent
    assert not hops.smtp.with_id(loop_id)
