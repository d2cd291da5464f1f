"""Shared pieces of smtp_client's tests: TLS material and a scripted server.

The scripted server is a TEST DOUBLE: a few lines of SMTP on a real
loopback socket, for the faults real servers (Postfix, Dovecot) cannot be
made to commit on demand: dropping the connection mid-DATA, a 421 at a
chosen moment, garbage replies, bytes after a STARTTLS 220.  Everything the
client sends is recorded, so a test can check what went over the wire.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
import trustme
from anyio.streams.tls import TLSStream

Handler = Callable[["Peer"], Awaitable[None]]


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A throw-away CA; never a real one."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a certificate for mx.test, localhost, 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("mx.test", "localhost", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The CA's certificate as a PEM file."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@attrs.define(eq=False)
class Peer:
    """The server's side of one connection: read lines and bytes, send replies."""

    stream: anyio.abc.ByteStream
    #: Everything the client sent, in order (after TLS, the plaintext).
    received: bytearray = attrs.field(factory=bytearray)
    #: Command lines read with :meth:`line`, without CRLF (not body lines).
    lines: list[bytes] = attrs.field(factory=list)
    _buffer: bytearray = attrs.field(factory=bytearray)
    closed: bool = False

    async def _fill(self) -> bool:
        try:
            data = await self.stream.receive()
        except (
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ):
            self.closed = True
            return False
        self.received += data
        self._buffer += data
        return True

    async def line(self, *, command: bool = True) -> bytes | None:
        """The next CRLF-terminated line (``None`` at end of stream).

        Command lines are recorded in :attr:`lines`; body lines are not.
        """
        while (end := self._buffer.find(b"\r\n")) == -1:
            if not await self._fill():
                return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        if command:
            self.lines.append(line)
        return line

    async def exactly(self, count: int) -> bytes | None:
        """The next ``count`` bytes (BDAT data)."""
        while len(self._buffer) < count:
            if not await self._fill():
                return None
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def data_body(self) -> bytes | None:
        """A DATA body up to CRLF . CRLF, dot-unstuffed (RFC 5321 4.5.2)."""
        lines: list[bytes] = []
        while True:
            line = await self.line(command=False)
            if line is None:
                return None
            if line == b".":
                return b"".join(lines)
            lines.append((line[1:] if line.startswith(b".") else line) + b"\r\n")

    def buffered(self) -> bytes:
        """What has arrived and not been read yet."""
        return bytes(self._buffer)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def start_tls(self, context: ssl.SSLContext) -> None:
        """Do the server's side of a TLS handshake."""
        self.stream = await TLSStream.wrap(
            self.stream,
            server_side=True,
            ssl_context=context,
            standard_compatible=False,
        )
        self._buffer.clear()

    async def close(self) -> None:
        await anyio.aclose_forcefully(self.stream)
        self.closed = True


@attrs.define(eq=False)
class Scripted:
    """A listening test double; ``peers`` holds one :class:`Peer` per connection."""

    host: str
    port: int
    peers: list[Peer] = attrs.field(factory=list)
    #: How many connections were open at most at the same time.
    max_concurrent: int = 0
    _open: int = 0


@asynccontextmanager
async def scripted_server(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ssl.SSLContext | None = None,
) -> AsyncIterator[Scripted]:
    """Run ``handler`` for each connection to ``host:port`` (0: any free port).

    With ``tls``, connections are TLS from the start (implicit TLS).
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    server = Scripted(host, bound)

    async def serve(stream: anyio.abc.SocketStream) -> None:
        peer = Peer(stream)
        server.peers.append(peer)
        server._open += 1
        server.max_concurrent = max(server.max_concurrent, server._open)
        try:
            if tls is not None:
                await peer.start_tls(tls)
            await handler(peer)
        except (
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
            anyio.EndOfStream,  # the client gave up during the handshake
            ssl.SSLError,
        ):
            pass
        finally:
            server._open -= 1
            await anyio.aclose_forcefully(peer.stream)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def reply_lines(code: int, lines: list[str]) -> bytes:
    """A multi-line reply."""
    out = [f"{code}-{text}\r\n" for text in lines[:-1]] + [f"{code} {lines[-1]}\r\n"]
    return "".join(out).encode()


@attrs.define
class Dialogue:
    """A small SMTP (or LMTP) server for the test double, with knobs.

    ``replies`` overrides the reply to a verb (``"MAIL"``, ``"RCPT"``,
    ``"DATA"``, ``"."`` for the end of data, ``"BDAT"``...): a ``bytes``
    value, or a function of the command line returning bytes (``None``:
    drop the connection there).  ``replies["LMTP"]`` gives the
    per-recipient replies after the body in LMTP (a float: a pause of that
    many seconds before the next one).
    """

    extensions: list[str] = attrs.field(
        factory=lambda: ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"]
    )
    greeting: bytes = b"220 mx.test ESMTP test double\r\n"
    replies: dict[str, Any] = attrs.field(factory=dict)
    lmtp: bool = False
    tls: ssl.SSLContext | None = None
    #: Bytes sent right after the 220 to STARTTLS (an injection attempt).
    after_starttls: bytes = b""
    #: Bodies received (unstuffed DATA, or joined BDAT chunks).
    bodies: list[bytes] = attrs.field(factory=list)
    #: What the client said after a refusing greeting (None: it hung up).
    after_refusal: list[bytes | None] = attrs.field(factory=list)

    def _reply(self, verb: str, line: bytes, default: bytes) -> bytes | None:
        value = self.replies.get(verb, default)
        result: bytes | None = value(line) if callable(value) else value
        return result

    async def __call__(self, peer: Peer) -> None:
        await peer.send(self.greeting)
        if not self.greeting.startswith(b"2"):
            self.after_refusal.append(await peer.line())
            return
        accepted = 0
        mail_ok = False
        chunks: list[bytes] = []
        while (line := await peer.line()) is not None:
            verb = line.split(b" ", 1)[0].decode(errors="replace").upper()
            if verb in ("EHLO", "LHLO"):
                default = reply_lines(250, ["mx.test", *self.extensions])
            elif verb == "HELO":
                default = b"250 mx.test\r\n"
            elif verb == "MAIL":
                accepted = 0
                chunks = []
                default = b"250 2.1.0 Sender OK\r\n"
            elif verb == "RCPT":
                default = b"250 2.1.5 Recipient OK\r\n" if mail_ok else b"503 5.5.1 MAIL first\r\n"
            elif verb == "DATA":
                # RFC 5321 3.3: "554 no valid recipients" (as Postfix says it).
                default = b"354 Go ahead\r\n" if accepted else b"554 5.5.1 No valid recipients\r\n"
            elif verb == "STARTTLS":
                default = b"220 2.0.0 Ready to start TLS\r\n"
            elif verb == "QUIT":
                await peer.send(b"221 2.0.0 Bye\r\n")
                return
            elif verb == "BDAT":
                size = int(line.split()[1])
                data = await peer.exactly(size)
                if data is None:
                    return
                chunks.append(data)
                if not line.upper().endswith(b"LAST"):
                    default = b"250 2.0.0 Chunk OK\r\n"
                else:
                    self.bodies.append(b"".join(chunks))
                    reply = await self._end(peer, accepted, line)
                    if reply is None:
                        return
                    continue
            else:
                default = b"250 2.0.0 OK\r\n"
            reply = self._reply(verb, line, default)
            if reply is None:
                await peer.close()
                return
            if verb == "RCPT" and reply.startswith(b"2"):
                accepted += 1
            if verb == "MAIL":
                mail_ok = reply.startswith(b"2")
            if verb == "STARTTLS" and reply.startswith(b"220"):
                # One write: the injected bytes arrive with the 220.
                reply += self.after_starttls
            await peer.send(reply)
            if verb == "STARTTLS" and reply.startswith(b"220"):
                assert self.tls is not None
                await peer.start_tls(self.tls)
            if verb == "DATA" and reply.startswith(b"354"):
                body = await peer.data_body()
                if body is None:
                    return
                self.bodies.append(body)
                if await self._end(peer, accepted, b".") is None:
                    return

    async def _end(self, peer: Peer, accepted: int, line: bytes) -> bytes | None:
        """The reply (or, in LMTP, replies) to the end of a body."""
        if self.lmtp:
            replies = self.replies.get("LMTP", [b"250 2.0.0 Saved\r\n"] * accepted)
            for reply in replies:
                if reply is None:
                    await peer.close()
                    return None
                if isinstance(reply, float):
                    await anyio.sleep(reply)  # a server delivering slowly
                    continue
                await peer.send(reply)
            return b""
        reply = self._reply(".", line, b"250 2.0.0 Message accepted\r\n")
        if reply is None:
            await peer.close()
            return None
        await peer.send(reply)
        return reply
