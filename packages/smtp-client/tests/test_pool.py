"""Connection reuse and the bound on connections, against the scripted server."""

from __future__ import annotations

import anyio
import pytest

from smtp_client import Client, Envelope, SmartHost, Status, Timeouts, TLSPolicy

from .conftest import Dialogue, Peer, scripted_server

pytestmark = pytest.mark.anyio

BODY = b"Subject: pool\r\n\r\nhi\r\n"
FAST = Timeouts(
    connect=5,
    greeting=5,
    command=5,
    mail=5,
    rcpt=5,
    data_init=5,
    data_block=5,
    data_end=5,
)


def envelope(*rcpts: str) -> Envelope:
    return Envelope.build("sender@client.test", rcpts or ["a@x.test"])


async def test_pool_reuses_one_connection_for_several_messages() -> None:
    """RFC 5321 3.3: several transactions in one session; QUIT once at the end."""
    dialogue = Dialogue()
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        async with Client(helo="client.test", timeouts=FAST) as client:
            for _ in range(3):
                result = await client.send(destination, envelope(), BODY)
                assert result.recipients[0].status is Status.DELIVERED
        await anyio.sleep(0.05)
    assert len(server.peers) == 1
    lines = server.peers[0].lines
    assert lines.count(b"EHLO client.test") == 1
    assert sum(line.startswith(b"MAIL") for line in lines) == 3
    assert b"RSET" not in lines  # every transaction completed
    assert lines[-1] == b"QUIT"


async def test_pool_sends_rset_after_an_unfinished_transaction() -> None:
    """RFC 5321 4.1.1.5: RSET clears a transaction that did not complete
    (here every recipient was refused) before the next MAIL."""
    dialogue = Dialogue(
        replies={"RCPT": lambda line: b"550 5.1.1 no\r\n" if b"ghost" in line else b"250 OK\r\n"}
    )
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        async with Client(helo="client.test", timeouts=FAST) as client:
            first = await client.send(destination, envelope("ghost@x.test"), BODY)
            second = await client.send(destination, envelope("a@x.test"), BODY)
    assert first.recipients[0].status is Status.PERMANENT
    assert second.recipients[0].status is Status.DELIVERED
    lines = server.peers[0].lines
    rset = lines.index(b"RSET")
    assert lines[rset + 1].startswith(b"MAIL")
    assert len(server.peers) == 1


async def test_pool_retries_on_a_new_connection_when_the_idle_one_was_closed() -> None:
    """RFC 5321 3.8/4.5.3.2.7: a server may close an idle session; the next
    message goes over a new connection, and nothing is lost or doubled."""
    sessions = 0

    async def close_after_one(peer: Peer) -> None:
        nonlocal sessions
        sessions += 1
        await Dialogue(replies={".": b"250 2.0.0 accepted\r\n"}).__call__(
            _OneMessage(peer)  # type: ignore[arg-type]
        )

    async with scripted_server(close_after_one) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        async with Client(helo="client.test", timeouts=FAST) as client:
            first = await client.send(destination, envelope(), BODY)
            await anyio.sleep(0.1)  # the server has closed the idle connection
            second = await client.send(destination, envelope(), BODY)
    assert first.recipients[0].status is Status.DELIVERED
    assert second.recipients[0].status is Status.DELIVERED
    assert sessions == 2


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_pool_retries_when_the_idle_one_said_421(pipelining: bool) -> None:
    """RFC 5321 3.8 and 4.5.3.2.7: a server that times out an idle session
    says 421 and closes (Postfix: "421 4.4.2 ... timeout exceeded").  That
    421, read as the reply to the next MAIL, says nothing of the message:
    it goes over a new connection, delivered once, not deferred."""
    sessions = 0
    extensions = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"] if pipelining else ["8BITMIME"]

    async def idle_timeout_after_one(peer: Peer) -> None:
        nonlocal sessions
        sessions += 1
        await Dialogue(extensions=extensions, replies={".": b"250 2.0.0 accepted\r\n"}).__call__(
            _OneMessage(peer, then=b"421 4.4.2 mx.test Error: timeout exceeded\r\n")  # type: ignore[arg-type]
        )

    async with scripted_server(idle_timeout_after_one) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        async with Client(helo="client.test", timeouts=FAST) as client:
            first = await client.send(destination, envelope(), BODY)
            await anyio.sleep(0.1)  # the 421 is in, and the server has closed
            second = await client.send(destination, envelope(), BODY)
    assert first.recipients[0].status is Status.DELIVERED
    assert second.recipients[0].status is Status.DELIVERED
    assert sessions == 2
    # Each session carried the body once: once delivered, never doubled.
    assert [p.received.count(b"\r\n\r\nhi\r\n") for p in server.peers] == [1, 1]


class _OneMessage:
    """Wraps a Peer: the connection ends right after the first message's reply
    (and ``then``, sent after it)."""

    def __init__(self, peer: Peer, then: bytes = b"") -> None:
        self._peer = peer
        self._then = then

    def __getattr__(self, name: str) -> object:
        return getattr(self._peer, name)

    async def send(self, data: bytes) -> None:
        await self._peer.send(data)
        if data.startswith(b"250 2.0.0 accepted"):
            if self._then:
                await self._peer.send(self._then)
            await self._peer.close()


async def test_pool_bounds_concurrent_connections() -> None:
    """A bound per destination: ten concurrent sends, at most two sessions."""

    async def slow(peer: Peer) -> None:
        await anyio.sleep(0.05)
        await Dialogue()(peer)

    results = []
    async with scripted_server(slow) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        async with Client(helo="client.test", timeouts=FAST, max_connections=2) as client:

            async def one(i: int) -> None:
                results.append(await client.send(destination, envelope(f"r{i}@x.test"), BODY))

            async with anyio.create_task_group() as tg:
                for i in range(10):
                    tg.start_soon(one, i)
    assert len(results) == 10
    assert all(r.recipients[0].status is Status.DELIVERED for r in results)
    assert server.max_concurrent <= 2
    assert len(server.peers) == 2


async def test_pool_does_not_reuse_a_connection_idle_too_long() -> None:
    """A pooled session idle past ``max_idle`` is closed, not reused."""
    dialogue = Dialogue()
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        async with Client(helo="client.test", timeouts=FAST, max_idle=0.05) as client:
            await client.send(destination, envelope(), BODY)
            await anyio.sleep(0.2)
            await client.send(destination, envelope(), BODY)
    assert len(server.peers) == 2


async def test_client_refuses_sends_after_close() -> None:
    """A closed client is not silently reopened."""
    client = Client(helo="client.test")
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.send(SmartHost("127.0.0.1", 9), envelope(), BODY)


async def test_pool_drops_the_connection_after_354_to_refused_recipients() -> None:
    """RFC 2920 3.1: DATA accepted although every pipelined RCPT failed.  The
    empty message is ended by closing the connection (nothing is delivered);
    the recipients keep their RCPT replies, and the next message goes over a
    new connection."""
    dialogue = Dialogue(
        replies={
            "RCPT": b"550 5.1.1 no such user\r\n",
            "DATA": b"354 go ahead anyway\r\n",
        }
    )
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        async with Client(helo="client.test", timeouts=FAST) as client:
            first = await client.send(destination, envelope("ghost@x.test"), BODY)
            second = await client.send(destination, envelope("ghost2@x.test"), BODY)
    for result in (first, second):
        assert result.recipients[0].reply.code == 550
        assert result.recipients[0].status is Status.PERMANENT
    assert dialogue.bodies == []
    assert len(server.peers) == 2


def test_client_refuses_a_bad_helo_name() -> None:
    """RFC 5321 4.1.1.1: the EHLO argument is one printable word."""
    with pytest.raises(ValueError, match="printable ASCII"):
        Client(helo="bad name\r\nMAIL")
