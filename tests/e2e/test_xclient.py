"""XCLIENT over the wire (smtpd_authorized_xclient_hosts): a trusted front
end says who the client is, and mxgate treats that client as what it is:
outside mynetworks here, though the front end itself is inside."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import GatewayFactory
from tests.e2e.gateway import (
    INSIDE,
    OUTSIDE,
    Gateway,
    new_messages,
    run_swaks,
    running_gateway,
)

ELSEWHERE = "someone@elsewhere.example"  # not ours: relayed for mynetworks only


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, e2e_database: str) -> Iterator[Gateway]:
    with running_gateway(
        tmp_path_factory.mktemp("xclient"),
        e2e_database,
        smtpd_authorized_xclient_hosts=[f"{INSIDE}/32"],
    ) as gw:
        yield gw


def swaks_xclient(swaks: str, gateway: Gateway, source: str, to: str) -> str:
    return run_swaks(
        swaks,
        gateway,
        source,
        *("--xclient-addr", "192.0.2.7", "--xclient-name", "client.example"),
        *("--xclient-helo", "client.example", "--xclient-proto", "ESMTP"),
        # After XCLIENT a front end greets again with its client's name.
        *("--ehlo", "client.example", "--from", "a@example.org", "--to", to),
    )


def test_the_client_named_by_the_front_end_may_not_relay(gateway: Gateway, swaks: str) -> None:
    mark = gateway.log_size()
    out = swaks_xclient(swaks, gateway, INSIDE, ELSEWHERE)
    assert "<-  220 mx.test.example" in out, out  # the new greeting
    assert f"554 5.7.1 <{ELSEWHERE}>: Relay access denied" in out, out
    log = gateway.log(mark)
    assert "NOQUEUE: reject: RCPT from client.example[192.0.2.7]: 554 5.7.1" in log
    assert "helo=<client.example>" in log
    assert "disconnect from client.example[192.0.2.7] ehlo=2 xclient=1 mail=1 rcpt=0/1" in log


def test_mail_from_the_named_client_says_so_in_received(gateway: Gateway, swaks: str) -> None:
    before = gateway.messages()
    out = swaks_xclient(swaks, gateway, INSIDE, "james@server1.example.com")
    assert "250 2.0.0 Ok: queued as" in out, out
    [(queue_id, queued)] = new_messages(before, gateway).items()
    assert queued.envelope.client_address == "192.0.2.7"
    assert gateway.body(queue_id).startswith(
        b"Received: from client.example (client.example [192.0.2.7])\r\n"
        b"\tby mx.test.example (mxgate) with ESMTP id "
    )


def test_other_clients_are_refused_and_not_offered_it(gateway: Gateway) -> None:
    with gateway.raw(source=OUTSIDE) as client:
        assert client.reply().code == 220
        ehlo = client.command("EHLO client.example")
        assert not any(line.startswith("XCLIENT") for line in ehlo.lines)
        refused = client.command("XCLIENT ADDR=127.0.0.1")
        assert (refused.code, refused.text) == (550, "5.7.0 Error: insufficient authorization")
        assert client.command("MAIL FROM:<a@example.org>").code == 250
        assert client.command(f"RCPT TO:<{ELSEWHERE}>").code == 554  # still outside
        assert client.command("QUIT").code == 221


def test_a_renamed_connection_is_still_counted_under_its_peer(
    start_gateway: GatewayFactory,
) -> None:
    # The per-client cap counts the connection where it comes from; when it
    # ends, that count is released, whatever XCLIENT said in between.
    gateway = start_gateway(
        smtpd_authorized_xclient_hosts=[f"{INSIDE}/32"],
        smtpd_client_connection_count_limit=1,
    )
    for _ in range(3):
        with gateway.raw(source=INSIDE) as client:
            assert client.reply().code == 220
            assert client.command("EHLO front.example").code == 250
            assert client.command("XCLIENT ADDR=192.0.2.9").code == 220
            assert client.command("QUIT").code == 221
            client.replies_until_close()
