"""What the smtp-server tests share: a running server and recording hooks.

Every test runs a real server in-process with :func:`smtp_server.serve` on
a real 127.0.0.1 socket (:func:`serving`), and talks to it with a real
client: smtplib, aiosmtplib, swaks, or :class:`~smtp_testkit.clients.RawClient`
for input no polite client sends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs

from smtp_message import ServerSettings
from smtp_server import (
    Credentials,
    Envelope,
    Hooks,
    MessageAborted,
    Server,
    Session,
    Settings,
    Timeouts,
    serve,
)
from smtp_testkit.clients import RawClient, RawReply

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from smtp_message import Ehlo, Helo, Lhlo, MailFrom, RcptTo, Reply
    from smtp_server import MessageOutcome

HOST = "127.0.0.1"
HOSTNAME = "mx.test.example"

#: Timeouts for tests: a tenth of the RFC's (30 s for a command, 1 s to
#: close), so a broken test fails in seconds, not minutes, while a slow
#: shared machine never trips them.  Tests of a timeout set it much lower.
TEST_TIMEOUTS = Timeouts.scaled(0.1)

#: A message every test can send.
MESSAGE = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: test\r\n\r\nHello.\r\n"


def settings(
    *,
    timeouts: Timeouts | None = None,
    **kwargs: object,
) -> Settings:
    """Test settings: ``protocol`` fields and ``Settings`` fields by name."""
    protocol_fields = {f.name for f in attrs.fields(ServerSettings)}
    protocol_args = {k: v for k, v in kwargs.items() if k in protocol_fields}
    other = {k: v for k, v in kwargs.items() if k not in protocol_fields}
    protocol_args.setdefault("hostname", HOSTNAME)
    other.setdefault("auth_failure_delay", 0.01)
    return Settings(
        protocol=ServerSettings(**protocol_args),  # type: ignore[arg-type]
        timeouts=timeouts or TEST_TIMEOUTS,
        **other,  # type: ignore[arg-type]
    )


def timeouts(**kwargs: float) -> Timeouts:
    """:data:`TEST_TIMEOUTS` with some replaced (a short one under test)."""
    return attrs.evolve(TEST_TIMEOUTS, **kwargs)


@dataclasses.dataclass
class Running:
    """A server under test: where it listens, and its :class:`Server`."""

    server: Server
    host: str
    port: int
    clients: list[RawClient] = dataclasses.field(default_factory=list)

    async def connect(self, *, greeting: bool = True) -> RawClient:
        """A raw client, connected, having read the greeting if asked.

        It is closed when the server stops, if the test has not closed it.
        """
        client = await RawClient.connect(self.host, self.port)
        self.clients.append(client)
        if greeting:
            reply = await client.read_reply()
            assert reply.code == 220, reply
        return client

    async def hello(self, name: str = "client.example") -> RawClient:
        """A raw client that has said EHLO."""
        client = await self.connect()
        reply = await client.command(f"EHLO {name}")
        assert reply.code == 250, reply
        return client


@contextlib.asynccontextmanager
async def serving(
    hooks: Hooks | None = None, config: Settings | None = None
) -> AsyncIterator[Running]:
    """Run :func:`smtp_server.serve` on 127.0.0.1 (a free port) meanwhile."""
    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with anyio.create_task_group() as tg:
        server: Server = await tg.start(serve, listener, hooks, config or settings())
        running = Running(server, HOST, port)
        try:
            yield running
        finally:
            with anyio.CancelScope(shield=True):
                for client in running.clients:
                    await client.aclose()
            tg.cancel_scope.cancel()


async def expect_timeout(client: RawClient, *, wait: float = 5.0) -> None:
    """RFC 5321 4.5.3.2: the client gets ``421 4.4.2`` and the connection closes."""
    reply = await client.read_reply(wait=wait)
    assert str(reply) == "421 4.4.2 Timeout, closing connection"
    assert await client.read_until_closed() == b""


async def wait_for(predicate: Callable[[], object], *, limit: float = 20.0) -> None:
    """Poll until ``predicate()`` is true (fail after ``limit`` seconds).

    Polling, not an event: the predicates look at state the server updates
    in its own tasks (counters, hook records), which signal nothing.
    """
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


@dataclasses.dataclass
class Received:
    """A message the hooks accepted."""

    session: Session
    envelope: Envelope
    body: bytes


@dataclasses.dataclass
class Recorder(Hooks):
    """Hooks that accept everything (or the given credentials) and record it.

    ``on_message`` reads the whole body; a message that cannot complete is
    recorded in :attr:`aborted` with its reason.
    """

    users: dict[str, str] = dataclasses.field(default_factory=dict)
    connects: list[Session] = dataclasses.field(default_factory=list)
    hellos: list[Helo | Ehlo | Lhlo] = dataclasses.field(default_factory=list)
    auths: list[Credentials] = dataclasses.field(default_factory=list)
    mails: list[MailFrom] = dataclasses.field(default_factory=list)
    rcpts: list[RcptTo] = dataclasses.field(default_factory=list)
    messages: list[Received] = dataclasses.field(default_factory=list)
    aborted: list[str] = dataclasses.field(default_factory=list)
    disconnected: list[Session] = dataclasses.field(default_factory=list)

    async def on_connect(self, session: Session) -> Reply | None:
        self.connects.append(session)
        return None

    async def on_hello(self, session: Session, command: Helo | Ehlo | Lhlo) -> Reply | None:
        self.hellos.append(command)
        return None

    async def on_auth(self, session: Session, credentials: Credentials) -> bool | str | Reply:
        self.auths.append(credentials)
        return self.users.get(credentials.username) == credentials.password

    async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
        self.mails.append(command)
        return None

    async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
        self.rcpts.append(command)
        return None

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> MessageOutcome:
        chunks = []
        try:
            async for chunk in body:
                chunks.append(chunk)
        except MessageAborted as exc:
            self.aborted.append(exc.reason)
            raise
        self.messages.append(Received(session, envelope, b"".join(chunks)))
        return None

    async def on_disconnect(self, session: Session) -> None:
        self.disconnected.append(session)


#: RFC 2034 / RFC 3463: the enhanced code that must follow the reply code.
_ENHANCED_LINE = re.compile(rb"([245])[0-9][0-9][ -]([245])\.[0-9]{1,3}\.[0-9]{1,3}( |$)")


def assert_enhanced(reply: RawReply) -> None:
    """Every line of ``reply`` carries an enhanced code of its class (RFC 2034 3)."""
    for line in reply.lines:
        m = _ENHANCED_LINE.match(line)
        assert m is not None, f"no enhanced status code: {line!r}"
        assert m[1] == m[2], f"enhanced code class differs from the reply's: {line!r}"


async def bdat(client: RawClient, data: bytes, *, last: bool = False) -> RawReply:
    """Send one BDAT chunk (RFC 3030 2) and return its reply."""
    marker = " LAST" if last else ""
    await client.send(f"BDAT {len(data)}{marker}\r\n".encode() + data)
    return await client.read_reply()


async def transaction(
    client: RawClient,
    body: bytes = MESSAGE,
    *,
    sender: str = "a@example.com",
    recipients: tuple[str, ...] = ("b@example.net",),
) -> RawReply:
    """One mail transaction with DATA, each command waiting for its reply."""
    reply = await client.command(f"MAIL FROM:<{sender}>")
    assert reply.code == 250, reply
    for rcpt in recipients:
        reply = await client.command(f"RCPT TO:<{rcpt}>")
        assert reply.code == 250, reply
    reply = await client.command("DATA")
    assert reply.code == 354, reply
    await client.send(body + b".\r\n")
    return await client.read_reply()
