"""The lean asyncio socket stream (asyncio only, by design: under trio the
client uses anyio's own stream, as the last test checks on both backends).

Real sockets on 127.0.0.1; the peer is an anyio listener in the same loop.
"""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest

from smtp_client import Connection
from smtp_client._asyncio_stream import HIGH_WATER, AsyncioSocketStream, connect_tcp

from .conftest import Dialogue, scripted_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.anyio
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@asynccontextmanager
async def serving(
    handler: Callable[[anyio.abc.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


@asyncio_only
async def test_asyncio_stream_round_trip_and_attributes() -> None:
    """A byte stream as anyio's: what is sent arrives, addresses are given."""

    async def echo(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async for data in stream:
                await stream.send(data.upper())

    async with serving(echo) as port:
        stream = await connect_tcp("127.0.0.1", port)
        assert isinstance(stream, AsyncioSocketStream)
        await stream.send(b"hello")
        assert await stream.receive() == b"HELLO"
        assert stream.extra(anyio.abc.SocketAttribute.remote_port) == port
        assert stream.extra(anyio.abc.SocketAttribute.local_address)[0] == "127.0.0.1"
        assert stream.extra(anyio.abc.SocketAttribute.family) == socket.AF_INET
        await stream.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"x")


def paused(stream: AsyncioSocketStream) -> bool:
    return stream._protocol.reading_paused


@asyncio_only
async def test_asyncio_stream_bounds_what_a_flooding_server_costs() -> None:
    """A server that sends faster than the client reads fills at most about
    HIGH_WATER of client memory (reading pauses), and nothing is lost."""
    total = 8 * HIGH_WATER
    sent = anyio.Event()

    async def flood(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"z" * total)
            sent.set()
            await anyio.sleep(30)

    async with serving(flood) as port:
        stream = await connect_tcp("127.0.0.1", port)
        assert isinstance(stream, AsyncioSocketStream)
        with anyio.move_on_after(0.5):
            await sent.wait()  # the kernel buffers the rest: the server may block
        await anyio.sleep(0.1)
        protocol = stream._protocol
        assert paused(stream)
        assert protocol.buffered <= HIGH_WATER + 256 * 1024
        received = 0
        with anyio.fail_after(30):
            while received < total:
                received += len(await stream.receive(65536))
        assert received == total
        assert not paused(stream)
        await stream.aclose()


@asyncio_only
async def test_asyncio_stream_end_of_stream_and_busy_reader() -> None:
    """The peer's close is EndOfStream; two readers at once is a caller bug."""
    closed = anyio.Event()

    async def close_later(stream: anyio.abc.SocketStream) -> None:
        await closed.wait()
        await stream.aclose()

    async with serving(close_later) as port:
        stream = await connect_tcp("127.0.0.1", port)
        outcome: list[str] = []

        async def first_reader() -> None:
            try:
                await stream.receive()
            except anyio.EndOfStream:
                outcome.append("end of stream")

        async with anyio.create_task_group() as tg:
            tg.start_soon(first_reader)
            await anyio.sleep(0.05)
            with pytest.raises(anyio.BusyResourceError):
                await stream.receive()
            closed.set()
        assert outcome == ["end of stream"]
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        await stream.aclose()


@asyncio_only
async def test_asyncio_stream_refused_connection_is_oserror() -> None:
    """Like anyio.connect_tcp: a refused connection raises OSError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match=r"."):
        await connect_tcp("127.0.0.1", port)


async def test_connection_uses_the_lean_stream_only_on_asyncio(anyio_backend: str) -> None:
    """Under asyncio a session to an IP address runs on the lean stream; under
    trio, or to a host name (anyio tries each of its addresses), on anyio's."""
    async with scripted_server(Dialogue()) as server:
        for host, lean in [("127.0.0.1", anyio_backend == "asyncio"), ("localhost", False)]:
            conn = await Connection.open(host, server.port, helo="c.test")
            try:
                assert isinstance(conn.stream, AsyncioSocketStream) == lean
            finally:
                await conn.aclose()
