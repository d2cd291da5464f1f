"""A lean TCP stream for asyncio, used by :class:`~smtp_client.Connection`.

anyio's asyncio ``SocketStream`` resumes reading before every receive and
pauses it after (two ``epoll_ctl`` calls), and yields to the event loop
after every send.  SMTP is many small exchanges, so on a fast network that
is a large share of a client's work per message.  This stream keeps reading
enabled and buffers what arrives, up to a bound (then it pauses, so a
server that floods cannot make the client hold more), and writes straight
to the transport, waiting only while the transport's own buffer is full.
(smtp_server does the same on its accepting side.)

It is an :class:`anyio.abc.SocketStream`, so the driver, TLS
(:class:`anyio.streams.tls.TLSStream`) and timeouts (anyio cancel scopes,
which cancel the waiting task) see no difference.  Under trio, anyio's
stream is used: trio's sockets have no such overhead.
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

__all__ = ["connect_tcp"]

#: Pause reading once this much is buffered and not consumed; resume below
#: a quarter of it.  Bounds what a flooding server costs the client.
HIGH_WATER = 256 * 1024
LOW_WATER = HIGH_WATER // 4


class _Protocol(asyncio.Protocol):
    """Buffers what the transport delivers, wakes the one waiting reader."""

    def __init__(self) -> None:
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
        # uvloop's transports do not subclass asyncio.Transport: no isinstance.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport:
            self.transport.pause_reading()
            self.reading_paused = True
        self._wake(self.read_waiter)

    def eof_received(self) -> bool:
        self.eof = True
        self._wake(self.read_waiter)
        return False  # close the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof = True
        self.exception = exc
        self._wake(self.read_waiter)
        self._wake(self.write_waiter)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake(self.write_waiter)

    @staticmethod
    def _wake(waiter: asyncio.Future[None] | None) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class AsyncioSocketStream(anyio.abc.SocketStream):
    """An :class:`anyio.abc.SocketStream` over an asyncio transport."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False

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
        """Close the connection (what is buffered for sending still goes)."""
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


async def connect_tcp(
    address: str, port: int, *, local_host: str | None = None
) -> anyio.abc.SocketStream:
    """Connect to the IP ``address``, ``port`` under asyncio (or uvloop).

    Raises :class:`OSError` on failure.  Host names are for
    :func:`anyio.connect_tcp`, which tries every address of a name (Happy
    Eyeballs, RFC 8305).
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        _Protocol, address, port, local_addr=(local_host, 0) if local_host else None
    )
    return AsyncioSocketStream(transport, protocol)
