"""Mail accepted by the real ``mxgate serve`` reaches its next hop, is retried, bounces.

The next hops are scripted SMTP servers on 127.0.0.1, run in a thread of the
test: the mailbox server (the transport row of server1.example.com) and the
"internet" (relayhost, for forwards to outside addresses and for bounces).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from mxgate.directory.admin import prepare_example_database
from tests.delivery.peers import PeerScript
from tests.e2e.gateway import INSIDE, OUTSIDE, Gateway, queue_cli, wait_until
from tests.e2e.peers import ThreadedPeer
from tests.pg import PgServer


@pytest.fixture
def peers() -> Iterator[tuple[ThreadedPeer, ThreadedPeer]]:
    mailbox = ThreadedPeer(PeerScript(greeting="220 maila.test ESMTP"))
    internet = ThreadedPeer(PeerScript(greeting="220 internet.test ESMTP"))
    try:
        yield mailbox, internet
    finally:
        mailbox.close()
        internet.close()


@pytest.fixture
def delivering_gateway(
    pg_server: PgServer, tmp_path: Path, peers: tuple[ThreadedPeer, ThreadedPeer]
) -> Iterator[Gateway]:
    mailbox, internet = peers
    dsn = pg_server.create_database()

    async def prepare() -> None:
        await prepare_example_database(dsn)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "UPDATE transport SET transport = $1", f"smtp:[{INSIDE}]:{mailbox.port}"
            )
        finally:
            await conn.close()

    asyncio.run(prepare())
    gateway = Gateway(
        tmp_path / "gw",
        dsn,
        relayhost=f"[{INSIDE}]:{internet.port}",
        minimal_backoff_time="1s",
        maximal_backoff_time="2s",
        queue_run_delay="1s",
    )
    try:
        gateway.start()
        yield gateway
        if gateway.process is not None and gateway.process.poll() is None:
            gateway.stop()
    finally:
        gateway.close()
        pg_server.drop_database(dsn)


def send(gateway: Gateway, sender: str, recipients: list[str], body: bytes) -> str:
    with gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.example.org")
        client.mail(sender)
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            assert code == 250, (recipient, code, text)
        code, text = client.data(body)
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


BODY = b"Subject: relay me\r\nMessage-ID: <e2e-1@example.org>\r\n\r\nHello.\r\n"


def test_accepted_mail_reaches_the_mailbox_server_and_the_forward_target(
    delivering_gateway: Gateway, peers: tuple[ThreadedPeer, ThreadedPeer]
) -> None:
    mailbox, internet = peers
    qid = send(
        delivering_gateway,
        "someone@example.org",
        ["james@server1.example.com", "info@server1.example.com"],
        BODY,
    )
    [(mail_from, rcpts, data)] = mailbox.wait_messages(1)
    assert "<someone@example.org>" in mail_from and rcpts == ["james@server1.example.com"]
    assert data.endswith(BODY) and data.startswith(b"Received: from client.example.org")
    # info@ has no row of its own: the catch-all forward sends it to james@example.com,
    # outside our domains, so it leaves through the relayhost.
    [(_from, outside_rcpts, _data)] = internet.wait_messages(1)
    assert outside_rcpts == ["james@example.com"]
    delivering_gateway.wait_for_log(rf"{qid}: removed")
    log = delivering_gateway.log()
    assert f"{qid}: to=<james@server1.example.com>, relay={INSIDE}[{INSIDE}]:{mailbox.port}" in log
    assert "to=<james@example.com>, orig_to=<info@server1.example.com>" in log
    assert "status=sent" in log
    assert queue_cli(delivering_gateway, "list").stdout == "Mail queue is empty\n"


def test_lines_that_start_with_a_dot_arrive_as_they_were_sent(
    delivering_gateway: Gateway, peers: tuple[ThreadedPeer, ThreadedPeer]
) -> None:
    """A body with lines that start with a dot is stored as not plain, and the
    queue manager stuffs those dots again; one without them (the test above)
    goes out unscanned. Either way the next hop gets what the client sent."""
    mailbox, _internet = peers
    body = b"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast\r\n"
    send(delivering_gateway, "someone@example.org", ["james@server1.example.com"], body)
    [(_from, _rcpts, data)] = mailbox.wait_messages(1)
    assert data.startswith(b"Received: from client.example.org") and data.endswith(body)


def test_deferred_mail_is_listed_then_flushed_and_delivered(
    delivering_gateway: Gateway, peers: tuple[ThreadedPeer, ThreadedPeer]
) -> None:
    mailbox, _internet = peers
    mailbox.set(rcpt=lambda arg: "451 4.3.0 mailbox server busy")
    qid = send(delivering_gateway, "someone@example.org", ["james@server1.example.com"], BODY)
    delivering_gateway.wait_for_log(rf"{qid}: to=<james@server1.example.com>.*status=deferred")
    listing = queue_cli(delivering_gateway, "list", "--json")
    assert listing.returncode == 0, listing.stderr
    [entry] = json.loads(listing.stdout)
    assert entry["id"] == qid and entry["queue"] in ("deferred", "active")
    assert "mailbox server busy" in entry["recipients"][0]["last_reply"]
    mailbox.set(rcpt=lambda arg: "250 2.1.5 Ok")
    wait_until(lambda: queue_cli(delivering_gateway, "flush").returncode == 0)
    delivering_gateway.wait_for_log(rf"{qid}: removed", timeout=20)
    assert len(mailbox.messages()) == 1


def test_refused_recipient_bounces_to_the_sender(
    delivering_gateway: Gateway, peers: tuple[ThreadedPeer, ThreadedPeer]
) -> None:
    mailbox, internet = peers
    mailbox.set(rcpt=lambda arg: "550 5.1.1 no such mailbox here")
    qid = send(delivering_gateway, "someone@example.org", ["james@server1.example.com"], BODY)
    delivering_gateway.wait_for_log(rf"{qid}: to=<james@server1.example.com>.*status=bounced")
    delivering_gateway.wait_for_log(rf"{qid}: sender non-delivery notification: ")
    [(mail_from, rcpts, data)] = internet.wait_messages(1)
    assert "<>" in mail_from and rcpts == ["someone@example.org"]
    assert b"multipart/report" in data and b"Status: 5.1.1" in data
    assert b"no such mailbox here" in data
    assert b"Subject: relay me" in data  # the original (or its headers) comes back


def test_pflogsumm_reads_the_mail_log(
    delivering_gateway: Gateway, peers: tuple[ThreadedPeer, ThreadedPeer], pflogsumm: str
) -> None:
    """SPEC section 11: the log keeps Postfix's format, so that pflogsumm (with
    --syslog-name=mxgate) counts what the gateway received, delivered and refused."""
    mailbox, internet = peers
    first = send(delivering_gateway, "a@example.org", ["james@server1.example.com"], BODY)
    second = send(
        delivering_gateway,
        "b@example.org",
        ["james@server1.example.com", "info@server1.example.com"],
        BODY,
    )
    with delivering_gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.example.org")
        client.mail("c@example.org")
        assert client.rcpt("nobody@closed.example.net")[0] == 554
    for qid in (first, second):
        delivering_gateway.wait_for_log(rf"{qid}: removed")
    assert (len(mailbox.messages()), len(internet.messages())) == (2, 1)
    report = subprocess.run(
        [pflogsumm, "--syslog-name=mxgate", "--problems-first", str(delivering_gateway.log_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    totals = {
        what: int(count)
        for count, what in re.findall(
            r"^\s+(\d+)\s+(received|delivered|rejected|bounced)\b", report, re.M
        )
    }
    # The second message went to james and, through the catch-all, to james@example.com.
    assert totals == {"received": 2, "delivered": 3, "rejected": 1, "bounced": 0}, report
    assert "Relay access denied (total: 1)" in report
    assert "Warnings: none" in report and "Fatal Errors: none" in report


def test_sighup_gives_the_queue_manager_its_new_settings(
    delivering_gateway: Gateway, peers: tuple[ThreadedPeer, ThreadedPeer]
) -> None:
    """As ``postfix reload`` does for qmgr and smtp: a new relayhost and a new
    recipient limit apply to the next deliveries; a setting only a restart
    can change is named in a warning."""
    mailbox, internet = peers
    gateway = delivering_gateway
    both = ["james@server1.example.com", "david@server1.example.com"]
    before = b"Subject: before\r\nMessage-ID: <reload-1@example.org>\r\n\r\nHello.\r\n"
    send(gateway, "someone@example.org", both, before)
    [one] = mailbox.wait_for("<reload-1@example.org>")
    assert sorted(one.rcpts) == sorted(both)
    elsewhere = ThreadedPeer(PeerScript(greeting="220 elsewhere.test ESMTP"))
    try:
        mark = gateway.log_size()
        gateway.write_config(
            relayhost=f"[{INSIDE}]:{elsewhere.port}",
            default_destination_recipient_limit=1,
            change_log_retention="1d",
        )
        gateway.reload()
        gateway.wait_for_log(r"reload: new worker\(s\)", mark, timeout=30)
        gateway.wait_for_log(
            r"warning: reload: change_log_retention changed: restart mxgate serve to apply", mark
        )
        after = b"Subject: after\r\nMessage-ID: <reload-2@example.org>\r\n\r\nHello.\r\n"
        send(gateway, "someone@example.org", both, after)
        split = mailbox.wait_for("<reload-2@example.org>", count=2)
        assert sorted(rcpt for arrived in split for rcpt in arrived.rcpts) == sorted(both)
        assert all(len(arrived.rcpts) == 1 for arrived in split)
        # info@ goes to the catch-all's james@example.com, outside: the new relayhost.
        outside = b"Subject: out\r\nMessage-ID: <reload-3@example.org>\r\n\r\nHello.\r\n"
        send(gateway, "someone@example.org", ["info@server1.example.com"], outside)
        [relayed] = elsewhere.wait_for("<reload-3@example.org>")
        assert relayed.rcpts == ["james@example.com"]
        assert internet.messages() == []
    finally:
        elsewhere.close()
