"""The SMTP server's own rules over the wire (SPEC section 8): SMTP smuggling,
STARTTLS and command injection, SIZE, line length, sequencing, QUIT, timeouts."""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import GatewayFactory
from tests.e2e.gateway import (
    HOSTNAME,
    INSIDE,
    OUTSIDE,
    Gateway,
    RawClient,
    client_tls_context,
    final_recipients,
    new_messages,
    running_gateway,
    split_received,
    wait_until,
)

SIZE_LIMIT = 100_000
TIMEOUT = 2


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, e2e_database: str, tls_files: tuple[Path, Path]
) -> Iterator[Gateway]:
    cert, key = tls_files
    with running_gateway(
        tmp_path_factory.mktemp("protocol"),
        e2e_database,
        smtpd_tls_cert_file=str(cert),
        smtpd_tls_key_file=str(key),
        message_size_limit=SIZE_LIMIT,
        smtpd_timeout=TIMEOUT,
    ) as gw:
        yield gw


def open_transaction(gateway: Gateway, sender: str, source: str = OUTSIDE) -> RawClient:
    """A client that has had 354 for a message from ``sender`` to james."""
    client = gateway.raw(source)
    assert client.reply().code == 220
    assert client.command("EHLO client.test").code == 250
    assert str(client.command(f"MAIL FROM:<{sender}>")) == "250 2.1.0 Ok"
    assert str(client.command("RCPT TO:<james@server1.example.com>")) == "250 2.1.5 Ok"
    assert client.command("DATA").code == 354
    return client


def senders(gateway: Gateway) -> list[str]:
    return [message.envelope.sender for message in gateway.messages().values()]


# -- SMTP smuggling --------------------------------------------------------------

SMUGGLED = (
    b"MAIL FROM:<smuggled@example.org>\r\n"
    b"RCPT TO:<james@server1.example.com>\r\n"
    b"DATA\r\n"
    b"Subject: smuggled\r\n"
    b"\r\n"
    b"smuggled body\r\n"
)

# Each fake end of data, as the smuggling papers list them (SEC Consult 2023),
# then the smuggled transaction, then the real end of data.
VARIANTS = {
    "<LF>.<LF>": b"\n.\n",
    "<LF>.<CR><LF>": b"\n.\r\n",
    "<CR>.<CR>": b"\r.\r",
    "<CR><LF>.<LF>": b"\r\n.\n",
    "bare <LF>": b"\n",
    "bare <CR>": b"\r",
}
# What the server answers at the real end of data: the protocol layer reads
# the message to <CRLF>.<CRLF> and refuses a body holding a bare LF or CR.
EXPECTED = {
    "<LF>.<LF>": "550 5.5.2 Error: bare <LF> received",
    "<LF>.<CR><LF>": "550 5.5.2 Error: bare <LF> received",
    "<CR>.<CR>": "550 5.5.2 Error: bare <CR> received",
    "<CR><LF>.<LF>": "550 5.5.2 Error: bare <LF> received",
    "bare <LF>": "550 5.5.2 Error: bare <LF> received",
    "bare <CR>": "550 5.5.2 Error: bare <CR> received",
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_smuggling(gateway: Gateway, variant: str) -> None:
    sender = f"smuggler-{len(variant)}-{time.monotonic_ns()}@example.org"
    before = gateway.messages()
    mark = gateway.log_size()
    with open_transaction(gateway, sender) as client:
        client.send(
            b"Subject: carrier\r\n\r\nhello" + VARIANTS[variant] + SMUGGLED + b"\r\n.\r\nQUIT\r\n"
        )
        replies = [str(reply) for reply in client.replies_until_close()]
    # One transaction result, then the QUIT: no 250 2.1.0 for a smuggled MAIL,
    # no 354 for a smuggled DATA.
    assert replies == [EXPECTED[variant], "221 2.0.0 Bye"]
    assert new_messages(before, gateway) == {}
    assert "smuggled@example.org" not in senders(gateway)
    # The mail log is written once per event-loop turn: wait for the session's end.
    gateway.wait_for_log(r"disconnect from unknown\[127\.0\.0\.2\]", since=mark)
    log = gateway.log(mark)
    assert f"reject: END-OF-MESSAGE from unknown[127.0.0.2]: {EXPECTED[variant]}" in log
    assert "smuggled@example.org" not in log


def test_smuggling_control_message_is_accepted(gateway: Gateway) -> None:
    """The same dialogue with proper CRLFs: the carrier is queued, and so is
    the second transaction, executed as commands because it follows a real
    end of data."""
    before = gateway.messages()
    with open_transaction(gateway, "carrier@example.org") as client:
        client.send(b"Subject: carrier\r\n\r\nhello\r\n.\r\n" + SMUGGLED + b".\r\nQUIT\r\n")
        replies = client.replies_until_close()
    assert [reply.code for reply in replies] == [250, 250, 250, 354, 250, 221]
    fresh = new_messages(before, gateway)
    assert sorted(m.envelope.sender for m in fresh.values()) == [
        "carrier@example.org",
        "smuggled@example.org",
    ]


# -- STARTTLS -----------------------------------------------------------------------


def test_ehlo_advertises_starttls_and_size(gateway: Gateway) -> None:
    with gateway.smtp(OUTSIDE) as client:
        code, text = client.ehlo("client.test")
    assert code == 250
    assert text.decode().splitlines() == [
        HOSTNAME,
        "PIPELINING",
        f"SIZE {SIZE_LIMIT}",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
    ]


def test_transaction_over_tls(gateway: Gateway) -> None:
    before = gateway.messages()
    message = b"Subject: over TLS\r\n\r\nsecret\r\n"
    with gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.test")
        code, text = client.starttls(context=client_tls_context())
        assert (code, text) == (220, b"2.0.0 Ready to start TLS")
        code, text = client.ehlo("client.test")
        assert code == 250
        assert b"STARTTLS" not in text  # RFC 3207 4.2: not offered twice
        client.sendmail("tls@example.org", ["james@server1.example.com"], message)
    [(queue_id, queued)] = new_messages(before, gateway).items()
    assert queued.envelope.sender == "tls@example.org"
    received, rest = split_received(gateway.body(queue_id))
    assert received["proto"] == b"ESMTPS"
    assert rest == message


def test_the_stored_envelope_says_whether_the_body_can_go_out_unscanned(
    gateway: Gateway,
) -> None:
    before = gateway.messages()
    james = ["james@server1.example.com"]
    with gateway.smtp(OUTSIDE) as client:
        client.sendmail("plain@example.org", james, b"Subject: a\r\n\r\nno dots\r\n")
        client.sendmail("dotted@example.org", james, b"Subject: b\r\n\r\n.dot\r\n")
    ours = ("plain@example.org", "dotted@example.org")

    def flags() -> dict[str, bool]:
        # Ours only (an earlier test's message may show up late), and listed
        # once no queue-manager move is under way (journal to queue files, for
        # a retry): the flag travels with the envelope.
        fresh = [m.envelope for m in new_messages(before, gateway).values()]
        return {e.sender: e.plain_body for e in fresh if e.sender in ours}

    wait_until(lambda: len(flags()) == 2, 10)
    assert flags() == {"plain@example.org": True, "dotted@example.org": False}


def test_plaintext_pipelined_after_starttls_is_discarded(gateway: Gateway) -> None:
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        # CVE-2011-0411: commands injected after STARTTLS in the same packet.
        client.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.org>\r\n")
        assert str(client.reply()) == "220 2.0.0 Ready to start TLS"
        client.start_tls(client_tls_context())
        first = client.command("EHLO after.tls")
        # The first reply over TLS answers our EHLO, not the injected RSET or MAIL.
        assert first.code == 250 and first.lines[0] == HOSTNAME, first
        assert str(client.command("RCPT TO:<james@server1.example.com>")) == (
            "503 5.5.1 Error: need MAIL command"
        )
        assert str(client.command("MAIL FROM:<real@example.org>")) == "250 2.1.0 Ok"
        assert client.command("QUIT").code == 221


def test_a_failed_tls_handshake_ends_with_the_disconnect_line(gateway: Gateway) -> None:
    """Plaintext where the handshake should be: Postfix's three lines, the
    last with starttls counted as failed (it logged only the first)."""
    mark = gateway.log_size()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        assert str(client.command("STARTTLS")) == "220 2.0.0 Ready to start TLS"
        client.send(b"EHLO not.tls\r\n")
        assert client.replies_until_close() == []
    client_name = r"unknown\[127\.0\.0\.2\]"
    gateway.wait_for_log(rf"SSL_accept error from {client_name}: ", mark)
    gateway.wait_for_log(rf"lost connection after STARTTLS from {client_name}", mark)
    gateway.wait_for_log(rf"disconnect from {client_name} ehlo=1 starttls=0/1 commands=1/2$", mark)


def test_a_reset_right_after_the_message_is_logged_like_any_end(gateway: Gateway) -> None:
    """A client that resets the connection as soon as it sent the final dot:
    the message is taken (the 250 was due), and the session still ends with
    "lost connection after ..." and "disconnect" lines."""
    mark = gateway.log_size()
    client = open_transaction(gateway, "reset@example.org")
    client.send(b"Subject: reset\r\n\r\nbody\r\n.\r\n")
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.sock.close()
    client_name = r"unknown\[127\.0\.0\.2\]"
    gateway.wait_for_log(r"from=<reset@example\.org>, size=\d+, nrcpt=1 \(queue active\)", mark)
    gateway.wait_for_log(rf"lost connection after \S+ from {client_name}", mark)
    gateway.wait_for_log(rf"disconnect from {client_name} ehlo=1 mail=1 rcpt=1 data=1", mark)


def test_commands_sent_while_a_message_commits_wait_for_its_reply(gateway: Gateway) -> None:
    """RFC 2920: the next transaction may follow the final dot without waiting
    for its reply. Sent in writes of their own while the message is being made
    durable (two more clients connected, so the fdatasync leaves the event
    loop), those commands are kept and answered after the message's 250, in
    order, and the second message is stored too."""
    others = [gateway.raw(OUTSIDE) for _ in range(2)]
    for other in others:
        assert other.reply().code == 220
    client = open_transaction(gateway, "first@example.org")
    client.send(b"Subject: one\r\n\r\nbody\r\n.\r\n")
    client.send(b"MAIL FROM:<second@example.org>\r\n")
    client.send(b"RCPT TO:<james@server1.example.com>\r\n")
    client.send(b"DATA\r\n")
    first = str(client.reply())
    assert re.fullmatch(r"250 2\.0\.0 Ok: queued as \w+", first), first
    assert str(client.reply()) == "250 2.1.0 Ok"
    assert str(client.reply()) == "250 2.1.5 Ok"
    assert client.reply().code == 354
    client.send(b"Subject: two\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    second = str(client.reply())
    assert re.fullmatch(r"250 2\.0\.0 Ok: queued as \w+", second), second
    assert client.reply().code == 221
    assert {"first@example.org", "second@example.org"} <= set(senders(gateway))
    for other in others:
        other.sock.close()


def test_starttls_twice_is_refused(gateway: Gateway) -> None:
    with gateway.smtp(OUTSIDE) as client:
        client.ehlo("client.test")
        client.starttls(context=client_tls_context())
        client.ehlo("client.test")
        assert client.docmd("STARTTLS") == (554, b"5.5.1 Error: TLS already active")


# -- SIZE -----------------------------------------------------------------------------


def test_size_parameter_over_the_limit(gateway: Gateway) -> None:
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        reply = client.command("MAIL FROM:<a@b> SIZE=999999999")
        assert str(reply) == "552 5.3.4 Message size exceeds fixed limit"
        assert str(client.command(f"MAIL FROM:<a@b> SIZE={SIZE_LIMIT}")) == "250 2.1.0 Ok"


def test_body_over_the_limit_is_refused_at_end_of_data(gateway: Gateway) -> None:
    before = gateway.messages()
    mark = gateway.log_size()
    line = b"x" * 78 + b"\r\n"
    body = b"Subject: big\r\n\r\n" + line * (SIZE_LIMIT // len(line) + 10)
    with open_transaction(gateway, "big@example.org") as client:
        client.send(body + b".\r\n")
        assert str(client.reply()) == "552 5.3.4 Error: message file too big"
        # The session goes on: a message within the limit is taken.
        assert client.command("MAIL FROM:<small@example.org>").code == 250
        assert client.command("RCPT TO:<james@server1.example.com>").code == 250
        assert client.command("DATA").code == 354
        client.send(line * 100 + b".\r\n")
        assert client.reply().code == 250
        assert client.command("QUIT").code == 221
    fresh = new_messages(before, gateway)
    assert [m.envelope.sender for m in fresh.values()] == ["small@example.org"]
    gateway.wait_for_log(
        r"reject: END-OF-MESSAGE from unknown\[127\.0\.0\.2\]: 552 5\.3\.4 Error: message file "
        r"too big; from=<big@example\.org>",
        since=mark,
    )
    # Nothing of the refused message stays behind, not even in tmp/ or data/.
    # (The queue manager may be writing a deferral out through tmp/ right now.)
    wait_until(lambda: not list((gateway.spool_dir / "tmp").iterdir()), 10)
    # Small messages live in the journal rather than data/: every body file left
    # belongs to a message in the queue.
    assert {p.name for p in (gateway.spool_dir / "data").iterdir()} <= set(gateway.messages())


# -- lines, sequence, QUIT ------------------------------------------------------------


def test_over_long_command_line(gateway: Gateway) -> None:
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        # RFC 5321 4.5.3.1.4: 512 octets for a command line...
        assert str(client.command("NOOP " + "x" * 600)) == "500 5.5.2 Error: line too long"
        # ... and this server allows 2048 for MAIL/RCPT with parameters.
        long_mail = "MAIL FROM:<a@example.org> ENVID=" + "x" * 2100
        assert str(client.command(long_mail)) == "500 5.5.2 Error: line too long"
        # No part of the long lines was read as a command.
        assert str(client.command("MAIL FROM:<a@example.org>")) == "250 2.1.0 Ok"
        assert client.command("QUIT").code == 221


def test_rcpt_before_mail(gateway: Gateway) -> None:
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        reply = client.command("RCPT TO:<james@server1.example.com>")
        assert str(reply) == "503 5.5.1 Error: need MAIL command"
        assert client.command("QUIT").code == 221


def test_commands_after_quit_get_nothing(gateway: Gateway) -> None:
    before = gateway.messages()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        client.send(
            b"EHLO client.test\r\nQUIT\r\nNOOP\r\nMAIL FROM:<after@example.org>\r\n"
            b"RCPT TO:<james@server1.example.com>\r\nDATA\r\nafter quit\r\n.\r\n"
        )
        replies = client.replies_until_close()
    assert [reply.code for reply in replies] == [250, 221]
    assert new_messages(before, gateway) == {}


def test_hard_error_limit(gateway: Gateway) -> None:
    """smtpd_hard_error_limit (20): the 20th error is followed by 421 and the end."""
    mark = gateway.log_size()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        client.send(b"EHLO client.test\r\n" + b"RCPT TO:<james@server1.example.com>\r\n" * 25)
        replies = [str(reply) for reply in client.replies_until_close()]
    need_mail = "503 5.5.1 Error: need MAIL command"
    assert replies[1:] == [need_mail] * 20 + [f"421 4.7.0 {HOSTNAME} Error: too many errors"]
    gateway.wait_for_log(r"too many errors after RCPT from unknown\[127\.0\.0\.2\]", mark)


def test_connection_limit_per_client(gateway: Gateway) -> None:
    """smtpd_client_connection_count_limit (50 by default) per client address."""
    clients = [gateway.raw(OUTSIDE) for _ in range(50)]
    try:
        for client in clients:
            assert client.reply().code == 220
        with gateway.raw(OUTSIDE) as extra:
            assert [str(r) for r in extra.replies_until_close()] == [
                f"421 4.7.0 {HOSTNAME} Error: too many connections from {OUTSIDE}"
            ]
        with gateway.raw(INSIDE) as other:  # another client is not affected
            assert other.reply().code == 220
    finally:
        for client in clients:
            client.close()


def _greeting(gateway: Gateway, source: str) -> tuple[RawClient, int]:
    client = gateway.raw(source)
    return client, client.reply().code


def _allowance(gateway: Gateway, source: str, attempts: int) -> list[int]:
    """The greeting codes of ``attempts`` connections held at once, then closed
    (the server hears of the close a moment later: poll with wait_until)."""
    opened = [_greeting(gateway, source) for _ in range(attempts)]
    for client, _ in opened:
        client.close()
    return [code for _, code in opened]


def test_connection_limit_counts_the_connections_of_every_worker(
    start_gateway: GatewayFactory,
) -> None:
    """Three workers, a limit of 4: the kernel spreads one client's connections
    over the workers, and still only 4 are let in (a count per worker would
    let in up to 12). Once they close, the client may connect again."""
    gateway = start_gateway(workers=3, smtpd_client_connection_count_limit=4)
    mark = gateway.log_size()
    opened = [_greeting(gateway, OUTSIDE) for _ in range(12)]
    try:
        codes = [code for _, code in opened]
        assert codes.count(220) == 4 and codes.count(421) == 8, codes
        # Connections went to more than one worker, so the count crossed them.
        pids = set(
            re.findall(r"smtpd\[(\d+)\]: (?:connect from|warning: Connection)", gateway.log(mark))
        )
        assert len(pids) > 1, gateway.log(mark)
    finally:
        for client, _ in opened:
            client.close()

    wait_until(lambda: _allowance(gateway, OUTSIDE, 5) == [220] * 4 + [421], timeout=10)


def test_a_crashed_worker_leaves_no_count_behind(start_gateway: GatewayFactory) -> None:
    """kill -9 of the worker that held a client's connections: its successor
    counts from zero (the master clears the dead worker's row), so the client
    is not refused for connections that no longer exist."""
    gateway = start_gateway(workers=1, smtpd_client_connection_count_limit=2)
    held = [_greeting(gateway, OUTSIDE) for _ in range(3)]
    assert [code for _, code in held] == [220, 220, 421]
    (worker,) = gateway.worker_processes()
    worker.kill()
    for client, _ in held:
        client.close()

    wait_until(lambda: gateway.log().count("listening on") >= 2, timeout=30)
    wait_until(lambda: _allowance(gateway, OUTSIDE, 3) == [220, 220, 421], timeout=10)


def test_connection_limit_holds_across_a_reload(start_gateway: GatewayFactory) -> None:
    """After SIGHUP the old workers finish their sessions beside the new ones:
    the client's connections to both count, and once the old ones have
    exited the client has its whole allowance again."""
    gateway = start_gateway(workers=1, smtpd_client_connection_count_limit=3)
    old = [_greeting(gateway, OUTSIDE) for _ in range(2)]
    assert [code for _, code in old] == [220, 220]
    mark = gateway.log_size()
    gateway.reload()
    gateway.wait_for_log(r"reload: new worker\(s\)", mark, timeout=30)
    new = [_greeting(gateway, OUTSIDE) for _ in range(2)]
    try:
        assert [code for _, code in new] == [220, 421]
    finally:
        for client, _ in new + old:
            client.close()
    wait_until(lambda: _allowance(gateway, OUTSIDE, 4) == [220] * 3 + [421], timeout=30)


# -- timeouts ---------------------------------------------------------------------------


def test_idle_clients_are_disconnected(gateway: Gateway) -> None:
    """Silent for smtpd_timeout after the greeting, after EHLO, in the middle of
    DATA: 421 4.4.2 and the connection is closed. (The three clients wait at
    the same time.)"""
    before = gateway.messages()
    mark = gateway.log_size()
    after_greeting = gateway.raw(INSIDE)
    assert after_greeting.reply().code == 220
    after_ehlo = gateway.raw(INSIDE)
    assert after_ehlo.reply().code == 220
    assert after_ehlo.command("EHLO client.test").code == 250
    in_data = open_transaction(gateway, "slow@example.org")
    in_data.send(b"Subject: slow\r\n\r\nhalf a mess")
    started = time.monotonic()
    timeout = f"421 4.4.2 {HOSTNAME} Error: timeout exceeded"
    for client in (after_greeting, after_ehlo, in_data):
        with client:
            assert [str(reply) for reply in client.replies_until_close()] == [timeout]
    waited = time.monotonic() - started
    assert TIMEOUT - 0.5 <= waited <= TIMEOUT + 3
    for after, ip in (("CONNECT", INSIDE), ("EHLO", INSIDE), ("DATA", OUTSIDE)):
        gateway.wait_for_log(rf"timeout after {after} from unknown\[{re.escape(ip)}\]", since=mark)
    assert new_messages(before, gateway) == {}


def test_the_gateway_still_takes_mail(gateway: Gateway) -> None:
    """After all of the above, a plain message from the internet."""
    before = gateway.messages()
    with gateway.smtp(OUTSIDE) as client:
        client.sendmail("last@example.org", ["nobody@server1.example.com"], b"Subject: x\r\n\r\n")
    [queued] = new_messages(before, gateway).values()
    assert final_recipients(queued) == ["james@example.com"]


def test_past_the_soft_error_limit_every_reply_waits(start_gateway: GatewayFactory) -> None:
    """smtpd_soft_error_limit / smtpd_error_sleep_time (Postfix: 10 and 1 s, here
    2 and 2 s): from the third error on, each reply of the session waits two
    seconds, an accepted message forgives the errors, and a client that leaves
    while it waits is logged as any other lost connection."""
    gateway = start_gateway(smtpd_soft_error_limit=2, smtpd_error_sleep_time=2)
    unknown = b"RCPT TO:<nobody@closed.example.net>\r\n"

    def timed(client: RawClient, command: bytes) -> tuple[int, float]:
        started = time.monotonic()
        client.send(command)
        return client.reply().code, time.monotonic() - started

    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert timed(client, b"EHLO client.test\r\n")[0] == 250
        assert timed(client, b"MAIL FROM:<s@example.org>\r\n")[0] == 250
        for _ in range(2):  # within the soft limit: at once
            code, took = timed(client, unknown)
            assert code == 550 and took < 1.0
        code, took = timed(client, unknown)  # the third error waits
        assert code == 550 and took >= 1.95
        code, took = timed(client, b"RCPT TO:<james@server1.example.com>\r\n")  # so does all
        assert code == 250 and took >= 1.95
        assert timed(client, b"DATA\r\n")[0] == 354
        code, took = timed(client, b"Subject: x\r\n\r\nhello\r\n.\r\n")
        assert code == 250  # accepted: the errors are forgiven
        code, took = timed(client, b"MAIL FROM:<s@example.org>\r\n")
        assert code == 250 and took < 1.0
        # Pipelined errors wait 2 s each beyond the limit: 4 errors, 2 beyond.
        started = time.monotonic()
        client.send(unknown * 4)
        assert [client.reply().code for _ in range(4)] == [550] * 4
        assert time.monotonic() - started >= 3.95

    mark = gateway.log_size()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        client.send(b"EHLO client.test\r\nMAIL FROM:<s@example.org>\r\n" + unknown * 3)
        time.sleep(0.3)  # the replies wait; the client does not
    gateway.wait_for_log(r"lost connection after RCPT from unknown\[127\.0\.0\.2\]", mark)
    gateway.wait_for_log(r"disconnect from unknown\[127\.0\.0\.2\] ehlo=1 mail=1 rcpt=0/3", mark)


def test_the_error_sleep_holds_for_a_pipelined_quit_message_or_starttls(
    start_gateway: GatewayFactory, tls_files: tuple[Path, Path]
) -> None:
    """A QUIT, a whole message or a STARTTLS pipelined after the errors sent
    the replies at once, skipping the wait (and an accepted message forgives
    the errors, so a harvester could probe at full speed): the replies before
    it wait as at the end of any batch, then it is handled."""
    cert, key = tls_files
    gateway = start_gateway(
        smtpd_soft_error_limit=2,
        smtpd_error_sleep_time=1,
        smtpd_tls_cert_file=str(cert),
        smtpd_tls_key_file=str(key),
    )
    opening = b"EHLO client.test\r\nMAIL FROM:<s@example.org>\r\n"
    unknown = b"RCPT TO:<nobody@closed.example.net>\r\n" * 4  # 2 beyond the limit

    def batch(client: RawClient, data: bytes, count: int) -> tuple[list[int], float]:
        started = time.monotonic()
        client.send(data)
        codes = [client.reply().code for _ in range(count)]
        return codes, time.monotonic() - started

    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        codes, took = batch(client, opening + unknown + b"QUIT\r\n", 7)
        assert codes == [250, 250, 550, 550, 550, 550, 221] and took >= 1.95
        assert client.replies_until_close() == []

    before = gateway.messages()
    message = b"RCPT TO:<james@server1.example.com>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        codes, took = batch(client, opening + unknown + message, 9)
        assert codes == [250, 250, 550, 550, 550, 550, 250, 354, 250] and took >= 1.95
    assert len(new_messages(before, gateway)) == 1

    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        codes, took = batch(client, opening + unknown + b"RSET\r\nSTARTTLS\r\n", 8)
        assert codes == [250, 250, 550, 550, 550, 550, 250, 220] and took >= 1.95
        client.start_tls(client_tls_context())
        assert client.command("EHLO after.tls").code == 250


def test_junk_verbs_are_counted_as_unknown(gateway: Gateway) -> None:
    """A client's made-up verbs are "unknown" in the disconnect line (as Postfix
    counts them): they cannot lengthen log lines or add metric labels."""
    mark = gateway.log_size()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        for verb in ("XYZZY", "FOO", "ETRN"):
            assert client.command(f"{verb} bar").code == 502
        assert client.command("NOOP").code == 250
        assert client.command("QUIT").code == 221
    gateway.wait_for_log(
        r"disconnect from unknown\[127\.0\.0\.2\] unknown=0/3 noop=1 quit=1 commands=2/5", mark
    )


def test_an_unqualified_sender_is_refused_and_a_source_route_dropped(gateway: Gateway) -> None:
    """MAIL FROM:<u> was taken and relayed as it was (next hops refuse it,
    bounces cannot reach it): 504 as Postfix's reject_non_fqdn_sender says.
    A source route is dropped (RFC 5321 3.3): the sender is its mailbox."""
    mark = gateway.log_size()
    with gateway.raw(OUTSIDE) as client:
        assert client.reply().code == 220
        assert client.command("EHLO client.test").code == 250
        assert str(client.command("MAIL FROM:<MAILER-DAEMON>")) == (
            "504 5.5.2 <MAILER-DAEMON>: Sender address rejected: need fully-qualified address"
        )
        assert client.command("MAIL FROM:<>").code == 250  # the null sender is not unqualified
        assert client.command("RSET").code == 250
        reply = client.command("MAIL FROM:<@a.example,@b.example:routed@example.org>")
        assert str(reply) == "250 2.1.0 Ok"
        assert client.command("RCPT TO:<james@server1.example.com>").code == 250
        assert client.command("DATA").code == 354
        assert client.command(b"Subject: routed\r\n\r\nbody\r\n.").code == 250
        assert client.command("QUIT").code == 221
    gateway.wait_for_log(
        r"NOQUEUE: reject: MAIL from unknown\[127\.0\.0\.2\]: 504 5\.5\.2 <MAILER-DAEMON>", mark
    )
    gateway.wait_for_log(r"from=<routed@example\.org>, size=\d+, nrcpt=1", mark)
