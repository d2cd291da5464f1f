"""The lean asyncio socket stream serve() uses on asyncio.

It is asyncio's alone, so most of these tests run on asyncio only (trio's
sockets are used as anyio gives them; the last test checks that).
"""

from __future__ import annotations

import hashlib
import os
import socket

import anyio
import anyio.abc
import pytest

from smtp_server import listen, serve
from smtp_server._asyncio_stream import HIGH_WATER, AsyncioSocketStream, serve_asyncio
from smtp_server._serve import _raw_sockets

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


class Accepted:
    """Collects the streams serve_asyncio hands over; wait() for the first."""

    def __init__(self) -> None:
        self.streams: list[AsyncioSocketStream] = []
        self._event = anyio.Event()

    def __call__(self, stream: AsyncioSocketStream) -> None:
        self.streams.append(stream)
        self._event.set()

    async def first(self) -> AsyncioSocketStream:
        await self._event.wait()
        return self.streams[0]


@pytest.mark.anyio
@asyncio_only
async def test_stream_bounds_what_it_buffers_for_a_slow_reader() -> None:
    """A client that sends faster than the session reads costs the server at
    most the high-water mark (plus one read) of buffered data: reading is
    paused, and TCP's window makes the client wait."""
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    accepted = Accepted()
    payload = os.urandom(8 * 1024 * 1024)
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_asyncio, listening, accepted)
        client = await anyio.connect_tcp("127.0.0.1", port)

        async def send_all() -> None:
            await client.send(payload)
            await client.send_eof()

        tg.start_soon(send_all)
        stream = await accepted.first()
        # Nobody reads for a while: the server must stop reading.
        await anyio.sleep(0.5)
        buffered = stream._protocol.buffered
        assert buffered <= HIGH_WATER + 262144
        assert stream._protocol.reading_paused
        # Reading resumes and every octet arrives, in order.
        digest = hashlib.sha256()
        received = 0
        while True:
            try:
                chunk = await stream.receive()
            except anyio.EndOfStream:
                break
            digest.update(chunk)
            received += len(chunk)
        assert received == len(payload)
        assert digest.digest() == hashlib.sha256(payload).digest()
        await stream.aclose()
        await client.aclose()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
@asyncio_only
async def test_stream_reports_the_peer_and_closed_states() -> None:
    """Addresses as anyio's SocketStream gives them; receive after close
    raises ClosedResourceError, after the peer's EOF EndOfStream."""
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    accepted = Accepted()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve_asyncio, listening, accepted)
        client = await anyio.connect_tcp("127.0.0.1", port)
        stream = await accepted.first()
        client_port = client.extra(anyio.abc.SocketAttribute.local_port)
        assert stream.peer == ("127.0.0.1", client_port)
        assert stream.extra(anyio.abc.SocketAttribute.remote_port) == client_port
        assert stream.extra(anyio.abc.SocketAttribute.local_address) == ("127.0.0.1", port)
        await stream.send(b"hello")
        assert await client.receive() == b"hello"
        await client.send_eof()
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        await stream.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await stream.send(b"x")
        await client.aclose()
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_serve_takes_over_plain_listeners_on_asyncio_only(anyio_backend: str) -> None:
    """On asyncio, serve() accepts on a plain TCP listener's sockets itself
    (with the lean stream); on trio, and for listeners that are not plain
    sockets, it accepts through the listener."""
    listener = await listen("127.0.0.1:0")
    try:
        sockets = _raw_sockets(listener)
        if anyio_backend == "asyncio":
            assert sockets is not None
            assert [s.getsockname() for s in sockets] == [
                listener.extra(anyio.abc.SocketAttribute.local_address)
            ]
        else:
            assert sockets is None
        assert _raw_sockets(object()) is None
    finally:
        await listener.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend", [pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
async def test_serve_runs_sessions_on_uvloop() -> None:
    """uvloop's transports are not asyncio.Transport subclasses: the lean
    stream must take them all the same (RFC 5321 D.1, a whole transaction)."""
    import smtplib

    listener = await listen("127.0.0.1:0")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    def client() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            return smtp.sendmail("a@b.example", ["c@d.example"], b"Subject: uv\r\n\r\nhi\r\n")

    async with anyio.create_task_group() as tg:
        server = await tg.start(serve, listener)
        assert await anyio.to_thread.run_sync(client) == {}
        assert server.statistics.accepted == 1
        server.shutdown()
