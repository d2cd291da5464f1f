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
import contextlib
import errno
import logging
import math
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = [
    "ACCEPT_RETRY_DELAY",
    "HIGH_WATER",
    "LOW_WATER",
    "AsyncioSocketStream",
    "ExhaustionLog",
    "StreamProtocol",
    "aborted",
    "connect_tcp",
    "exhausted",
    "serve_asyncio",
]

logger = logging.getLogger("smtp_transport")

#: Pause reading once this much is buffered and not yet consumed; resume
#: below a quarter of it.  Bounds the memory a flooding peer costs.
HIGH_WATER = 64 * 1024
LOW_WATER = HIGH_WATER // 4


class StreamProtocol(asyncio.Protocol):
    """Buffers what the transport delivers for :class:`AsyncioSocketStream`."""

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
        #: Set by :meth:`AsyncioSocketStream.feed_to`: takes arriving data
        #: at once, in the event loop's callback, instead of the buffer.
        self.consumer: Callable[[bytes], None] | None = None
        #: Set by :meth:`AsyncioSocketStream.linger_close`: input is dropped.
        self.discarding = False
        #: Set by :meth:`AsyncioSocketStream.when_writable`.
        self.drain_callback: Callable[[], None] | None = None
        self.paused_for_drain = False
        #: connection_lost() was called: the socket is closed.
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, though not necessarily an asyncio.Transport
        # subclass: uvloop's TCPTransport is not one.
        stream_transport = cast("asyncio.Transport", transport)
        self.transport = stream_transport

    def data_received(self, data: bytes) -> None:
        consumer = self.consumer
        if consumer is not None:
            consumer(data)
            return
        if self.discarding:
            return
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
        self._end_consumer()
        # Keep the transport open: a peer that half-closes after its last
        # command still reads our replies (returning False would close the
        # socket and drop them).  Our side closes when it is done.
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof = True
        self.lost = True
        self.exception = exc
        self._wake_reader()
        self._end_consumer()
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
        callback, self.drain_callback = self.drain_callback, None
        self._resume_after_drain()
        if callback is not None:
            callback()

    def _resume_after_drain(self) -> None:
        if self.paused_for_drain:
            self.paused_for_drain = False
            if not self.reading_paused and self.transport is not None:
                self.transport.resume_reading()

    def _end_consumer(self) -> None:
        # The consumer hears the end as an empty read, like receive() would.
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer(b"")

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
        if self._closed:
            raise anyio.ClosedResourceError
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
        if p.write_waiter is not None:
            # Another task waits for the buffer to drain: one sender at a
            # time, as anyio's streams (a second waiter would orphan it).
            raise anyio.BusyResourceError("writing to")
        self.write_nowait(item)
        while p.writing_paused and not self._transport.is_closing():
            waiter = asyncio.get_running_loop().create_future()
            p.write_waiter = waiter
            try:
                await waiter
            finally:
                p.write_waiter = None
        if self._closed:
            raise anyio.ClosedResourceError  # closed meanwhile: the data was dropped
        if p.exception is not None:
            raise anyio.BrokenResourceError from p.exception

    def feed_to(self, consumer: Callable[[bytes], None] | None) -> bool:
        """Hand what arrives from now on to ``consumer``, synchronously.

        ``consumer`` is called from the event loop's callback (not from a
        task) with each piece of data as it arrives, and once with ``b""``
        at the end of the stream; it must not block, and must not raise.
        ``None`` restores buffering for :meth:`receive`.  Returns ``False``
        (and changes nothing) if data or the end is already buffered: read
        it with :meth:`receive` first.  This is how a protocol that can
        answer most input at once avoids waking a task for each read.
        """
        p = self._protocol
        if consumer is not None and (p.chunks or p.eof or self._closed):
            return False
        p.consumer = consumer
        return True

    def when_writable(self, callback: Callable[[], None] | None) -> None:
        """Stop reading until the transport's buffer drains, then call ``callback``.

        For a consumer (:meth:`feed_to`) whose :meth:`write_nowait` said the
        peer must catch up: it answers no more input meanwhile, so none is
        read.  Called from the event loop's callback, like the consumer.
        ``None`` cancels (and reads again).  Does nothing if the buffer
        has drained already, except call ``callback`` soon.
        """
        p = self._protocol
        if callback is None:
            p.drain_callback = None
            p._resume_after_drain()
            return
        if not p.writing_paused:
            asyncio.get_running_loop().call_soon(callback)
            return
        p.drain_callback = callback
        if not p.paused_for_drain:
            p.paused_for_drain = True
            if not p.reading_paused:
                self._transport.pause_reading()

    @property
    def transport_error(self) -> BaseException | None:
        """Why the connection was lost, if it broke (a reset) rather than closed."""
        return self._protocol.exception

    def write_nowait(self, data: bytes) -> bool:
        """Write ``data`` without waiting; ``False`` once the peer must catch up.

        ``False`` means the transport's buffer is over its high-water mark
        (the data is still queued): stop writing and ``await send(b"")``,
        which waits until it drains, before writing more.
        """
        p = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        if p.exception is not None or self._transport.is_closing():
            raise anyio.BrokenResourceError from p.exception
        self._transport.write(data)
        return not p.writing_paused

    async def linger_close(self, data: bytes, linger: float) -> None:
        """Send ``data``, half-close, then close once the peer has too.

        For the end of a session: closing a socket with input unread makes
        the kernel reset the connection, which can destroy what the peer
        has not read yet.  So the sending side is shut down after ``data``
        (the peer sees the end), input is discarded, and the socket closed
        when the peer closes its side, once what we sent has left; or after
        ``linger`` seconds in all, whichever comes first.  Never raises for
        a peer that is gone.
        """
        p = self._protocol
        transport = self._transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + linger
        try:
            if not self._closed and not transport.is_closing() and p.exception is None:
                if data:
                    transport.write(data)
                if not p.eof and transport.can_write_eof() and _write_eof(transport):
                    p.discarding = True
                    p.chunks.clear()
                    p.buffered = 0
                    if p.reading_paused:
                        p.reading_paused = False
                        transport.resume_reading()
                    await self._wait_until(lambda: p.eof, deadline)
                # close() sends what is still buffered, then closes: give it
                # the rest of the time before aclose() aborts.  With nothing
                # buffered it closes at once (connection_lost() follows).
                self._closed = True
                transport.close()
                if transport.get_write_buffer_size():
                    await self._wait_until(lambda: p.lost, deadline)
        finally:
            if not self._closed or (not p.lost and transport.get_write_buffer_size()):
                await self.aclose()

    async def _wait_until(self, done: Callable[[], bool], deadline: float) -> None:
        p = self._protocol
        loop = asyncio.get_running_loop()
        if done():
            return
        waiter = loop.create_future()
        p.read_waiter = waiter
        timer = loop.call_at(deadline, _set_result, waiter)
        try:
            while not done() and not waiter.done():
                await waiter
        finally:
            timer.cancel()
            p.read_waiter = None

    async def send_eof(self) -> None:
        """Shut down the sending direction.

        A connection already reset, or closed, has no sending direction
        left: that is no error here (as anyio's own stream), whatever the
        event loop raises for it (asyncio an OSError, uvloop RuntimeError).
        """
        if self._closed:
            raise anyio.ClosedResourceError
        with contextlib.suppress(OSError, RuntimeError):
            self._transport.write_eof()

    async def aclose(self) -> None:
        """Close the connection.

        Output buffered in the transport gets one turn of the event loop to
        leave; what is still there then is dropped and the socket closed
        (as anyio's own stream does), so a peer that does not read cannot
        keep the connection open.
        """
        if not self._closed:
            self._closed = True
            self._transport.close()
        try:
            await asyncio.sleep(0)
        finally:
            # Not once the connection is lost: asyncio's transport may then
            # have let go of its loop (a close() that drained its buffer),
            # and abort() would fail.
            if not self._protocol.lost:
                self._transport.abort()

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


def _write_eof(transport: asyncio.Transport) -> bool:
    """Half-close; ``False`` if the peer is gone already.

    A peer that closed its socket before our last write answers that write
    with a reset, often before we get to half-close: ``shutdown()`` then
    fails with ``ENOTCONN``, and there is nothing left to linger for.
    """
    try:
        transport.write_eof()
    except OSError:
        return False
    return True


def _set_result(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _address(value: object) -> tuple[str, int] | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


#: errno values of accept() that mean "out of resources, try again soon".
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: How long to wait before accepting again after running out of resources.
ACCEPT_RETRY_DELAY = 0.1


#: errno values of accept() that concern the one connection it was taking,
#: not the listener.  A connection reset while it waited in the backlog is
#: ECONNABORTED; Linux also passes on the new connection's pending network
#: errors, and a firewall's refusal as EPERM (accept(2), "Error handling":
#: "treat them like EAGAIN by retrying").  trio's own SocketListener skips
#: the same set.
ABORTED = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
        "EPERM",
    )
    if hasattr(errno, name)
)


def _cause(exc: BaseException, errnos: frozenset[int]) -> OSError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in errnos:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def exhausted(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` if it says resources ran out, else ``None``."""
    return _cause(exc, EXHAUSTED)


def aborted(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` if only one connection failed, else ``None``.

    Those are the :data:`ABORTED` errors: accept again at once.
    """
    return _cause(exc, ABORTED)


class ExhaustionLog:
    """Logs running out of resources at most once a second, not per accept."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._last = -math.inf
        self._missed = 0

    def __call__(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._logger.error(
                "accept() failed: %s (%d more since the last message); retrying",
                exc,
                self._missed,
            )
            self._last, self._missed = now, 0
        else:
            self._missed += 1


async def serve_asyncio(
    sock: socket.socket,
    handler: Callable[[AsyncioSocketStream], Awaitable[object]],
    task_group: anyio.abc.TaskGroup,
) -> None:
    """Accept on the listening ``sock`` until cancelled.

    Like anyio's :meth:`~anyio.abc.Listener.serve`: each connection becomes
    an :class:`AsyncioSocketStream` handed to ``handler`` in a task that
    ``task_group`` waits for.  (The tasks are asyncio's own, watched by one
    task of ``task_group``: an anyio task per connection costs a cancel
    scope and an event besides, a measurable share of a short session.
    Cancelling ``task_group`` cancels them, and it ends only once they have.)
    ``handler`` should not raise: what it raises is logged.

    Running out of file descriptors (or memory) does not end the loop: it is
    logged once a second and accepting resumes shortly after.  A connection
    that failed before it could be accepted (:data:`ABORTED`) is skipped.
    """
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP,
    # and sockets accepted from a listener made with proto 0 (anyio's,
    # socket.create_server's) are not: set it here, as anyio's and trio's
    # own accept do.  Replies are small writes; without it one that follows
    # another not yet acknowledged waits for the client's delayed ACK.
    tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
    log = ExhaustionLog(logger)
    tasks = _Tasks(loop)
    task_group.start_soon(tasks.watch)
    try:
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in ABORTED:
                    logger.debug("accept() failed for one connection: %s", exc)
                    await asyncio.sleep(0)  # never a busy loop without the others
                    continue
                if exc.errno not in EXHAUSTED:
                    raise
                log(exc)
                await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            if tcp:
                # A connection already reset fails here: its session finds out.
                with contextlib.suppress(OSError):
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            tasks.spawn(conn, handler)
    finally:
        tasks.close()


class _Tasks:
    """The connections' tasks of one :func:`serve_asyncio`, and their watcher."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        #: Each task runs in a cancel scope of its own, which the watcher
        #: cancels: ``Task.cancel()`` would break through a handler's
        #: shielded cleanup, a scope respects it.
        self._tasks: dict[asyncio.Task[None], anyio.CancelScope] = {}
        self._accepting = True
        self._finished = False
        self._waiter: asyncio.Future[None] | None = None
        #: The class anyio.CancelScope() makes here (this runs on asyncio):
        #: made directly, a scope skips finding the backend (sniffio and
        #: current_task), half its cost.
        self._scope: Callable[[], anyio.CancelScope] = type(anyio.CancelScope())

    def spawn(
        self, conn: socket.socket, handler: Callable[[AsyncioSocketStream], Awaitable[object]]
    ) -> None:
        if self._finished:
            # The watcher (and so the task group) is gone: nobody would
            # wait for this connection.
            conn.close()
            return
        scope = self._scope()
        task = self._loop.create_task(_serve_one(self._loop, conn, handler, scope))
        self._tasks[task] = scope
        task.add_done_callback(self._done)

    def close(self) -> None:
        """No more tasks will come: the watcher ends with the last one."""
        self._accepting = False
        self._wake()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("connection task failed", exc_info=exc)
        if not self._tasks:
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def watch(self) -> None:
        """Wait for every task; cancelled, cancel them and wait all the same."""
        try:
            while self._accepting or self._tasks:
                self._waiter = self._loop.create_future()
                await self._waiter
        except BaseException:
            with anyio.CancelScope(shield=True):
                while self._tasks:
                    for scope in self._tasks.values():
                        scope.cancel()
                    await asyncio.wait(set(self._tasks))
            raise
        finally:
            self._finished = True


async def _serve_one(
    loop: asyncio.AbstractEventLoop,
    conn: socket.socket,
    handler: Callable[[AsyncioSocketStream], Awaitable[object]],
    scope: anyio.CancelScope,
) -> None:
    with scope:
        try:
            transport, protocol = await loop.connect_accepted_socket(StreamProtocol, conn)
        except OSError:
            conn.close()
            return
        except BaseException:
            conn.close()  # cancelled before the transport took it
            raise
        stream = AsyncioSocketStream(transport, protocol)
        try:
            await handler(stream)
        except BaseException:
            # A handler that raised (or was cancelled) leaves no connection
            # open: the client sees the end, the descriptor is freed now.
            # One that returns may have handed its stream on, and keeps it.
            if not stream._closed:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
            raise


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
