"""The lean asyncio socket stream, on both its sides: accepting and connecting.

asyncio only, by design (under trio, anyio's own streams are used; the
server's and the client's tests check that), here on plain asyncio and on
uvloop, whose transports are not asyncio.Transport subclasses.  Real
sockets on 127.0.0.1.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from smtp_transport import HIGH_WATER, AsyncioSocketStream, connect_tcp, serve_asyncio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

pytestmark = pytest.mark.anyio
asyncio_only = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ],
)


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


async def until(condition: Callable[[], bool]) -> None:
    """Wait (5 s at most) for ``condition``, which a callback makes true."""
    for _ in range(500):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition not met within 5 s")


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


class Accepted:
    """Collects the streams serve_asyncio hands over; wait() for the first."""

    def __init__(self) -> None:
        self.streams: list[AsyncioSocketStream] = []
        self._event = anyio.Event()

    async def __call__(self, stream: AsyncioSocketStream) -> None:
        self.streams.append(stream)
        self._event.set()

    async def first(self) -> AsyncioSocketStream:
        await self._event.wait()
        return self.streams[0]


@asyncio_only
async def test_stream_bounds_what_it_buffers_for_a_slow_reader() -> None:
    """A client that sends faster than the session reads costs the server at
    most the high-water mark (plus one read) of buffered data: reading is
    paused, and TCP's window makes the client wait."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        accepted = Accepted()
        payload = os.urandom(8 * 1024 * 1024)
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, accepted, tg)
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


@asyncio_only
async def test_stream_reports_the_peer_and_closed_states() -> None:
    """Addresses as anyio's SocketStream gives them; receive after close
    raises ClosedResourceError, after the peer's EOF EndOfStream."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        accepted = Accepted()
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, accepted, tg)
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


@asyncio_only
async def test_feed_to_hands_over_data_synchronously() -> None:
    """feed_to(): data goes to the consumer as it arrives (then b"" at the
    end); refused while data is buffered, which receive() must take first."""
    got: list[bytes] = []
    done = anyio.Event()

    async def talk(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"first")
            await anyio.sleep(0.2)
            await stream.send(b"second")
            await stream.send_eof()
            await done.wait()

    async with serving(talk) as port:
        stream = await connect_tcp("127.0.0.1", port)
        async with stream:
            with anyio.fail_after(5):
                while not stream._protocol.chunks:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert stream.feed_to(got.append) is False  # "first" is buffered
            assert await stream.receive() == b"first"
            assert stream.feed_to(got.append) is True

            with anyio.fail_after(5):
                while b"" not in got:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            assert b"".join(got) == b"second"
            assert got[-1] == b""
            assert stream.feed_to(got.append) is False  # the end is known
            done.set()


@asyncio_only
async def test_write_nowait_says_when_the_peer_must_catch_up() -> None:
    """write_nowait() queues without waiting and returns False once the
    peer stops reading and the buffers are full; nothing written is lost."""
    # A peer that reads nothing until told: a listening socket whose
    # connection is not even accepted (anyio's streams would read ahead).
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    chunk = os.urandom(1 << 16)
    digest = hashlib.sha256()
    written = 0

    def read_all() -> tuple[int, str]:
        conn, _ = server.accept()
        got = hashlib.sha256()
        total = 0
        with conn:
            while data := conn.recv(1 << 20):
                got.update(data)
                total += len(data)
        return total, got.hexdigest()

    try:
        stream = await connect_tcp("127.0.0.1", port)
        with anyio.fail_after(30):
            while stream.write_nowait(chunk):
                digest.update(chunk)
                written += len(chunk)
                await anyio.lowlevel.checkpoint()  # let the transport write what it can
            digest.update(chunk)  # queued all the same
            written += len(chunk)
            async with anyio.create_task_group() as tg:

                async def drain() -> None:
                    await stream.send(b"")  # waits until the buffer drains
                    await stream.send_eof()

                tg.start_soon(drain)
                total, seen = await anyio.to_thread.run_sync(read_all)
            await stream.aclose()
    finally:
        server.close()
    assert (total, seen) == (written, digest.hexdigest())


@asyncio_only
async def test_linger_close_delivers_the_last_words_to_a_talking_peer() -> None:
    """linger_close(): a peer still sending when we close gets our last
    data and a clean end of stream, not a reset; we close when it does."""
    heard = bytearray()

    async def chatterbox(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with anyio.move_on_after(0.5):
                while True:
                    await stream.send(b"x" * 65536)  # keep our side talking
                    await anyio.sleep(0.01)
            async for data in stream:  # then listen, to the end
                heard.extend(data)

    async with serving(chatterbox) as port:
        stream = await connect_tcp("127.0.0.1", port)
        await anyio.sleep(0.1)  # unread input piles up on our side
        with anyio.fail_after(10):
            await stream.linger_close(b"421 4.7.0 Too many errors\r\n", 5.0)
            while not heard.endswith(b"\r\n"):  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert bytes(heard) == b"421 4.7.0 Too many errors\r\n"


@asyncio_only
async def test_linger_close_gives_up_on_a_peer_that_never_closes() -> None:
    """linger_close() waits at most its linger time for the peer."""
    release = anyio.Event()

    async def silent(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await release.wait()

    async with serving(silent) as port:
        stream = await connect_tcp("127.0.0.1", port)
        started = anyio.current_time()
        with anyio.fail_after(5):
            await stream.linger_close(b"bye\r\n", 0.3)
        assert 0.25 <= anyio.current_time() - started < 3
        release.set()


async def _cancel_with_a_connection(
    handler: Callable[[AsyncioSocketStream], Awaitable[None]], ready: anyio.Event
) -> None:
    """Serve one connection; once ``ready`` is set, cancel the task group.

    Returns when the task group has exited.
    """
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, handler, tg)
            client = await anyio.connect_tcp("127.0.0.1", port)
            await ready.wait()
            tg.cancel_scope.cancel()
        await client.aclose()


@asyncio_only
async def test_cancelling_the_task_group_ends_the_connections_first() -> None:
    """The connections' tasks belong to the task group passed in: cancelling
    it cancels them, and it exits only once each has finished (its cleanup
    included), as with tasks the group started itself."""
    events: list[str] = []
    started = anyio.Event()

    async def handler(stream: AsyncioSocketStream) -> None:
        events.append("started")
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.2)  # cleanup that takes a while
                await stream.aclose()
            events.append("cleaned up")

    await _cancel_with_a_connection(handler, started)
    events.append("group exited")
    assert events == ["started", "cleaned up", "group exited"]


@asyncio_only
async def test_a_failing_handler_is_logged_and_accepting_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A handler that raises ends its own connection only: the error is
    logged with its traceback, and the next connection is served."""
    served: list[bytes] = []

    async def handler(stream: AsyncioSocketStream) -> None:
        data = await stream.receive()
        served.append(data)
        await stream.aclose()
        if data == b"boom":
            raise RuntimeError("handler bug")

    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, handler, tg)
            for payload in (b"boom", b"fine"):
                client = await anyio.connect_tcp("127.0.0.1", port)
                await client.send(payload)
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await client.receive()
                await client.aclose()
            tg.cancel_scope.cancel()
    assert served == [b"boom", b"fine"]
    failures = [r for r in caplog.records if r.getMessage() == "connection task failed"]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert "handler bug" in str(failures[0].exc_info[1])


@asyncio_only
async def test_a_handler_that_raises_with_its_stream_open_still_ends_the_connection() -> None:
    """A handler that raises without closing its stream: the connection ends
    there (the client sees the end, in time, and the descriptor is not held
    until garbage collection); what it wrote first still goes out."""

    async def handler(stream: AsyncioSocketStream) -> None:
        await stream.send(b"hello")
        raise RuntimeError("handler bug")

    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, handler, tg)
            client = await anyio.connect_tcp("127.0.0.1", port)
            received = b""
            with anyio.fail_after(5):
                try:
                    while True:
                        received += await client.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
            await client.aclose()
            tg.cancel_scope.cancel()
    assert received == b"hello"  # what it wrote still went out


@asyncio_only
async def test_stream_refuses_a_second_sender_and_what_a_closed_stream_cannot_do() -> None:
    """anyio's stream contract: a second concurrent send is BusyResourceError
    (it would orphan the first one's wait); a send overtaken by aclose()
    raises ClosedResourceError, not success; a closed stream refuses
    receive() even with data buffered, and send_eof()."""
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        accepted = Accepted()
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, accepted, tg)
            client = await anyio.connect_tcp("127.0.0.1", port)
            stream = await accepted.first()
            await client.send(b"buffered")
            await until(lambda: bool(stream._protocol.chunks))
            outcomes: list[str] = []
            done = anyio.Event()

            async def send_big() -> None:
                try:
                    await stream.send(b"x" * (64 * 1024 * 1024))  # the client never reads
                    outcomes.append("returned")
                except anyio.ClosedResourceError:
                    outcomes.append("closed")
                done.set()

            tg.start_soon(send_big)
            await until(lambda: stream._protocol.write_waiter is not None)
            with pytest.raises(anyio.BusyResourceError):
                await stream.send(b"second")
            await stream.aclose()
            with anyio.fail_after(5):
                await done.wait()
            assert outcomes == ["closed"]
            with pytest.raises(anyio.ClosedResourceError):
                await stream.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.send_eof()
            await client.aclose()
            tg.cancel_scope.cancel()


@asyncio_only
async def test_cancelling_the_task_group_respects_a_shielded_cleanup() -> None:
    """A connection's handler that is already in a shielded cleanup when the
    group is cancelled finishes it (anyio's shield holds, as for tasks the
    group started itself), and the group still waits for it."""
    events: list[str] = []
    in_cleanup = anyio.Event()

    async def handler(stream: AsyncioSocketStream) -> None:
        try:
            with anyio.CancelScope(shield=True):
                in_cleanup.set()
                await anyio.sleep(0.3)
                events.append("cleanup done")
        finally:
            await stream.aclose()

    await _cancel_with_a_connection(handler, in_cleanup)
    events.append("group exited")
    assert events == ["cleanup done", "group exited"]


@asyncio_only
async def test_accepted_tcp_connections_have_nodelay() -> None:
    """Replies go out at once, not after the client's delayed ACK of the
    one before (Nagle's algorithm, RFC 896; RFC 5321 4.5.3.2 leaves a server
    no reason to hold a reply back).  asyncio turns TCP_NODELAY on only
    for sockets whose ``proto`` is IPPROTO_TCP, and a listener made with
    proto 0, as anyio's is, accepts sockets that are not: serve_asyncio sets
    it itself, as anyio's and trio's accept do."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    raw: socket.socket = listener.extra(anyio.abc.SocketAttribute.raw_socket)
    assert raw.proto == 0  # the case asyncio leaves alone
    port = raw.getsockname()[1]
    seen: list[int] = []

    async def handler(stream: AsyncioSocketStream) -> None:
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        await stream.send(b"ok")
        await stream.aclose()

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve_asyncio, raw, handler, tg)
        client = await anyio.connect_tcp("127.0.0.1", port)
        assert await client.receive() == b"ok"
        await client.aclose()
        tg.cancel_scope.cancel()
    assert len(seen) == 1
    assert seen[0] != 0


class _AbortingSocket(socket.socket):
    """A listening socket whose first accept() calls fail as a connection
    reset in the backlog does (ECONNABORTED), or with a pending network
    error Linux passes on (EPROTO).  Injected: on loopback the kernel
    gives neither on demand."""

    failures: list[int]

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            raise OSError(self.failures.pop(0), "injected")
        return super().accept()


@asyncio_only
async def test_a_connection_lost_before_accept_does_not_stop_accepting() -> None:
    """accept(2), "Error handling": errors of the connection being accepted
    are to be treated like EAGAIN.  serve_asyncio skips them at once (no
    retry delay, as for running out of descriptors) and serves the next."""
    with socket.create_server(("127.0.0.1", 0)) as made:
        listening = _AbortingSocket(made.family, made.type, fileno=made.detach())
    listening.failures = [errno.ECONNABORTED, errno.EPROTO, errno.EPERM]
    served: list[bytes] = []

    async def handler(stream: AsyncioSocketStream) -> None:
        served.append(await stream.receive())
        await stream.aclose()

    with listening:
        port = listening.getsockname()[1]
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, handler, tg)
            with anyio.fail_after(5):
                client = await anyio.connect_tcp("127.0.0.1", port)
                await client.send(b"hello")
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await client.receive()
            await client.aclose()
            tg.cancel_scope.cancel()
    assert served == [b"hello"]
    assert listening.failures == []


@asyncio_only
async def test_any_other_accept_error_ends_serving() -> None:
    """Not every accept error is the connection's: EBADF or EINVAL mean
    the listener itself is broken, and serve_asyncio raises rather than
    spin on it."""
    with socket.create_server(("127.0.0.1", 0)) as made:
        listening = _AbortingSocket(made.family, made.type, fileno=made.detach())
    listening.failures = [errno.EINVAL]

    async def handler(stream: AsyncioSocketStream) -> None:
        await stream.aclose()

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_asyncio, listening, handler, tg)
            # uvloop calls accept() only once the socket is readable.
            with anyio.fail_after(5):
                client = await anyio.connect_tcp("127.0.0.1", listening.getsockname()[1])
            await client.aclose()

    with listening, pytest.raises(ExceptionGroup) as caught:
        await run()
    errors = [e for e in caught.value.exceptions if isinstance(e, OSError)]
    assert [e.errno for e in errors] == [errno.EINVAL]
