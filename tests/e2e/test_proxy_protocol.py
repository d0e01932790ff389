"""A proxy in front (smtpd_upstream_proxy_protocol = haproxy): the PROXY
header of a trusted proxy decides who the client is, over the wire.

The proxy is 127.0.0.3, and it is in ``mynetworks`` as a proxy on the same
host or network often is: what the tests show is that its being trusted
never lends that trust to the clients it carries. A real HAProxy carries
clients to the gateway with ``send-proxy`` and ``send-proxy-v2``; swaks sends
headers of its choosing; the raw client sends what swaks cannot (LOCAL, junk,
nothing at all).
"""

from __future__ import annotations

import ipaddress
import smtplib
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mxgate.client_counts import bucket
from tests.e2e.conftest import GatewayFactory
from tests.e2e.gateway import (
    HOSTNAME,
    INSIDE,
    OUTSIDE,
    Gateway,
    free_port,
    new_messages,
    run_swaks,
    running_gateway,
    split_received,
    wait_until,
)
from tests.metrics.http import samples

PROXY = "127.0.0.3"
ELSEWHERE = "someone@elsewhere.example"  # not ours: relayed for mynetworks only
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


REFUSED = ("mxgate_smtpd_refused_connections_total", (("reason", "proxy_header"),))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, e2e_database: str) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("proxy"),
        e2e_database,
        metrics_listen=f"{INSIDE}:{free_port()}",
        mynetworks=[f"{INSIDE}/32", f"{PROXY}/32"],
        smtpd_upstream_proxy_protocol="haproxy",
        smtpd_upstream_proxy_hosts=[f"{PROXY}/32"],
        smtpd_upstream_proxy_timeout="2s",
    ) as gw:
        yield gw


def v1(client: str, port: int = 40000) -> bytes:
    return f"PROXY TCP4 {client} {INSIDE} {port} 25\r\n".encode()


def v2_local() -> bytes:
    body = ipaddress.IPv4Address(PROXY).packed + ipaddress.IPv4Address(INSIDE).packed
    body += struct.pack("!HH", 1, 25)
    return V2_SIGNATURE + bytes([0x20, 0x11]) + struct.pack("!H", len(body)) + body


def proxied_swaks(swaks: str, gateway: Gateway, version: int, client: str, to: str) -> str:
    family = "TCP4" if version == 1 else "AF_INET"
    return run_swaks(
        swaks,
        gateway,
        PROXY,
        *("--proxy-version", str(version), "--proxy-family", family),
        *("--proxy-source", client, "--proxy-source-port", "40000"),
        *("--proxy-dest", INSIDE, "--proxy-dest-port", "25"),
        *("--from", "a@example.org", "--to", to),
    )


@pytest.mark.parametrize("version", [1, 2])
def test_the_header_names_the_client_whatever_the_proxy_is_trusted_for(
    gateway: Gateway, swaks: str, version: int
) -> None:
    mark = gateway.log_size()
    out = proxied_swaks(swaks, gateway, version, OUTSIDE, ELSEWHERE)
    assert f"554 5.7.1 <{ELSEWHERE}>: Relay access denied" in out, out
    log = gateway.log(mark)
    assert f"connect from unknown[{OUTSIDE}]" in log
    assert f"NOQUEUE: reject: RCPT from unknown[{OUTSIDE}]: 554 5.7.1" in log
    assert f"[{PROXY}]" not in log


@pytest.mark.parametrize("version", [1, 2])
def test_mail_through_the_proxy_carries_the_real_client(
    gateway: Gateway, swaks: str, version: int
) -> None:
    before = gateway.messages()
    out = proxied_swaks(swaks, gateway, version, OUTSIDE, "james@server1.example.com")
    assert "250 2.0.0 Ok: queued as" in out, out
    [(queue_id, queued)] = new_messages(before, gateway).items()
    assert queued.envelope.client_address == OUTSIDE
    received, _ = split_received(gateway.body(queue_id))
    assert received["ip"] == OUTSIDE.encode()


def test_a_client_in_mynetworks_behind_the_proxy_may_relay(gateway: Gateway, swaks: str) -> None:
    out = proxied_swaks(swaks, gateway, 1, INSIDE, ELSEWHERE)
    assert "250 2.1.5 Ok" in out, out


def refused(gateway: Gateway, data: bytes) -> str:
    """What the proxy hears after sending ``data`` (maybe nothing) and no
    valid header: one 421, then the end; returns the warning's reason."""
    mark = gateway.log_size()
    base = f"http://{gateway.settings['metrics_listen']}"
    counted = samples(base).get(REFUSED, 0)
    with gateway.raw(source=PROXY) as client:
        if data:
            client.send(data)
        [reply] = client.replies_until_close()
    assert reply.code == 421
    assert reply.text == f"4.3.0 {HOSTNAME} Error: no valid PROXY protocol header"
    # The session never began.
    warning = gateway.wait_for_log(r"warning: haproxy read: (.*)", since=mark)
    assert "connect from" not in gateway.log(mark)
    wait_until(lambda: samples(base).get(REFUSED, 0) == counted + 1, timeout=10)
    return warning.group(1)


def test_the_proxy_without_a_header_is_refused_not_trusted(gateway: Gateway) -> None:
    reason = refused(gateway, b"EHLO proxy.example\r\n")
    assert reason == f"no PROXY header from unknown[{PROXY}]"


def test_a_proxy_that_says_nothing_is_cut_off_after_the_timeout(gateway: Gateway) -> None:
    started = time.monotonic()
    reason = refused(gateway, b"")
    assert 1.5 < time.monotonic() - started < 10
    assert reason == f"timeout error from unknown[{PROXY}]"


def test_a_malformed_header_is_refused(gateway: Gateway) -> None:
    reason = refused(gateway, b"PROXY TCP4 127.0.0.2 127.0.0.1 99999 25\r\nEHLO x\r\n")
    assert reason.startswith("bad port '99999'")


def test_header_and_commands_in_one_write(gateway: Gateway) -> None:
    # HAProxy forwards the client's first bytes as they come: the greeting
    # is owed first, then the replies to what followed the header.
    with gateway.raw(source=PROXY) as client:
        client.send(v1(OUTSIDE) + b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n")
        assert client.reply().code == 220
        assert client.reply().code == 250
        assert client.reply().text == "2.1.0 Ok"
        assert client.command(f"RCPT TO:<{ELSEWHERE}>").code == 554
        assert client.command("QUIT").code == 221


def test_a_header_in_pieces(gateway: Gateway) -> None:
    with gateway.raw(source=PROXY) as client:
        header = v1(OUTSIDE)
        client.send(header[:7])
        time.sleep(0.2)
        client.send(header[7:])
        assert client.reply().code == 220
        assert client.command("QUIT").code == 221


def test_version_2_local_is_the_proxy_itself(gateway: Gateway) -> None:
    # The proxy's own health check: trusted as what it is (in mynetworks here).
    mark = gateway.log_size()
    with gateway.raw(source=PROXY) as client:
        client.send(v2_local())
        assert client.reply().code == 220
        assert client.command("EHLO health.example").code == 250
        assert client.command("MAIL FROM:<>").code == 250
        assert client.command(f"RCPT TO:<{ELSEWHERE}>").code == 250
        assert client.command("QUIT").code == 221
    assert f"connect from unknown[{PROXY}]" in gateway.log(mark)


def test_proxy_unknown_is_an_unknown_client_not_the_proxy(gateway: Gateway) -> None:
    mark = gateway.log_size()
    with gateway.raw(source=PROXY) as client:
        client.send(b"PROXY UNKNOWN\r\n")
        assert client.reply().code == 220
        assert client.command("EHLO client.example").code == 250
        assert client.command("MAIL FROM:<a@example.org>").code == 250
        assert client.command(f"RCPT TO:<{ELSEWHERE}>").code == 554
        assert client.command("QUIT").code == 221
    assert "connect from unknown[unknown]" in gateway.log(mark)


def test_other_clients_are_served_directly_and_cannot_send_a_header(gateway: Gateway) -> None:
    with gateway.raw(source=OUTSIDE) as client:
        assert client.reply().code == 220  # no header awaited from them
        refused = client.command(v1(INSIDE).rstrip(b"\r\n"))
        assert refused.code == 502 or refused.code == 500
        assert client.command("EHLO client.example").code == 250
        assert client.command("MAIL FROM:<a@example.org>").code == 250
        assert client.command(f"RCPT TO:<{ELSEWHERE}>").code == 554
        assert client.command("QUIT").code == 221


HAPROXY_CONFIG = """\
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
listen smtp
    bind {proxy}:{port}
    server mx {inside}:{gateway} {send} source {proxy}
"""


@pytest.mark.parametrize("send", ["send-proxy", "send-proxy-v2"])
def test_a_real_haproxy_in_front(gateway: Gateway, haproxy: str, tmp_path: Path, send: str) -> None:
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        HAPROXY_CONFIG.format(
            proxy=PROXY, port=port, inside=INSIDE, gateway=gateway.port, send=send
        )
    )
    process = subprocess.Popen(
        [haproxy, "-db", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = None
        deadline = time.monotonic() + 10
        while client is None:
            try:
                client = smtplib.SMTP(PROXY, port, source_address=(OUTSIDE, 0), timeout=20)
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        mark = gateway.log_size()
        before = gateway.messages()
        with client:
            client.ehlo("client.example")
            assert client.mail("a@example.org")[0] == 250
            code, text = client.rcpt(ELSEWHERE)
            assert (code, text) == (554, f"5.7.1 <{ELSEWHERE}>: Relay access denied".encode())
            client.rset()
            message = b"Subject: through haproxy\r\n\r\nhi\r\n"
            client.sendmail("a@example.org", ["james@server1.example.com"], message)
        [(queue_id, queued)] = new_messages(before, gateway).items()
        assert queued.envelope.client_address == OUTSIDE
        gateway.wait_for_log(rf"{queue_id}: client=unknown\[{OUTSIDE}\]", since=mark)
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode(errors="replace")
    assert process.returncode in (0, 143, -15), output


def test_the_per_client_cap_counts_the_clients_not_the_proxy(
    start_gateway: GatewayFactory,
) -> None:
    # Every connection comes from the proxy; the cap must apply to each
    # client it carries, or one busy client (or the proxy itself) would
    # lock out everyone behind it.
    gateway = start_gateway(
        smtpd_upstream_proxy_protocol="haproxy",
        smtpd_upstream_proxy_hosts=[f"{PROXY}/32"],
        smtpd_client_connection_count_limit=1,
    )
    first, second, third = (gateway.raw(source=PROXY) for _ in range(3))
    try:
        first.send(v1("192.0.2.7", 40001))
        assert first.reply().code == 220
        second.send(v1("192.0.2.8", 40002))
        assert second.reply().code == 220  # another client: its own count
        third.send(v1("192.0.2.7", 40003))
        [refused] = third.replies_until_close()
        assert refused.code == 421
        assert refused.text.endswith("Error: too many connections from 192.0.2.7")
    finally:
        for client in (first, second, third):
            client.close()


def test_a_stop_tells_a_connection_still_waiting_for_its_header(
    start_gateway: GatewayFactory,
) -> None:
    """SIGTERM while the proxy has not sent the header yet: that connection
    is one of the worker's sessions too, so it hears the shutdown's 421
    rather than a bare close, and the stop does not wait out the header's
    timeout."""
    gateway = start_gateway(
        smtpd_upstream_proxy_protocol="haproxy",
        smtpd_upstream_proxy_hosts=[f"{PROXY}/32"],
        smtpd_upstream_proxy_timeout="60s",
    )
    with gateway.raw(source=PROXY) as client:
        time.sleep(0.3)  # the worker has the connection
        started = time.monotonic()
        gateway.stop()
        [reply] = client.replies_until_close()
        assert reply.code == 421
        assert reply.text == f"4.3.2 {HOSTNAME} Service shutting down, try again later"
    assert time.monotonic() - started < 30


def test_a_reload_lets_a_connection_waiting_for_its_header_go_on(
    start_gateway: GatewayFactory,
) -> None:
    """SIGHUP while the proxy has not sent the header yet: the old worker
    keeps that connection as it keeps its other sessions, so a header that
    comes after the reload still opens a session that takes mail."""
    gateway = start_gateway(
        smtpd_upstream_proxy_protocol="haproxy",
        smtpd_upstream_proxy_hosts=[f"{PROXY}/32"],
        smtpd_upstream_proxy_timeout="60s",
    )
    before = gateway.messages()
    with gateway.raw(source=PROXY) as client:
        time.sleep(0.3)  # the worker has the connection
        mark = gateway.log_size()
        gateway.reload()
        gateway.wait_for_log(r"reload: new worker\(s\)", mark, timeout=30)
        gateway.wait_for_log(r"replaced by new workers: closing the listeners", mark)
        time.sleep(0.5)  # an old worker without sessions would be gone by now
        client.send(v1(OUTSIDE))
        assert client.reply().code == 220
        assert client.command("EHLO client.example").code == 250
        assert client.command("MAIL FROM:<a@example.org>").code == 250
        assert client.command("RCPT TO:<james@server1.example.com>").code == 250
        assert client.command("DATA").code == 354
        assert client.command(b"Subject: late header\r\n\r\nbody\r\n.").code == 250
        assert client.command("QUIT").code == 221
    assert len(new_messages(before, gateway)) == 1


def test_a_connection_that_never_sent_its_header_counts_no_client(
    start_gateway: GatewayFactory,
) -> None:
    """A connection waiting for its header is a session for the shutdown but
    no client's connection yet: when it fails (here: junk instead of a
    header) nobody's count goes down. The counts are shared buckets, and
    the empty address falls in the bucket of 10.1.225.73, so a count taken
    back for it would let that client past its cap."""
    client_ip = "10.1.225.73"
    assert bucket(client_ip) == bucket("")
    gateway = start_gateway(
        smtpd_upstream_proxy_protocol="haproxy",
        smtpd_upstream_proxy_hosts=[f"{PROXY}/32"],
        smtpd_client_connection_count_limit=1,
    )
    first = gateway.raw(source=PROXY)
    try:
        first.send(v1(client_ip, 40001))
        assert first.reply().code == 220
        with gateway.raw(source=PROXY) as junk:
            junk.send(b"EHLO no.header.example\r\n")
            [refused] = junk.replies_until_close()
            assert refused.code == 421
        with gateway.raw(source=PROXY) as second:
            second.send(v1(client_ip, 40002))
            [refused] = second.replies_until_close()
            assert refused.code == 421
            assert refused.text.endswith(f"Error: too many connections from {client_ip}")
    finally:
        first.close()
