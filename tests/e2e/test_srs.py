"""SRS end to end (issue 8): the real ``mxgate serve``, scripted next hops on
loopback, one shared database.

A message forwarded to an outside address leaves with an SRS0 sender that
verifies (with srslib, an independent implementation, when installed, and
with ``mxgate srs decode``); mail to our own next hop and mail from the null
sender keep their sender; a DSN sent back to the SRS address, from a client
of the internet, reaches the original sender through the gateway; forged,
expired and foreign SRS addresses are refused at RCPT, a case-smashed one is
not; two gateways on the database verify each other's addresses; after a
rotation the old addresses verify until the grace period ends.
"""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from mxgate.directory.admin import prepare_example_database
from tests.delivery.peers import PeerScript
from tests.e2e.gateway import HOSTNAME, INSIDE, OUTSIDE, Gateway, child_environment, wait_until
from tests.e2e.peers import Arrived, ThreadedPeer
from tests.pg import PgServer

srslib: Any
try:
    srslib = importlib.import_module("srslib")  # the test extra; untyped
except ImportError:  # pragma: no cover - the test extra is not installed
    srslib = None

SENDER = "alice@sender.example"
FAST: dict[str, str] = {
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "queue_run_delay": "1s",
}


@dataclass
class Site:
    dsn: str
    mailbox: ThreadedPeer  # the transport row of server1.example.com
    internet: ThreadedPeer  # relayhost: forwards to the outside, bounces
    root: Path


@pytest.fixture
def site(pg_server: PgServer, tmp_path: Path) -> Iterator[Site]:
    mailbox = ThreadedPeer(PeerScript(greeting="220 maila.test ESMTP"))
    internet = ThreadedPeer(PeerScript(greeting="220 internet.test ESMTP"))
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

    try:
        asyncio.run(prepare())
        yield Site(dsn, mailbox, internet, tmp_path)
    finally:
        mailbox.close()
        internet.close()
        pg_server.drop_database(dsn)


@pytest.fixture
def gateway(site: Site) -> Iterator[Gateway]:
    with started(site, "gw-a") as gw:
        yield gw


class started:
    """A running gateway of ``site`` (stopped cleanly at the end)."""

    def __init__(self, site: Site, name: str, **settings: str) -> None:
        self.gateway = Gateway(site.root / name, site.dsn)
        self.gateway.write_config(relayhost=f"[{INSIDE}]:{site.internet.port}", **FAST, **settings)

    def __enter__(self) -> Gateway:
        self.gateway.start()
        return self.gateway

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.gateway.stop()
        finally:
            self.gateway.close()


def secrets(dsn: str) -> list[str]:
    async def read() -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            return [
                str(r["secret"])
                for r in await conn.fetch("SELECT secret FROM mxgate_srs_key ORDER BY id")
            ]
        finally:
            await conn.close()

    return asyncio.run(read())


def srs_cli(gateway: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mxgate", "srs", *args, "--config", str(gateway.config_path)],
        capture_output=True,
        text=True,
        env=child_environment(),
        timeout=60,
        check=False,
    )


def independent_reverse(secret: str, address: str) -> str | None:
    """What srslib makes of ``address`` (None when srslib is not installed)."""
    if srslib is None:
        return None
    return str(srslib.SRS(secret).reverse(address))


def message(message_id: str, subject: str = "srs test") -> bytes:
    head = f"From: <{SENDER}>\r\nSubject: {subject}\r\nMessage-ID: {message_id}\r\n"
    return f"{head}\r\nHi.\r\n".encode()


def unique_id(name: str) -> str:
    return f"<{name}.{time.monotonic_ns()}@client.example.org>"


def send(gateway: Gateway, sender: str, recipients: list[str], data: bytes) -> str:
    with gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.example.org")
        code, text = client.mail(sender)
        assert code == 250, text
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            assert code == 250, (recipient, code, text)
        code, text = client.data(data)
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def rcpt(gateway: Gateway, recipient: str, sender: str = "") -> tuple[int, str]:
    with gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.example.org")
        assert client.mail(sender)[0] == 250
        code, text = client.rcpt(recipient)
        client.rset()
    return code, text.decode()


def forward_out(gateway: Gateway, site: Site, sender: str = SENDER) -> tuple[str, Arrived]:
    """A message to the catch-all (forwarded to james@example.com, outside)."""
    mid = unique_id("srs-forward")
    qid = send(gateway, sender, ["info@server1.example.com"], message(mid))
    [arrived] = site.internet.wait_for(mid)
    assert arrived.rcpts == ["james@example.com"]
    return qid, arrived


def test_forward_leaves_with_srs0_and_the_dsn_comes_back(gateway: Gateway, site: Site) -> None:
    mark = gateway.log_size()
    mid = unique_id("srs-both")
    qid = send(
        gateway, SENDER, ["info@server1.example.com", "james@server1.example.com"], message(mid)
    )
    [outside] = site.internet.wait_for(mid)
    [inside] = site.mailbox.wait_for(mid)
    # Our own next hop: the sender untouched.
    assert inside.sender == SENDER and inside.rcpts == ["james@server1.example.com"]
    # The forward to the outside: SRS0 at our SRS domain (myhostname), verifying.
    rewritten = outside.sender
    assert rewritten.startswith("SRS0=") and rewritten.endswith(f"=sender.example=alice@{HOSTNAME}")
    [secret] = secrets(site.dsn)
    assert independent_reverse(secret, rewritten) in (SENDER, None)
    decoded = srs_cli(gateway, "decode", rewritten)
    assert (decoded.returncode, decoded.stdout) == (0, f"{SENDER}\n"), decoded.stderr
    # The log names both senders, and each copy as usual.
    gateway.wait_for_log(rf"{qid}: removed", since=mark)
    log = gateway.log(mark)
    assert f"{qid}: srs: from=<{SENDER}> rewritten=<{rewritten}>" in log
    assert f"{qid}: to=<james@example.com>, orig_to=<info@server1.example.com>, " in log
    assert log.count(f"{qid}: srs: ") == 1

    # A bounce to the SRS address, from a client of the internet, reaches the sender.
    dsn_id = unique_id("srs-dsn")
    send(gateway, "", [rewritten], message(dsn_id, "Undelivered Mail Returned to Sender"))
    [bounce] = site.internet.wait_for(dsn_id)
    assert bounce.sender == "" and bounce.rcpts == [SENDER]


def test_null_sender_and_mynetworks_relaying_are_not_rewritten(
    gateway: Gateway, site: Site
) -> None:
    _qid, arrived = forward_out(gateway, site, sender="")
    assert arrived.sender == ""
    mid = unique_id("srs-relayed")
    with gateway.smtp(INSIDE) as client:
        client.ehlo("inside.example.org")
        client.sendmail(SENDER, ["someone@faraway.example"], message(mid))
    [relayed] = site.internet.wait_for(mid)
    assert relayed.sender == SENDER


def test_forged_expired_and_foreign_srs_addresses_are_refused(gateway: Gateway, site: Site) -> None:
    _qid, arrived = forward_out(gateway, site)
    good = arrived.sender
    tag, hash_, rest = good.split("=", 2)
    forged = f"{tag}={'AAAA' if hash_ != 'AAAA' else 'BBBB'}={rest}"
    code, text = rcpt(gateway, forged)
    assert code == 550 and text.startswith("5.1.1 ") and "invalid SRS address: hash" in text
    code, text = rcpt(gateway, good.replace("=sender.example=", "=other.example="))
    assert code == 550 and "hash does not verify" in text
    # Case changed on the way: the hash is compared without case.
    assert rcpt(gateway, good.lower())[0] == 250
    assert rcpt(gateway, good.upper())[0] == 250
    if srslib is not None:
        [secret] = secrets(site.dsn)
        old = srslib.SRS(secret)
        old._time_fn = lambda: time.time() - 30 * 86400
        expired = old.forward(SENDER, HOSTNAME)
        code, text = rcpt(gateway, expired)
        assert code == 550 and "invalid SRS address: timestamp expired" in text
        # Signed with our key, but for a domain that is not ours: relay denied.
        foreign = srslib.SRS(secret).forward(SENDER, "forwarder.example")
        code, text = rcpt(gateway, foreign)
        assert code == 554 and "Relay access denied" in text
        # And an SRS address made by srslib at our SRS domain is as good as ours.
        assert rcpt(gateway, srslib.SRS(secret).forward(SENDER, HOSTNAME))[0] == 250
    code, text = rcpt(gateway, "SRS0=abcd=AA=sender.example=alice@forwarder.example")
    assert code == 554


def test_two_gateways_verify_each_other(gateway: Gateway, site: Site) -> None:
    with started(site, "gw-b") as other:
        _qid, from_a = forward_out(gateway, site)
        _qid, from_b = forward_out(other, site)
        assert from_a.sender.startswith("SRS0=") and from_b.sender.startswith("SRS0=")
        assert rcpt(other, from_a.sender)[0] == 250
        assert rcpt(gateway, from_b.sender)[0] == 250
        dsn_id = unique_id("srs-dsn-b")
        send(other, "", [from_a.sender], message(dsn_id))
        [bounce] = site.internet.wait_for(dsn_id)
        assert bounce.rcpts == [SENDER]


def test_rotation_signs_anew_and_old_addresses_verify_until_the_grace_ends(site: Site) -> None:
    with started(site, "gw-rot", srs_key_grace="4s") as gateway:
        _qid, before = forward_out(gateway, site)
        rotated = srs_cli(gateway, "rotate", "--delay", "0")
        assert rotated.returncode == 0, rotated.stderr
        old_secret, new_secret = secrets(site.dsn)

        def signed_anew() -> bool:
            _qid, arrived = forward_out(gateway, site)
            return independent_reverse(new_secret, arrived.sender) in (SENDER, None) and (
                arrived.sender != before.sender
            )

        wait_until(signed_anew, timeout=20)  # NOTIFY: the gateway reloads at once
        started_at = time.monotonic()
        assert rcpt(gateway, before.sender)[0] == 250  # within the grace period
        wait_until(lambda: time.monotonic() - started_at > 5, timeout=10)
        code, text = rcpt(gateway, before.sender)
        assert code == 550 and "hash does not verify" in text
        assert old_secret != new_secret
