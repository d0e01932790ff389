"""The courier against real loopback peers (scripted SMTP/LMTP servers)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from mxgate.core.envelope import DsnRet, Notify, Recipient
from mxgate.core.outcome import Bounced, Deferred, Delivered
from mxgate.delivery import Courier, CourierConfig, StaticResolver, Status, Timeouts

from .peers import PeerScript, ScriptedPeer, always
from .util import BODY, Results, body, config, envelope, mx_route, recipients, route, run

NO_DNS = StaticResolver()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def deliver_once(
    peer_script: PeerScript,
    rcpts: list[Recipient],
    courier_config: CourierConfig | None = None,
    **env: Any,
) -> tuple[ScriptedPeer, Results]:
    async with ScriptedPeer(peer_script) as peer:
        courier = Courier(courier_config or config(), NO_DNS)
        try:
            results = await courier.deliver(
                route(f"smtp:[127.0.0.1]:{peer.port}"), envelope(rcpts, **env), rcpts, body()
            )
        finally:
            await courier.close()
    return peer, results


def test_delivery_with_dsn_parameters_and_relay_details() -> None:
    rcpts = recipients("u@d.test", notify=frozenset({Notify.SUCCESS, Notify.FAILURE}))
    peer, results = run(deliver_once(PeerScript(), rcpts, ret=DsnRet.HDRS, envid="q+1"))
    result = results["u@d.test"]
    assert isinstance(result.outcome, Delivered) and result.status is Status.DELIVERED
    assert result.relay_text == f"127.0.0.1[127.0.0.1]:{peer.port}"
    assert result.text.startswith("host 127.0.0.1[127.0.0.1] said: 250 2.0.0 Ok: queued as PEER1")
    assert result.dsn and not result.tls
    assert 0 <= result.timing.setup < 2 and 0 <= result.timing.transmission < 2
    [message] = peer.messages
    assert message.data == BODY  # dot-stuffed on the wire, intact after the peer
    commands = peer.sessions[0].commands
    assert commands[0] == "EHLO gw.test"
    assert commands[1] == f"MAIL FROM:<s@src.test> SIZE={len(BODY)} RET=HDRS ENVID=q+2B1"
    assert commands[2] == "RCPT TO:<u@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@d.test"
    assert commands[-1] == "QUIT"  # courier.close() said goodbye to the idle connection


def test_pipelining_sends_mail_rcpts_and_data_in_one_write() -> None:
    peer, _ = run(deliver_once(PeerScript(), recipients("a@d.test", "b@d.test")))
    # The peer reads line by line, so the group shows as consecutive reads
    # received before any reply could have been read by the client: check
    # the order, which is what RFC 2920 fixes.
    assert [c.split(":")[0] for c in peer.sessions[0].commands[1:5]] == [
        "MAIL FROM",
        "RCPT TO",
        "RCPT TO",
        "DATA",
    ]


def test_per_recipient_replies_at_rcpt() -> None:
    def rcpt(arg: str) -> str:
        if "bad@" in arg:
            return "550 5.1.1 <bad@d.test>: Recipient address rejected: User unknown"
        if "grey@" in arg:
            return "450 4.2.0 <grey@d.test>: Recipient address rejected: Greylisted"
        return "250 2.1.5 Ok"

    rcpts = recipients("ok@d.test", "bad@d.test", "grey@d.test")
    peer, results = run(deliver_once(PeerScript(rcpt=rcpt), rcpts))
    assert {a: r.status for a, r in results.items()} == {
        "ok@d.test": Status.DELIVERED,
        "bad@d.test": Status.BOUNCED,
        "grey@d.test": Status.DEFERRED,
    }
    assert results["bad@d.test"].text == (
        "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <bad@d.test>: Recipient address rejected: "
        "User unknown (in reply to RCPT TO command)"
    )
    assert peer.messages[0].rcpts == ["ok@d.test"]


def test_end_of_data_reply_applies_to_every_accepted_recipient() -> None:
    script = PeerScript(
        rcpt=lambda a: "550 5.1.1 no" if "bad@" in a else "250 2.1.5 Ok",
        dot=always("554 5.7.1 Message rejected as spam"),
    )
    _, results = run(deliver_once(script, recipients("a@d.test", "b@d.test", "bad@d.test")))
    assert {
        a: (r.reply.code, r.text.endswith("(in reply to end of DATA command)"))
        for a, r in results.items()
    } == {
        "a@d.test": (554, True),
        "b@d.test": (554, True),
        "bad@d.test": (550, False),
    }


def test_120_recipients_go_in_transactions_of_50_on_one_connection() -> None:
    rcpts = recipients(*(f"user{i}@d.test" for i in range(120)))
    peer, results = run(deliver_once(PeerScript(), rcpts))
    assert len(results) == 120 and all(r.status is Status.DELIVERED for r in results.values())
    assert [len(m.rcpts) for m in peer.messages] == [50, 50, 20]
    assert peer.accepts == 1
    assert sorted(r for m in peer.messages for r in m.rcpts) == sorted(r.address for r in rcpts)


def test_recipient_limit_is_configurable() -> None:
    peer, _ = run(
        deliver_once(
            PeerScript(), recipients("a@d.test", "b@d.test", "c@d.test"), config(recipient_limit=2)
        )
    )
    assert [len(m.rcpts) for m in peer.messages] == [2, 1]


async def two_mx(
    first: PeerScript | None, second: PeerScript, rcpts: list[Recipient], **cfg: Any
) -> tuple[ScriptedPeer | None, ScriptedPeer, Results, int]:
    """MX 10 -> 127.0.0.2, MX 20 -> 127.0.0.1, same port; ``first`` None
    means nothing listens on 127.0.0.2 (connection refused)."""
    port = free_port()
    backup = await ScriptedPeer(second).start(host="127.0.0.1", port=port)
    primary = await ScriptedPeer(first).start(host="127.0.0.2", port=port) if first else None
    resolver = StaticResolver(
        mx={"d.test": [(10, "mx1.d.test"), (20, "mx2.d.test")]},
        a={"mx1.d.test": ["127.0.0.2"], "mx2.d.test": ["127.0.0.1"]},
    )
    courier = Courier(config(**cfg), resolver)
    try:
        results = await courier.deliver(mx_route(port), envelope(rcpts), rcpts, body())
    finally:
        await courier.close()
        await backup.stop()
        if primary:
            await primary.stop()
    return primary, backup, results, port


def test_refused_primary_then_backup_delivers() -> None:
    _, backup, results, port = run(two_mx(None, PeerScript(), recipients("u@d.test")))
    assert results["u@d.test"].status is Status.DELIVERED
    assert results["u@d.test"].relay_text == f"mx2.d.test[127.0.0.1]:{port}"
    assert backup.accepts == 1


def test_every_server_refused_defers_with_postfix_wording() -> None:
    async def scenario() -> tuple[int, Results]:
        port = free_port()
        resolver = StaticResolver(
            a={"mx.d.test": ["127.0.0.1"]}, mx={"d.test": [(10, "mx.d.test")]}
        )
        courier = Courier(config(), resolver)
        return port, await courier.deliver(
            mx_route(port), envelope(recipients("u@d.test")), recipients("u@d.test"), body()
        )

    port, results = run(scenario())
    result = results["u@d.test"]
    assert isinstance(result.outcome, Deferred)
    assert result.reply.enhanced == "4.4.1"
    assert result.reply.text == f"connect to mx.d.test[127.0.0.1]:{port}: Connection refused"
    assert result.relay is None


def test_4xx_and_5xx_greetings_skip_to_the_next_server() -> None:
    for greeting in ("421 4.3.2 busy", "554 5.7.1 go away"):
        primary, backup, results, _ = run(
            two_mx(PeerScript(greeting=greeting), PeerScript(), recipients("u@d.test"))
        )
        assert primary is not None and primary.accepts == 1
        assert backup.accepts == 1 and results["u@d.test"].status is Status.DELIVERED, greeting


def test_bad_greeting_on_the_last_server_defers() -> None:
    _, results = run(
        deliver_once(PeerScript(greeting="554 5.7.1 no mail from you"), recipients("u@d.test"))
    )
    result = results["u@d.test"]
    assert isinstance(result.outcome, Deferred) and result.reply.enhanced == "4.7.1"
    assert "refused to talk to me: 554 5.7.1 no mail from you" in result.reply.text


def test_mail_4xx_tries_the_next_server_but_rcpt_4xx_does_not() -> None:
    busy = PeerScript(mail=always("451 4.3.0 try later"))
    primary, backup, results, _ = run(two_mx(busy, PeerScript(), recipients("u@d.test")))
    assert results["u@d.test"].status is Status.DELIVERED and backup.accepts == 1
    assert primary is not None and primary.sessions[0].commands[-1] == "QUIT"
    grey = PeerScript(rcpt=always("450 4.2.0 greylisted"))
    _, backup, results, _ = run(two_mx(grey, PeerScript(), recipients("u@d.test")))
    assert results["u@d.test"].status is Status.DEFERRED and backup.accepts == 0


def test_helo_fallback_sends_no_extensions() -> None:
    rcpts = recipients("u@d.test", notify=frozenset({Notify.SUCCESS}))
    peer, results = run(
        deliver_once(PeerScript(ehlo_reply="502 5.5.2 Error: command not recognized"), rcpts)
    )
    assert results["u@d.test"].status is Status.DELIVERED and not results["u@d.test"].dsn
    commands = peer.sessions[0].commands
    assert commands[:4] == [
        "EHLO gw.test",
        "HELO gw.test",
        "MAIL FROM:<s@src.test>",
        "RCPT TO:<u@d.test>",
    ]


def test_greeting_timeout() -> None:
    fast = config(timeouts=Timeouts(connect=1, greeting=0.3, command=1, data=1))
    _, results = run(deliver_once(PeerScript(greeting_delay=1.0), recipients("u@d.test"), fast))
    reply = results["u@d.test"].reply
    assert reply.enhanced == "4.4.2"
    assert reply.text == (
        "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server "
        "greeting"
    )


def test_end_of_data_timeout_warns_of_duplicates() -> None:
    fast = config(timeouts=Timeouts(connect=1, greeting=1, command=1, data=0.3))
    _, results = run(deliver_once(PeerScript(dot_delay=1.0), recipients("u@d.test"), fast))
    reply = results["u@d.test"].reply
    assert results["u@d.test"].status is Status.DEFERRED and reply.enhanced == "4.4.2"
    assert reply.text.endswith(
        "timed out while sending end of data -- message may be sent more than once"
    )


def test_lost_connection_at_data() -> None:
    _, results = run(deliver_once(PeerScript(drop_at="DATA"), recipients("u@d.test")))
    reply = results["u@d.test"].reply
    assert reply.enhanced == "4.4.2"
    assert reply.text == "lost connection with 127.0.0.1[127.0.0.1] while sending DATA command"


@pytest.mark.parametrize("answer", ["250 2.0.0 Ok", "220 weird"])
def test_a_positive_reply_to_data_is_no_delivery(answer: str) -> None:
    # Only 354 may answer DATA (RFC 5321 4.3.2): the body never went, so the
    # recipient is deferred, never "sent".
    peer, results = run(deliver_once(PeerScript(data=answer), recipients("u@d.test")))
    result = results["u@d.test"]
    assert result.status is Status.DEFERRED, result.text
    assert result.reply.enhanced == "4.5.0"
    assert f"unexpected reply to DATA, 354 expected: {answer}" in result.text
    assert all(not s.messages for s in peer.sessions)


def test_message_over_the_servers_size_limit_bounces_before_mail() -> None:
    peer, results = run(
        deliver_once(PeerScript(extensions=("PIPELINING", "SIZE 10")), recipients("u@d.test"))
    )
    assert isinstance(results["u@d.test"].outcome, Bounced)
    assert results["u@d.test"].reply.enhanced == "5.3.4"
    assert not any(c.startswith("MAIL") for c in peer.sessions[0].commands)


def test_smtputf8_needed_but_not_offered_bounces() -> None:
    rcpts = recipients("jösé@d.test")
    _, results = run(deliver_once(PeerScript(), rcpts, smtputf8=True))
    assert results["jösé@d.test"].reply.enhanced == "5.6.7"
    peer, results = run(
        deliver_once(PeerScript(extensions=("SMTPUTF8", "8BITMIME")), rcpts, smtputf8=True)
    )
    assert results["jösé@d.test"].status is Status.DELIVERED
    assert peer.sessions[0].commands[1] == "MAIL FROM:<s@src.test> SMTPUTF8"
    # With DSN, the original recipient goes as RFC 6533's utf-8 type (it was
    # "rfc822;" followed by the xtext of its UTF-8 bytes).
    peer, results = run(
        deliver_once(
            PeerScript(extensions=("SMTPUTF8", "8BITMIME", "DSN")),
            recipients("jösé+x=y@d.test"),
            smtputf8=True,
        )
    )
    assert results["jösé+x=y@d.test"].status is Status.DELIVERED
    assert peer.sessions[0].commands[2] == (
        "RCPT TO:<jösé+x=y@d.test> ORCPT=utf-8;j\\x{F6}s\\x{E9}\\x{2B}x\\x{3D}y@d.test"
    )


def test_lmtp_over_tcp_gives_one_reply_per_recipient() -> None:
    script = PeerScript(
        lmtp=True,
        greeting="220 lmtp.test LMTP ready",
        rcpt=lambda a: (
            "550 5.1.1 <gone@d.test> User doesn't exist" if "gone@" in a else "250 2.1.5 Ok"
        ),
        lmtp_dot=lambda r: (
            "452 4.2.2 <full@d.test> Quota exceeded"
            if r.startswith("full@")
            else f"250 2.0.0 <{r}> Saved"
        ),
    )

    async def scenario() -> tuple[ScriptedPeer, Results]:
        async with ScriptedPeer(script) as peer:
            courier = Courier(config(), NO_DNS)
            rcpts = recipients("a@d.test", "gone@d.test", "full@d.test", "b@d.test")
            results = await courier.deliver(
                route(f"lmtp:[127.0.0.1]:{peer.port}"), envelope(rcpts), rcpts, body()
            )
            await courier.close()
            return peer, results

    peer, results = run(scenario())
    assert {a: r.reply.line() for a, r in results.items()} == {
        "a@d.test": "250 2.0.0 <a@d.test> Saved",
        "gone@d.test": "550 5.1.1 <gone@d.test> User doesn't exist",
        "full@d.test": "452 4.2.2 <full@d.test> Quota exceeded",
        "b@d.test": "250 2.0.0 <b@d.test> Saved",
    }
    assert peer.sessions[0].commands[0] == "LHLO gw.test"


def test_lmtp_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "lmtp.sock")

    async def scenario() -> tuple[ScriptedPeer, Results, Results]:
        peer = await ScriptedPeer(PeerScript(lmtp=True)).start(unix_path=path)
        courier = Courier(config(), NO_DNS)
        rcpts = recipients("a@d.test", "b@d.test")
        try:
            first = await courier.deliver(
                route(f"lmtp:unix:{path}"), envelope(rcpts), rcpts, body()
            )
            second = await courier.deliver(
                route(f"lmtp:unix:{path}"), envelope(rcpts), rcpts, body()
            )
        finally:
            await courier.close()
            await peer.stop()
        return peer, first, second

    peer, first, second = run(scenario())
    assert all(r.status is Status.DELIVERED for r in (*first.values(), *second.values()))
    assert first["a@d.test"].relay_text == f"localhost[{path}]"
    assert peer.accepts == 1 and len(peer.messages) == 2  # reused


def test_missing_unix_socket_defers(tmp_path: Path) -> None:
    rcpts = recipients("a@d.test")
    path = tmp_path / "nothing.sock"
    results = run(
        Courier(config(), NO_DNS).deliver(
            route(f"lmtp:unix:{path}"), envelope(rcpts), rcpts, body()
        )
    )
    reply = results["a@d.test"].reply
    assert (
        reply.enhanced == "4.4.1" and reply.text == f"connect to {path}: No such file or directory"
    )


def test_routes_that_need_no_connection() -> None:
    rcpts = recipients("a@d.test")
    courier = Courier(config(), NO_DNS)
    bounce = run(courier.deliver(route("error:5.1.1 mailbox gone"), envelope(rcpts), rcpts, body()))
    assert (
        isinstance(bounce["a@d.test"].outcome, Bounced)
        and bounce["a@d.test"].reply.enhanced == "5.1.1"
    )
    retry = run(courier.deliver(route("retry:maintenance"), envelope(rcpts), rcpts, body()))
    assert isinstance(retry["a@d.test"].outcome, Deferred)
    drop = run(courier.deliver(route("discard:spam trap"), envelope(rcpts), rcpts, body()))
    assert isinstance(drop["a@d.test"].outcome, Delivered)


def test_unresolvable_domain_bounces_everyone() -> None:
    rcpts = recipients("a@nx.test", "b@nx.test")
    results = run(Courier(config(), NO_DNS).deliver(route("smtp:"), envelope(rcpts), rcpts, body()))
    assert {r.reply.enhanced for r in results.values()} == {"5.1.2"}


def test_empty_nexthop_groups_recipients_by_domain() -> None:
    async def scenario() -> tuple[ScriptedPeer, Results]:
        async with ScriptedPeer() as peer:
            resolver = StaticResolver(
                mx={"one.test": [(10, "mx.one.test")], "two.test": [(10, "mx.two.test")]},
                a={"mx.one.test": ["127.0.0.1"], "mx.two.test": ["127.0.0.1"]},
            )
            courier = Courier(config(), resolver)
            rcpts = recipients("a@one.test", "b@two.test", "c@one.test")
            results = await courier.deliver(mx_route(peer.port), envelope(rcpts), rcpts, body())
            await courier.close()
            return peer, results

    peer, results = run(scenario())
    assert all(r.status is Status.DELIVERED for r in results.values())
    assert sorted(m.rcpts for m in peer.messages) == [["a@one.test", "c@one.test"], ["b@two.test"]]
    assert results["b@two.test"].relay_text.startswith("mx.two.test[")


def test_a_server_that_greets_with_our_own_name_is_warned_about_and_used() -> None:
    """Most likely this gateway again, reached a way loop detection cannot
    see (a NAT not in proxy_interfaces): the mail log says so, as Postfix's
    smtp(8) does; the delivery goes on. Not for another name, nor over LMTP."""

    async def attempt(greeting: str, transport: str = "smtp") -> list[str]:
        warnings: list[str] = []
        async with ScriptedPeer(PeerScript(greeting=greeting, lmtp=transport == "lmtp")) as peer:
            courier = Courier(config(), NO_DNS, warn=warnings.append)
            rcpts = recipients("a@d.test")
            try:
                results = await courier.deliver(
                    route(f"{transport}:[127.0.0.1]:{peer.port}"), envelope(rcpts), rcpts, body()
                )
            finally:
                await courier.close()
        assert results["a@d.test"].status is Status.DELIVERED
        return warnings

    own = config().helo_name
    for name in (own, own.upper()):  # names compare without case
        [warning] = run(attempt(f"220 {name} ESMTP"))
        assert warning.startswith("host 127.0.0.1[127.0.0.1]:")
        assert warning.endswith(f" greeted me with my own hostname {name}")
    assert run(attempt("220 other.test ESMTP")) == []
    assert run(attempt(f"220 {own} LMTP", "lmtp")) == []
