"""The client: destinations, MX failover, TLS fallback and a connection pool."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Self

import anyio
import attrs

from smtp_message import BareLineEndings, Helo

from ._body import Body, BodySource
from ._connection import MAX_RECIPIENTS, Connection, StaleConnection
from ._destinations import Destination, LMTPServer, MXDomain, SmartHost
from ._errors import (
    ClientError,
    ConnectError,
    ConnectionLost,
    DNSError,
    MessageRefused,
    NoRouteError,
    ProtocolError,
    ReplyError,
    TimedOut,
    TLSError,
)
from ._mx import MXResolver
from ._policy import Credentials, Timeouts, TLSMode, TLSPolicy
from ._results import RecipientResult, SendResult

if TYPE_CHECKING:
    from types import TracebackType

    from ._envelope import Envelope

__all__ = ["Client"]

#: RFC 5321 5.1: "the SMTP client SHOULD try at least two addresses" and
#: may limit how many it tries; Postfix's ``smtp_mx_address_limit`` is 5.
MAX_MX_ADDRESSES = 5

#: Failures after which the next mail exchanger is tried (RFC 5321 5.1:
#: connection failures and 4xx greetings; 5xx greetings too, as Postfix's
#: ``smtp_skip_5xx_greeting`` does).
_NEXT_HOST = (
    ConnectError,
    TimedOut,
    ConnectionLost,
    TLSError,
    ProtocolError,
    ReplyError,
)


def _local_hostname() -> str:
    # gethostname, not getfqdn: a constructor must not block on DNS.
    name = socket.gethostname()
    try:
        Helo(name)
    except ValueError:
        return "localhost"
    return name or "localhost"


@attrs.define(eq=False)
class Client:
    r"""Sends messages; keeps connections open for the next message.

    ::

        async with Client(helo="mta.example") as client:
            result = await client.send(
                MXDomain("example.com"),
                Envelope.build("me@mta.example", ["you@example.com"]),
                b"Subject: hi\\r\\n\\r\\nHello\\r\\n",
            )
        for r in result.recipients:
            print(r.recipient, r.status, r.reply)

    A connection is reused for the next message to the same destination
    (with RSET first when the last transaction did not complete, RFC 5321
    4.1.1.5) while it is younger than
    ``max_connection_age`` and has not been idle for more than
    ``max_idle`` seconds.  At most ``max_connections`` connections per
    destination are open at once; further sends wait for one to be free.

    ``helo`` is the name this client gives in EHLO (RFC 5321 4.1.1.1: its
    fully-qualified domain name); ``resolver`` finds mail exchangers
    (default: the system's DNS).
    """

    helo: str = attrs.field(factory=_local_hostname)
    resolver: MXResolver | None = None
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    max_connections: int = 10
    max_idle: float = 30.0
    #: Postfix's ``smtp_connection_reuse_time_limit``.
    max_connection_age: float = 300.0
    #: What to do with a bare CR or LF in a body: ``NORMALIZE`` to CRLF
    #: (default) or ``REJECT`` (a permanent failure); never sent as is.
    bare_line_endings: BareLineEndings = BareLineEndings.NORMALIZE
    #: Use BDAT when the server offers CHUNKING (RFC 3030).
    use_chunking: bool = True
    #: The local address to connect from.
    local_address: str | None = None
    _idle: dict[Destination, list[Connection]] = attrs.field(factory=dict, init=False)
    _limits: dict[Destination, anyio.Semaphore] = attrs.field(factory=dict, init=False)
    _closed: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        Helo(self.helo)  # a bad name is refused now, not at the first send
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Say QUIT on every idle connection and close it."""
        self._closed = True
        idle = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        async with anyio.create_task_group() as tg:
            for conn in idle:
                tg.start_soon(conn.aclose)

    # -- Sending -----------------------------------------------------------

    async def send(
        self, destination: Destination, envelope: Envelope, body: BodySource
    ) -> SendResult:
        """Send one message to ``destination``; return a result per recipient.

        All recipients travel in one transaction (up to 100 at a time, RFC
        5321 4.5.3.1.8).  Failures of any kind (DNS, connection, TLS,
        replies, timeouts) are results, transient or permanent, never
        exceptions.  Raises :class:`ValueError` only for what the caller
        must fix: a body stream (read once) with more than 100
        recipients, or ``bare_line_endings=KEEP``.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        try:
            prepared = Body.prepare(body, self.bare_line_endings)
        except MessageRefused as exc:
            return _failed(envelope, exc)
        if len(envelope.recipients) > MAX_RECIPIENTS and not prepared.replayable:
            raise ValueError("more than 100 recipients need a body that can be read again")
        limit = self._limits.get(destination)
        if limit is None:
            limit = self._limits[destination] = anyio.Semaphore(self.max_connections)
        try:
            # Uncontended (the common case): no wait, and no extra trip
            # through the event loop; sending checkpoints anyway.
            limit.acquire_nowait()
        except anyio.WouldBlock:
            await limit.acquire()
        try:
            while (conn := await self._take_idle(destination)) is not None:
                try:
                    return await self._send_on(destination, conn, envelope, prepared, reused=True)
                except StaleConnection:
                    continue  # closed by the server while idle: try another
            try:
                conn = await self._connect(destination)
            except ClientError as exc:
                return _failed(envelope, exc)
            return await self._send_on(destination, conn, envelope, prepared, reused=False)
        finally:
            limit.release()

    async def _send_on(
        self,
        destination: Destination,
        conn: Connection,
        envelope: Envelope,
        body: Body,
        *,
        reused: bool,
    ) -> SendResult:
        keep = False
        try:
            results = await conn.send_message(envelope, body, reused=reused)
            keep = True
            return SendResult(
                tuple(results),
                host=conn.host,
                tls=conn.tls_active,
                extensions=conn.extensions,
            )
        except StaleConnection:
            raise
        except ValueError:
            keep = True
            raise
        finally:
            if keep and conn.usable and not self._closed:
                self._idle.setdefault(destination, []).append(conn)
            else:
                await conn.abort()

    async def _take_idle(self, destination: Destination) -> Connection | None:
        conns = self._idle.get(destination)
        now = anyio.current_time()
        while conns:
            conn = conns.pop()
            if (
                conn.usable
                and now - conn.last_used <= self.max_idle
                and now - conn.opened_at <= self.max_connection_age
            ):
                return conn
            # Too old or idle too long: probably closed by the server by now.
            await conn.abort()
        return None

    # -- Connecting ----------------------------------------------------------

    async def _connect(self, destination: Destination) -> Connection:
        if isinstance(destination, SmartHost):
            return await self._open(
                destination.host,
                destination.port,
                name=destination.host,
                tls=destination.tls,
                credentials=destination.credentials,
            )
        if isinstance(destination, LMTPServer):
            return await self._open(
                destination.host or "localhost",
                destination.port,
                name=destination.host or "localhost",
                path=destination.path,
                lmtp=True,
                tls=destination.tls,
                credentials=destination.credentials,
            )
        return await self._connect_mx(destination)

    async def _connect_mx(self, destination: MXDomain) -> Connection:
        if self.resolver is None:
            self.resolver = MXResolver.system()
        route = await self.resolver.resolve(destination.domain, enough=MAX_MX_ADDRESSES)
        errors: list[ClientError] = []
        candidates = [(mx, address) for mx in route.hosts for address in mx.addresses]
        policies: dict[str, TLSPolicy] = {}
        for mx, address in candidates[:MAX_MX_ADDRESSES]:
            policy = policies.get(mx.name)
            if policy is None:
                if isinstance(destination.tls, TLSPolicy):
                    policy = destination.tls
                else:
                    policy = await destination.tls(destination.domain, mx.name)
                policies[mx.name] = policy
            try:
                return await self._open(address, destination.port, name=mx.name, tls=policy)
            except _NEXT_HOST as exc:
                errors.append(exc)
        if not errors:  # pragma: no cover - resolve() returns hosts with addresses
            raise NoRouteError(f"no address for {destination.domain}")
        # Every exchanger failed: transient if any failure was (the mail
        # waits in the queue), permanent only if every one said so.
        transient = [e for e in errors if not e.permanent]
        if not transient and route.incomplete:
            # RFC 5321 5.1: an exchanger whose address lookup failed was
            # never tried, and it may take the mail (the backup that
            # refused may not be its final destination): not a bounce.
            raise DNSError(
                f"address lookup for an MX host of {destination.domain} failed; "
                f"the others refused: {errors[-1].reply}",
                host=errors[-1].host,
            )
        raise (transient or errors)[-1]

    async def _open(
        self,
        host: str,
        port: int,
        *,
        name: str,
        tls: TLSPolicy,
        path: str | None = None,
        lmtp: bool = False,
        credentials: Credentials | None = None,
    ) -> Connection:
        options: dict[str, Any] = {
            "helo": self.helo,
            "path": path,
            "name": name,
            "lmtp": lmtp,
            "credentials": credentials,
            "timeouts": self.timeouts,
            "local_address": self.local_address,
            "bare_line_endings": self.bare_line_endings,
            "use_chunking": self.use_chunking,
        }
        try:
            return await Connection.open(host, port, tls=tls, **options)
        except TLSError:
            if tls.mode is not TLSMode.OPPORTUNISTIC:
                raise
            if tls.verify and tls.ssl_context is None:
                # RFC 7435 3: encryption without authentication is better
                # than clear text; a certificate that does not verify (most
                # MX certificates) gets that first.
                unverified = attrs.evolve(tls, verify=False)
                try:
                    return await Connection.open(host, port, tls=unverified, **options)
                except TLSError:
                    if not tls.fallback_to_plaintext:
                        raise
            elif not tls.fallback_to_plaintext:
                raise
            # A failed handshake under the opportunistic policy: try again
            # in clear on a new connection, as the policy allows.
            return await Connection.open(host, port, tls=TLSPolicy.none(), **options)


def _failed(envelope: Envelope, error: ClientError) -> SendResult:
    return SendResult(
        tuple(RecipientResult.from_error(r.address, error) for r in envelope.recipients),
        host=error.host,
    )
