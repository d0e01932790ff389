"""Connection reuse and concurrency caps, counted on the peer's side."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from mxgate.delivery import Courier, PoolConfig, StaticResolver, Status

from .peers import Gauge, PeerScript, ScriptedPeer
from .util import Results, body, config, envelope, recipients, route, run

NO_DNS = StaticResolver()


async def send(courier: Courier, port: int, *addresses: str) -> Results:
    rcpts = recipients(*addresses)
    return await courier.deliver(route(f"smtp:[127.0.0.1]:{port}"), envelope(rcpts), rcpts, body())


def test_two_messages_one_connection() -> None:
    async def scenario() -> tuple[ScriptedPeer, Results, Results, Courier]:
        async with ScriptedPeer() as peer:
            courier = Courier(config(), NO_DNS)
            first = await send(courier, peer.port, "a@d.test")
            second = await send(courier, peer.port, "b@d.test")
            await courier.close()
            return peer, first, second, courier

    peer, first, second, courier = run(scenario())
    assert first["a@d.test"].status is Status.DELIVERED
    assert second["b@d.test"].status is Status.DELIVERED
    assert peer.accepts == 1 and len(peer.messages) == 2
    verbs = [c.split()[0] for c in peer.sessions[0].commands]
    # No RSET between them: the transaction ended with the dot (RFC 5321 4.1.1.4).
    assert verbs == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA", "QUIT"]
    assert (courier.pool.opened, courier.pool.reused) == (1, 1)
    # Reused: no DNS, connect or EHLO in the second attempt's setup time.
    assert second["b@d.test"].timing.setup < first["a@d.test"].timing.setup + 0.5


def test_idle_connections_expire() -> None:
    async def scenario() -> ScriptedPeer:
        async with ScriptedPeer() as peer:
            courier = Courier(config(pool=PoolConfig(idle_timeout=0.1)), NO_DNS)
            await send(courier, peer.port, "a@d.test")
            await asyncio.sleep(0.3)
            assert courier.pool.idle_count == 0
            await send(courier, peer.port, "b@d.test")
            await courier.close()
            return peer

    peer = run(scenario())
    assert peer.accepts == 2
    assert peer.sessions[0].commands[-1] == "QUIT"  # closed politely on expiry


def test_reuse_count_limit() -> None:
    async def scenario() -> ScriptedPeer:
        async with ScriptedPeer() as peer:
            courier = Courier(config(pool=PoolConfig(max_reuse=2)), NO_DNS)
            for i in range(5):
                await send(courier, peer.port, f"u{i}@d.test")
            await courier.close()
            return peer

    peer = run(scenario())
    assert peer.accepts == 3
    assert [len(s.messages) for s in peer.sessions] == [2, 2, 1]


@pytest.mark.parametrize("noticed", [True, False], ids=["eof-seen", "eof-not-seen-yet"])
def test_a_connection_the_server_closed_while_idle_is_replaced(noticed: bool) -> None:
    """Seen closed in the pool, or only when the reused session's MAIL finds
    the connection gone: either way a new connection delivers."""

    async def scenario() -> tuple[ScriptedPeer, Results]:
        async with ScriptedPeer() as peer:
            courier = Courier(config(), NO_DNS)
            await send(courier, peer.port, "a@d.test")
            peer.drop_all()
            if noticed:
                await asyncio.sleep(0.05)
            second = await send(courier, peer.port, "b@d.test")
            await courier.close()
            return peer, second

    peer, second = run(scenario())
    assert second["b@d.test"].status is Status.DELIVERED
    assert peer.accepts == 2


def test_a_reused_connection_that_answers_421_is_replaced() -> None:
    """The server timed the idle connection out just as we reused it: its
    421 fails the reused session before the body; a new one delivers."""
    said: list[str] = []

    def mail(_arg: str) -> str:
        said.append("421 4.4.2 peer.test Error: timeout exceeded" if len(said) == 1 else "250 Ok")
        return said[-1]

    async def scenario() -> tuple[ScriptedPeer, Results]:
        async with ScriptedPeer(PeerScript(mail=mail)) as peer:
            courier = Courier(config(), NO_DNS)
            await send(courier, peer.port, "a@d.test")
            second = await send(courier, peer.port, "b@d.test")
            await courier.close()
            return peer, second

    peer, second = run(scenario())
    assert second["b@d.test"].status is Status.DELIVERED
    assert peer.accepts == 2
    # This peer went on after its 421 (a real one hangs up): the pipelined
    # DATA got a 354, which the client ends with an empty message.
    assert [(m.rcpts, bool(m.data)) for m in peer.sessions[1].messages] == [(["b@d.test"], True)]
    assert all(not m.data for m in peer.sessions[0].messages[1:])
    assert [c.split()[0] for c in peer.sessions[0].commands][:5] == [
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        "MAIL",
    ]


def test_per_destination_concurrency_cap() -> None:
    async def scenario() -> tuple[ScriptedPeer, list[Results]]:
        async with ScriptedPeer(PeerScript(dot_delay=0.1)) as peer:
            courier = Courier(config(pool=PoolConfig(destination_concurrency=3)), NO_DNS)
            results = await asyncio.gather(
                *(send(courier, peer.port, f"u{i}@d.test") for i in range(12))
            )
            await courier.close()
            return peer, results

    peer, results = run(scenario())
    assert all(r.status is Status.DELIVERED for res in results for r in res.values())
    assert peer.max_open == 3  # never more, and the cap was reached
    assert peer.accepts == 3  # the three connections carried all twelve


def test_global_concurrency_cap_across_destinations() -> None:
    async def scenario() -> tuple[Gauge, list[Results]]:
        gauge = Gauge()
        one = await ScriptedPeer(PeerScript(dot_delay=0.1, gauge=gauge)).start()
        two = await ScriptedPeer(PeerScript(dot_delay=0.1, gauge=gauge)).start()
        pool = PoolConfig(destination_concurrency=5, total_concurrency=4)
        courier = Courier(config(pool=pool), NO_DNS)
        jobs = [send(courier, p.port, f"u{i}@d.test") for i in range(8) for p in (one, two)]
        results = await asyncio.gather(*jobs)
        await courier.close()
        await one.stop()
        await two.stop()
        return gauge, results

    gauge, results = run(scenario())
    assert len(results) == 16
    assert gauge.most == 4


def test_a_cancelled_delivery_gives_its_slot_back() -> None:
    async def scenario() -> Courier:
        async with ScriptedPeer(PeerScript(dot_delay=5.0)) as peer:
            courier = Courier(config(), NO_DNS)
            task = asyncio.create_task(send(courier, peer.port, "a@d.test"))
            while not peer.messages:
                await asyncio.sleep(0.01)
            assert courier.pool.open_count == 1
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await courier.close()
            return courier

    courier = run(scenario())
    assert courier.pool.open_count == 0 and courier.pool.idle_count == 0
