"""STARTTLS by security level (Postfix smtp_tls_security_level)."""

from __future__ import annotations

import ssl

import pytest

from mxgate.delivery import Courier, DeliveryResult, StaticResolver, Status

from .peers import PeerScript, ScriptedPeer
from .util import BODY, body, config, envelope, recipients, route, run


def deliver(script: PeerScript, level: str) -> tuple[ScriptedPeer, DeliveryResult]:
    async def scenario() -> tuple[ScriptedPeer, DeliveryResult]:
        async with ScriptedPeer(script) as peer:
            courier = Courier(config(smtp_tls_security_level=level), StaticResolver())
            rcpts = recipients("u@d.test")
            results = await courier.deliver(
                route(f"smtp:[127.0.0.1]:{peer.port}"), envelope(rcpts), rcpts, body()
            )
            await courier.close()
            return peer, results["u@d.test"]

    return run(scenario())


@pytest.mark.parametrize("level", ["may", "encrypt"])
def test_starttls_when_offered(server_tls: ssl.SSLContext, level: str) -> None:
    peer, result = deliver(PeerScript(tls=server_tls), level)
    assert result.status is Status.DELIVERED and result.tls
    session = peer.sessions[0]
    assert session.tls and session.messages[0].data == BODY
    # RFC 3207 4.2: EHLO again after the handshake.
    assert [c for c in session.commands if c.startswith("EHLO")] == ["EHLO gw.test"] * 2


def test_level_none_never_starts_tls(server_tls: ssl.SSLContext) -> None:
    peer, result = deliver(PeerScript(tls=server_tls), "none")
    assert result.status is Status.DELIVERED and not result.tls
    assert "STARTTLS" not in peer.sessions[0].commands


def test_may_without_starttls_is_plaintext() -> None:
    _, result = deliver(PeerScript(), "may")
    assert result.status is Status.DELIVERED and not result.tls


def test_may_falls_back_to_plaintext_after_a_failed_handshake() -> None:
    peer, result = deliver(
        PeerScript(tls=None, break_tls=True, extensions=("PIPELINING", "STARTTLS")), "may"
    )
    assert result.status is Status.DELIVERED and not result.tls
    assert peer.accepts == 2
    assert "STARTTLS" in peer.sessions[0].commands
    assert "STARTTLS" not in peer.sessions[1].commands


def test_may_continues_in_plaintext_when_starttls_is_refused(server_tls: ssl.SSLContext) -> None:
    script = PeerScript(
        tls=server_tls, starttls_reply="454 4.7.0 TLS not available due to local problem"
    )
    peer, result = deliver(script, "may")
    assert result.status is Status.DELIVERED and not result.tls and peer.accepts == 1


def test_encrypt_defers_when_tls_is_not_offered() -> None:
    peer, result = deliver(PeerScript(), "encrypt")
    assert result.status is Status.DEFERRED
    assert result.reply.enhanced.startswith("4.7.")
    assert "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]" in result.reply.text
    assert result.relay_text == f"127.0.0.1[127.0.0.1]:{peer.port}"  # reached, unlike a refusal
    assert peer.messages == []


def test_encrypt_defers_when_starttls_is_refused(server_tls: ssl.SSLContext) -> None:
    script = PeerScript(tls=server_tls, starttls_reply="454 4.7.0 TLS not available")
    peer, result = deliver(script, "encrypt")
    assert result.status is Status.DEFERRED and result.reply.enhanced.startswith("4.7.")
    assert peer.messages == []


def test_encrypt_defers_after_a_failed_handshake_without_plaintext_retry() -> None:
    peer, result = deliver(PeerScript(break_tls=True, extensions=("STARTTLS",)), "encrypt")
    assert result.status is Status.DEFERRED and result.reply.enhanced == "4.7.5"
    assert "Cannot start TLS: handshake failure" in result.reply.text
    assert peer.accepts == 1


def test_421_to_starttls_moves_on_even_with_may(server_tls: ssl.SSLContext) -> None:
    script = PeerScript(tls=server_tls, starttls_reply="421 4.3.2 Service shutting down")
    peer, result = deliver(script, "may")
    assert result.status is Status.DEFERRED and result.reply.code == 421
    assert result.text.endswith("(in reply to STARTTLS command)")
    assert peer.messages == []
