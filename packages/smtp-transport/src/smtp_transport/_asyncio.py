"""A lean :class:`anyio.abc.SocketStream` for asyncio.

anyio's own asyncio ``SocketStream`` pauses reading after every receive and
resumes it before the next (two ``epoll_ctl`` calls), and yields to the
event loop after every send.  For a protocol of many small exchanges that
is most of the cost of a session.  This stream keeps reading enabled and
buffers what arrives, up to a bound (then it pauses, so a peer that floods
cannot make us hold more), and writes straight to the transport, waiting
only when the transport's own buffer is full.

It implements :class:`anyio.abc.SocketStream`, so the code above it, TLS
(:class:`anyio.streams.tls.TLSStream`) and timeouts (anyio cancel scopes)
see no difference.  trio's sockets have no such overhead and are used as
anyio gives them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable, Mapping

__all__ = [
    "HIGH_WATER",
    "LOW_WATER",
    "AsyncioSocketStream",
    "StreamProtocol",
    "connect_tcp",
    "serve_asyncio",
]

#: Pause reading once this much is buffered and not yet consumed; resume
#: below a quarter of it.  Bounds the memory a flooding peer costs.
HIGH_WATER = 256 * 1024
LOW_WATER = HIGH_WATER // 4


class StreamProtocol(asyncio.Protocol):
    """Buffers what the transport delivers for :class:`AsyncioSocketStream`."""

    def __init__(self, on_connection: Callable[[AsyncioSocketStream], None] | None = None) -> None:
        self._on_connection = on_connection
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.exception: BaseException | None = None
        self.read_waiter: asyncio.Future[None] | None = None
        self.write_waiter: asyncio.Future[None] | None = None
        self.reading_paused = False
        self.writing_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not necessarily an asyncio.Transport
        # subclass: uvloop's TCPTransport is not one.
        stream_transport = cast("asyncio.Transport", transport)
        self.transport = stream_transport
        if self._on_connection is not None:
            self._on_connection(AsyncioSocketStream(stream_transport, self))

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.reading_paused:
            assert self.transport is not None
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport once our side is done

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof = True
        self.exception = exc
        self._wake_reader()
        waiter, self.write_waiter = self.write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter, self.write_waiter = self.write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self.read_waiter = self.read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncioSocketStream(anyio.abc.SocketStream):
    """An :class:`anyio.abc.SocketStream` over an asyncio transport."""

    def __init__(self, transport: asyncio.Transport, protocol: StreamProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self.peer = _address(transport.get_extra_info("peername"))
        self.local = _address(transport.get_extra_info("sockname"))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Return what has arrived (waiting if nothing has), at most ``max_bytes``."""
        p = self._protocol
        while not p.chunks:
            if self._closed:
                raise anyio.ClosedResourceError
            if p.eof:
                if p.exception is not None:
                    raise anyio.BrokenResourceError from p.exception
                raise anyio.EndOfStream
            if p.read_waiter is not None:
                raise anyio.BusyResourceError("reading from")
            waiter = asyncio.get_running_loop().create_future()
            p.read_waiter = waiter
            try:
                await waiter
            finally:
                p.read_waiter = None
        chunk = p.chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            p.chunks.appendleft(rest)
        p.buffered -= len(chunk)
        if p.reading_paused and p.buffered < LOW_WATER:
            p.reading_paused = False
            self._transport.resume_reading()
        return chunk

    async def send(self, item: bytes) -> None:
        """Write ``item``; wait only while the transport's buffer is full."""
        p = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        if p.exception is not None or self._transport.is_closing():
            raise anyio.BrokenResourceError from p.exception
        self._transport.write(item)
        while p.writing_paused and not self._transport.is_closing():
            waiter = asyncio.get_running_loop().create_future()
            p.write_waiter = waiter
            try:
                await waiter
            finally:
                p.write_waiter = None
        if p.exception is not None:
            raise anyio.BrokenResourceError from p.exception

    async def send_eof(self) -> None:
        """Shut down the sending direction."""
        self._transport.write_eof()

    async def aclose(self) -> None:
        """Close the connection (buffered output is still sent)."""
        if not self._closed:
            self._closed = True
            self._transport.close()
        await asyncio.sleep(0)

    @property
    def _raw_socket(self) -> socket.socket:
        sock: socket.socket = self._transport.get_extra_info("socket")
        return sock

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """Addresses and the socket, as anyio's socket streams give them."""
        peer = self._transport.get_extra_info("peername")
        local = self._transport.get_extra_info("sockname")
        sock = self._transport.get_extra_info("socket")
        return {
            SocketAttribute.family: lambda: sock.family,
            SocketAttribute.local_address: lambda: local,
            SocketAttribute.local_port: lambda: local[1],
            SocketAttribute.raw_socket: lambda: sock,
            SocketAttribute.remote_address: lambda: peer,
            SocketAttribute.remote_port: lambda: peer[1],
        }


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


async def serve_asyncio(
    sock: socket.socket, on_connection: Callable[[AsyncioSocketStream], None]
) -> None:
    """Accept on the listening ``sock`` until cancelled.

    asyncio's own accept loop (which takes connections in batches) hands each
    one to ``on_connection`` as a stream.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: StreamProtocol(on_connection), sock=sock, backlog=4096
    )
    try:
        await anyio.sleep_forever()
    finally:
        server.close()


async def connect_tcp(
    address: str, port: int, *, local_host: str | None = None
) -> AsyncioSocketStream:
    """Connect to the IP ``address``, ``port`` under asyncio (or uvloop).

    Raises :class:`OSError` on failure.  Host names are for
    :func:`anyio.connect_tcp`, which tries every address of a name (Happy
    Eyeballs, RFC 8305).
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        StreamProtocol, address, port, local_addr=(local_host, 0) if local_host else None
    )
    return AsyncioSocketStream(transport, protocol)
