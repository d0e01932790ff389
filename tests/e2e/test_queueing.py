"""Accepted mail: the log lines, the spool file behind "queued as", real
clients (swaks, smtp-source) and 300 simultaneous connections."""

from __future__ import annotations

import asyncio
import re
import resource
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.gateway import (
    INSIDE,
    OUTSIDE,
    AsyncClient,
    Gateway,
    final_recipients,
    new_messages,
    running_gateway,
    split_received,
)

CONNECTIONS = 300


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, e2e_database: str) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("queueing")
    # 300 connections from 127.0.0.1 at once: above Postfix's default cap of 50.
    with running_gateway(root, e2e_database, smtpd_client_connection_count_limit=1000) as gw:
        yield gw


def test_log_lines_and_the_queued_message(gateway: Gateway) -> None:
    mark = gateway.log_size()
    message = (
        b"From: <sender@example.org>\r\n"
        b"To: <nobody@server1.example.com>\r\n"
        b"Subject: log test\r\n"
        b"Message-ID: <log-test@example.org>\r\n"
        b"\r\n"
        b"first line\r\n"
        b"..a line that starts with a dot (stuffed on the wire)\r\n"
        b"last line\r\n"
    )
    wire = message.replace(b"\r\n.", b"\r\n..")
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        assert str(client.command("MAIL FROM:<sender@example.org>")) == "250 2.1.0 Ok"
        denied = client.command("RCPT TO:<user@example.org>")
        assert str(denied) == "554 5.7.1 <user@example.org>: Relay access denied"
        assert str(client.command("RCPT TO:<nobody@server1.example.com>")) == "250 2.1.5 Ok"
        assert str(client.command("DATA")) == "354 End data with <CR><LF>.<CR><LF>"
        client.send(wire + b".\r\n")
        queued = client.reply()
        assert client.command("QUIT").code == 221
    match = re.fullmatch(r"2\.0\.0 Ok: queued as (\w+)", queued.text)
    assert queued.code == 250 and match, queued
    queue_id = match[1]

    # The mail log is written once per event-loop turn, so its last lines may
    # land just after the client has its replies: wait for the queued line.
    gateway.wait_for_log(rf"{queue_id}: from=<sender@example\.org>, size=", since=mark)
    log = gateway.log(mark)
    assert "connect from unknown[127.0.0.2]" in log
    assert (
        "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 <user@example.org>: "
        "Relay access denied; from=<sender@example.org> to=<user@example.org> "
        "proto=ESMTP helo=<client.test>"
    ) in log
    assert f"{queue_id}: client=unknown[127.0.0.2]" in log
    assert f"{queue_id}: message-id=<log-test@example.org>" in log
    size = re.search(rf"{queue_id}: from=<sender@example\.org>, size=(\d+), nrcpt=1\b", log)
    assert size is not None, log
    # Postfix 3.x form: a verb with refusals shows succeeded/total.
    gateway.wait_for_log(
        r"(?m)disconnect from unknown\[127\.0\.0\.2\] ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 "
        r"commands=5/6$",
        since=mark,
    )

    queued_message = gateway.messages()[queue_id]
    envelope = queued_message.envelope
    assert envelope.sender == "sender@example.org"
    assert envelope.client_address == OUTSIDE
    assert envelope.client_helo == "client.test"
    # The catch-all forward of server1.example.com, expanded at RCPT time.
    assert final_recipients(queued_message) == ["james@example.com"]
    assert envelope.recipients[0].original == "nobody@server1.example.com"
    body = gateway.body(queue_id)
    received, rest = split_received(body)
    assert rest == message  # the exact bytes sent, dot-unstuffed
    assert received["helo"] == b"client.test"
    assert received["ip"] == OUTSIDE.encode()
    assert received["proto"] == b"ESMTP"
    assert received["id"] == queue_id.encode()
    assert received["rcpt"] == b"nobody@server1.example.com"
    # Postfix logs the queue file's size: our Received: header included.
    assert int(size[1]) == len(body) == queued_message.body_size == envelope.size


def test_swaks_delivers(gateway: Gateway, swaks: str) -> None:
    before = gateway.messages()
    result = subprocess.run(
        [
            swaks,
            "--server",
            f"{INSIDE}:{gateway.port}",
            "--local-interface",
            OUTSIDE,
            "--to",
            "james@server1.example.com",
            "--from",
            "a@example.org",
            "--header",
            "Subject: swaks e2e",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    [(queue_id, queued)] = new_messages(before, gateway).items()
    assert queued.envelope.sender == "a@example.org"
    assert final_recipients(queued) == ["james@server1.example.com"]
    assert f"queued as {queue_id}" in result.stdout
    assert b"Subject: swaks e2e\r\n" in gateway.body(queue_id)


def test_smtp_source_delivers_20_messages(gateway: Gateway, smtp_source: str) -> None:
    before = gateway.messages()
    mark = gateway.log_size()
    result = subprocess.run(
        [
            smtp_source,
            "-s",
            "5",
            "-m",
            "20",
            "-f",
            "a@example.org",
            "-t",
            "james@server1.example.com",
            f"{INSIDE}:{gateway.port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fresh = new_messages(before, gateway)
    assert len(fresh) == 20, gateway.log(mark)
    for queued in fresh.values():
        assert queued.envelope.sender == "a@example.org"
        assert final_recipients(queued) == ["james@server1.example.com"]
    assert "reject" not in gateway.log(mark)


def test_300_simultaneous_connections(gateway: Gateway) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = CONNECTIONS + 200
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"ulimit -n is {hard}: {CONNECTIONS} connections need {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    before = gateway.messages()
    replies = asyncio.run(_simultaneous(gateway.port, CONNECTIONS))
    queued = [reply for reply in replies if reply.startswith("250 2.0.0 Ok: queued as ")]
    assert len(queued) == CONNECTIONS, [r for r in replies if r not in queued][:5]
    ids = {reply.rsplit(" ", 1)[1] for reply in queued}
    fresh = new_messages(before, gateway)
    assert set(fresh) == ids
    for queue_id, message in fresh.items():
        number = int(message.envelope.sender.split("@")[0].removeprefix("c"))
        _received, rest = split_received(gateway.body(queue_id))
        assert rest == _message(number)


def _message(number: int) -> bytes:
    return f"Subject: connection {number}\r\n\r\n".encode() + f"body {number}\r\n".encode() * 50


async def _simultaneous(port: int, count: int) -> list[str]:
    """Open ``count`` connections, and only when every one has its greeting,
    run one transaction on each, all at once."""
    clients = await asyncio.gather(*(AsyncClient.connect(port) for _ in range(count)))
    greetings = await asyncio.gather(*(client.reply() for client in clients))
    assert all(greeting.code == 220 for greeting in greetings), greetings[:3]

    async def transaction(number: int, client: AsyncClient) -> str:
        try:
            ehlo = await client.command("EHLO client.test")
            assert ehlo.code == 250, ehlo
            reply = await client.send_message(
                f"c{number}@example.org", ["james@server1.example.com"], _message(number)
            )
            bye = await client.command("QUIT")
            assert bye.code == 221, bye
            return str(reply)
        finally:
            await client.close()

    return await asyncio.wait_for(
        asyncio.gather(*(transaction(n, c) for n, c in enumerate(clients))), 60
    )
