"""One SMTP or LMTP session over an anyio stream.

This is the thin driver of :class:`smtp_message.ClientConnection`.  The
protocol (what may be sent, which reply answers what, dot-stuffing) is all
in ``smtp_message``; this module moves its bytes, applies the RFC 5321
4.5.3.2 timeouts, and turns what anyio, ssl and the server do into the
classified errors of :mod:`smtp_client._errors` and per-recipient results
(the shape of httpcore's ``_async/http11.py``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import ssl
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs
import sniffio
from anyio.streams.tls import TLSStream

import smtp_transport
from smtp_message import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    BareLineEndings,
    BodyType,
    ClientConnection,
    ClientState,
    Command,
    ConnectionClosed,
    Data,
    DataResponse,
    Ehlo,
    Extensions,
    Greeting,
    Helo,
    Lhlo,
    LocalProtocolError,
    MailFrom,
    MailParams,
    Quit,
    RcptParams,
    RcptTo,
    Reply,
    ReplySyntaxError,
    Response,
    Rset,
    Sentinel,
    StartTls,
)

from ._body import Body
from ._errors import (
    AuthError,
    ClientError,
    ConnectError,
    ConnectionLost,
    MessageRefused,
    ProtocolError,
    ReplyError,
    TimedOut,
    TLSError,
)
from ._policy import Credentials, Timeouts, TLSMode, TLSPolicy
from ._results import RecipientResult, Status

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from smtp_message import Mailbox

    from ._envelope import Envelope, Recipient

__all__ = ["Connection"]

#: How much is asked of the socket per read.
READ_SIZE = 65536
#: Body data is written in pieces of at most this size, each within the data
#: block timeout (RFC 5321 4.5.3.2.5 times each TCP send, not the body).
WRITE_SIZE = 65536
#: A streamed body goes out in BDAT chunks of about this size (RFC 3030 2).
BDAT_CHUNK = 1 << 20
#: How many BDAT replies may be outstanding before the client waits for one
#: (RFC 3030 4.2 lets BDAT be pipelined; the bound keeps the server's replies
#: from filling both sockets' buffers while the client is still writing).
BDAT_WINDOW = 4
#: RFC 5321 4.5.3.1.8: a server must accept at least 100 recipients per
#: transaction; more are sent in further transactions.
MAX_RECIPIENTS = 100

_TLS_NOT_OFFERED = Reply(454, "4.7.4", "TLS required but not offered by the server")
_TOO_BIG = "message of {size} octets exceeds the server's limit of {limit} (RFC 1870)"
_NO_8BITMIME = Reply(554, "5.6.3", "8-bit message and the server does not support 8BITMIME")
_NO_BINARYMIME = Reply(554, "5.6.3", "binary message and the server does not support BINARYMIME")
_NO_SMTPUTF8 = Reply(553, "5.6.7", "UTF-8 addresses and the server does not support SMTPUTF8")
_NO_REQUIRETLS = Reply(550, "5.7.30", "REQUIRETLS support required (RFC 8689)")

_IO_ERRORS = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ssl.SSLError,
    OSError,
)


class StaleConnection(Exception):
    """A reused connection was closed by the server before it answered RSET.

    Nothing of the transaction was processed, so it is retried on a new
    connection.  Internal to the pool.
    """


def _strip_dsn(params: RcptParams) -> RcptParams:
    # RFC 3461 5.2.2: without the DSN extension, NOTIFY and ORCPT are not
    # sent (the sender's side issues a "relayed" DSN if one was asked for).
    return RcptParams(extra=params.extra)


@attrs.frozen
class _Features:
    """What a transaction needs to know of the extensions, read once per EHLO."""

    pipelining: bool
    size: int | None
    eightbitmime: bool
    smtputf8: bool
    chunking: bool
    binarymime: bool
    dsn: bool
    auth: bool
    requiretls: bool

    @classmethod
    def of(cls, ext: Extensions) -> _Features:
        return cls(
            pipelining=ext.pipelining,
            size=ext.size,
            eightbitmime=ext.eightbitmime,
            smtputf8=ext.smtputf8,
            chunking=ext.chunking,
            binarymime=ext.binarymime,
            dsn=ext.dsn,
            auth=bool(ext.auth),
            requiretls=ext.requiretls,
        )


@attrs.define(eq=False)
class Connection:
    """One SMTP (or LMTP) session with one server, ready for transactions.

    Open it with :meth:`open`, which connects, reads the greeting, says
    EHLO (HELO if EHLO is refused; LHLO for LMTP), does STARTTLS as
    ``tls`` asks and authenticates.  Then :meth:`send_message` any number
    of times, and :meth:`aclose` (QUIT).  Errors raised are the classified
    :class:`~smtp_client.ClientError` subclasses; :meth:`send_message`
    instead returns a result per recipient.
    """

    stream: anyio.abc.ByteStream
    #: The server, as results name it: ``name[address]:port`` or a socket path.
    host: str
    lmtp: bool = False
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    bare_line_endings: BareLineEndings = BareLineEndings.NORMALIZE
    #: Send with BDAT when the server offers CHUNKING (RFC 3030).
    use_chunking: bool = True
    #: The server's greeting, once read.
    greeting: Reply | None = None
    #: Bytes the server sent after its 220 to STARTTLS, before the TLS
    #: handshake, that were thrown away unread (GHSA-vxj7-4xrp-5vr4).
    discarded_after_starttls: bytes = b""
    #: Monotonic time (anyio's clock) the session was opened.
    opened_at: float = 0.0
    #: Monotonic time of the last transaction (for the pool's idle limit).
    last_used: float = 0.0
    #: How many messages were sent over this connection.
    messages: int = 0
    _conn: ClientConnection = attrs.field(init=False)
    _broken: bool = attrs.field(default=False, init=False)
    _features_of: Extensions | None = attrs.field(default=None, init=False)
    _features_cache: _Features | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._conn = ClientConnection(lmtp=self.lmtp, bare_line_endings=self.bare_line_endings)

    # -- Opening -----------------------------------------------------------

    @classmethod
    async def open(
        cls,
        host: str,
        port: int = 25,
        *,
        helo: str,
        path: str | None = None,
        name: str | None = None,
        lmtp: bool = False,
        tls: TLSPolicy | None = None,
        credentials: Credentials | None = None,
        timeouts: Timeouts | None = None,
        local_address: str | None = None,
        bare_line_endings: BareLineEndings = BareLineEndings.NORMALIZE,
        use_chunking: bool = True,
    ) -> Connection:
        """Connect to ``host:port`` (or the unix socket ``path``) and say hello.

        ``host`` is the address to connect to; ``name`` is the server's
        name (the MX host name), used to check its certificate and in
        :attr:`host`.  Raises :class:`~smtp_client.ConnectError`,
        :class:`~smtp_client.TimedOut`, :class:`~smtp_client.TLSError`,
        :class:`~smtp_client.ReplyError` (greeting or EHLO refused),
        :class:`~smtp_client.AuthError` ...; nothing is left open then.
        """
        tls = tls or TLSPolicy.none()
        timeouts = timeouts or Timeouts()
        name = name or host
        label = path if path is not None else f"{name}[{host}]:{port}"
        try:
            with anyio.fail_after(timeouts.connect):
                if path is not None:
                    stream: anyio.abc.ByteStream = await anyio.connect_unix(path)
                elif sniffio.current_async_library() == "asyncio" and _is_ip(host):
                    stream = await smtp_transport.connect_tcp(host, port, local_host=local_address)
                else:
                    stream = await anyio.connect_tcp(host, port, local_host=local_address)
        except TimeoutError:
            raise TimedOut(f"no connection within {timeouts.connect:g} s", host=label) from None
        except OSError as exc:
            # anyio says "All connection attempts failed"; the cause says why.
            # A failed name lookup (socket.gaierror) has a negative EAI_*
            # errno that os.strerror does not know: use its own words.
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            reason = cause.strerror or (os.strerror(cause.errno) if cause.errno else str(cause))
            raise ConnectError(f"cannot connect: {reason}", host=label) from None
        except UnicodeError as exc:
            # A name IDNA cannot encode ("h\udcff", "☃.test"): anyio raises
            # before any lookup.  A result like any other failure to connect,
            # never an exception out of Client.send.
            raise ConnectError(f"cannot connect: bad host name: {exc}", host=label) from None
        conn = cls(
            stream,
            label,
            lmtp=lmtp,
            timeouts=timeouts,
            bare_line_endings=bare_line_endings,
            use_chunking=use_chunking,
        )
        try:
            server_hostname = tls.server_hostname or name
            if tls.mode is TLSMode.IMPLICIT:
                await conn._handshake(tls, server_hostname)
            await conn._start(helo, tls, server_hostname, credentials)
        except BaseException:
            await conn.abort()
            raise
        conn.opened_at = conn.last_used = anyio.current_time()
        return conn

    async def _start(
        self,
        helo: str,
        tls: TLSPolicy,
        server_hostname: str,
        credentials: Credentials | None,
    ) -> None:
        event = await self._event(self.timeouts.greeting)
        assert isinstance(event, Greeting)
        self.greeting = event.reply
        if not event.reply.is_positive:
            # RFC 5321 3.1: a 554 greeting means no service here, and the
            # server "MUST still wait for the client to send a QUIT": say it,
            # briefly, then give up.  RFC 5321 5.1 moves on to the next
            # exchanger after a 4xx one (a 421 has closed the session).
            if self._conn.state is ClientState.NO_SERVICE:
                with anyio.move_on_after(min(self.timeouts.command, 10.0)):
                    with contextlib.suppress(ClientError, LocalProtocolError):
                        await self._command(Quit(), self.timeouts.command)
            raise ReplyError(
                "the server refused the session",
                reply=event.reply,
                host=self.host,
                remote=True,
            )
        await self._hello(helo)
        if tls.mode in (TLSMode.OPPORTUNISTIC, TLSMode.REQUIRED):
            await self._starttls(helo, tls, server_hostname)
        if credentials is not None:
            await self._authenticate(credentials)

    async def _hello(self, helo: str) -> None:
        command: Command = Lhlo(helo) if self.lmtp else Ehlo(helo)
        reply = await self._command(command, self.timeouts.command)
        if reply.is_positive:
            return
        if not self.lmtp and reply.is_permanent and reply.code != 421:
            # RFC 5321 3.2: a server that does not know EHLO says 500 or
            # 502 (or 550); "the client SHOULD fall back to HELO".
            reply = await self._command(Helo(helo), self.timeouts.command)
            if reply.is_positive:
                return
        raise ReplyError("the server refused HELO/EHLO", reply=reply, host=self.host, remote=True)

    async def _starttls(self, helo: str, tls: TLSPolicy, server_hostname: str) -> None:
        required = tls.mode is TLSMode.REQUIRED
        if not self._conn.extensions.starttls:
            if required:
                raise TLSError(
                    "TLS is required but the server does not offer STARTTLS",
                    reply=_TLS_NOT_OFFERED,
                    host=self.host,
                )
            return
        reply = await self._command(StartTls(), self.timeouts.command)
        if reply.code == 421:
            raise ReplyError(
                "the server closed the session",
                reply=reply,
                host=self.host,
                remote=True,
            )
        if reply.is_positive and reply.code != 220:
            # RFC 3207 4 knows 220, 454 and 501.  Another 2xx leaves it
            # unknown whether the server now waits for a handshake: this
            # session is unusable (the opportunistic policy retries in clear
            # on a new connection, as for a failed handshake).
            self._broken = True
            raise TLSError(f"unexpected reply to STARTTLS: {reply}", host=self.host)
        if reply.code != 220:
            if required:
                raise TLSError(
                    "the server refused STARTTLS",
                    reply=reply,
                    host=self.host,
                    remote=True,
                )
            return  # RFC 3207 4: continue in clear (opportunistic policy).
        await self._handshake(tls, server_hostname)
        # RFC 3207 4.2: the session starts over; whatever the server sent
        # between its 220 and the handshake is dropped, never read as a reply.
        self.discarded_after_starttls = self._conn.tls_established()
        await self._hello(helo)

    async def _handshake(self, tls: TLSPolicy, server_hostname: str) -> None:
        try:
            with anyio.fail_after(self.timeouts.command):
                self.stream = await TLSStream.wrap(
                    self.stream,
                    hostname=server_hostname,
                    ssl_context=tls.context(),
                    # SMTP has its own end (QUIT); many servers close without
                    # a TLS close_notify, which is not an error here.
                    standard_compatible=False,
                )
        except TimeoutError:
            self._broken = True
            raise TLSError("TLS handshake timed out", host=self.host) from None
        except (*_IO_ERRORS, anyio.EndOfStream) as exc:
            self._broken = True
            raise TLSError(f"TLS handshake failed: {_describe(exc)}", host=self.host) from None
        if not self._conn.tls_active and self._conn.state is ClientState.GREETING:
            # Implicit TLS: the session has not started; nothing to reset.
            self._conn.tls_active = True

    async def _authenticate(self, credentials: Credentials) -> None:
        if not self._conn.tls_active and not credentials.allow_plaintext:
            raise AuthError(
                "refusing to send credentials over an unencrypted connection",
                host=self.host,
            )
        offered = self._conn.extensions.auth
        mechanism = next((m for m in credentials.mechanisms if m.upper() in offered), None)
        if mechanism is None:
            raise AuthError(
                f"no usable AUTH mechanism (offered: {sorted(offered)})",
                host=self.host,
            )
        user = credentials.username.encode("utf-8")
        password = credentials.password.encode("utf-8")
        timeout = self.timeouts.command
        if mechanism.upper() == "PLAIN":
            # RFC 4616 2: message = [authzid] NUL authcid NUL passwd
            reply = await self._command(Auth("PLAIN", b"\0" + user + b"\0" + password), timeout)
        else:
            # AUTH LOGIN (draft-murchison-sasl-login): user name, then password.
            reply = await self._command(Auth(mechanism), timeout)
            for answer in (user, password):
                if reply.code != 334:
                    break
                reply = await self._command(AuthResponse(answer), timeout)
        if reply.code == 334:
            # More challenges than the mechanism has: cancel (RFC 4954 4).
            reply = await self._command(AuthResponse(None), timeout)
        if not reply.is_positive:
            raise AuthError(
                "authentication failed",
                reply=reply,
                host=self.host,
                remote=True,
                soft=credentials.soft_bounce,
            )

    # -- Reading and writing ---------------------------------------------------

    @contextlib.contextmanager
    def _deadline(self, seconds: float | None, doing: str) -> Iterator[None]:
        """Time out after ``seconds`` (if given); translate I/O errors.

        anyio's TimeoutError becomes :class:`~smtp_client.TimedOut`; a broken
        stream, an ssl error or an OSError becomes
        :class:`~smtp_client.ConnectionLost`.  Either way the connection is
        not used again.
        """
        try:
            if seconds is None:
                yield
            else:
                with anyio.fail_after(seconds):
                    yield
        except TimeoutError:
            self._broken = True
            raise TimedOut(f"{doing}: nothing within {seconds:g} s", host=self.host) from None
        except _IO_ERRORS as exc:
            self._broken = True
            raise ConnectionLost(
                f"connection lost ({doing}): {_describe(exc)}", host=self.host
            ) from None

    async def _write(self, data: bytes, seconds: float | None) -> None:
        """Send ``data``; ``seconds=None`` when the caller holds a deadline."""
        if seconds is not None:
            with self._deadline(seconds, "sending"):
                await self.stream.send(data)
            return
        try:
            await self.stream.send(data)
        except _IO_ERRORS as exc:
            self._broken = True
            raise ConnectionLost(
                f"connection lost (sending): {_describe(exc)}", host=self.host
            ) from None

    def _parse(self) -> Greeting | Response | DataResponse | ConnectionClosed | None:
        try:
            event = self._conn.next_event()
        except ReplySyntaxError as exc:
            self._broken = True
            raise ProtocolError(str(exc), host=self.host) from None
        if event is NEED_DATA:
            return None
        if event is PAUSED:  # pragma: no cover - STARTTLS is handled in place
            raise ProtocolError("a reply while TLS is due", host=self.host)
        assert not isinstance(event, Sentinel)
        return event

    async def _event(self, seconds: float | None) -> Greeting | Response | DataResponse:
        """The next reply event, waiting at most ``seconds`` for it.

        ``None``: the caller holds a deadline for a whole exchange.
        """
        # Pipelined replies usually arrive together: parse what is buffered
        # before paying for a timeout scope and a read.
        event = self._parse()
        if event is None:
            with self._deadline(seconds, "waiting for a reply"):
                while event is None:
                    try:
                        data = await self.stream.receive(READ_SIZE)
                    except anyio.EndOfStream:
                        data = b""
                    self._conn.receive_data(data)
                    event = self._parse()
        if isinstance(event, ConnectionClosed):
            self._broken = True
            raise ConnectionLost("the server closed the connection", host=self.host)
        return event

    async def _reply(self, seconds: float | None) -> Reply:
        event = await self._event(seconds)
        if isinstance(event, Greeting):  # pragma: no cover - the state machine's job
            raise ProtocolError("a second greeting", host=self.host)
        return event.reply

    async def _command(self, command: Command | AuthResponse, seconds: float) -> Reply:
        with self._deadline(seconds, command.__class__.__name__.upper()):
            await self._write(self._conn.send(command), None)
            return await self._reply(None)

    # -- State -------------------------------------------------------------------

    @property
    def extensions(self) -> Extensions:
        """What the server advertised in its last EHLO/LHLO reply."""
        return self._conn.extensions

    @property
    def _features(self) -> _Features:
        ext = self._conn.extensions
        if self._features_of is not ext or self._features_cache is None:
            self._features_of = ext
            self._features_cache = _Features.of(ext)
        return self._features_cache

    @property
    def tls_active(self) -> bool:
        """Whether the session is encrypted."""
        return self._conn.tls_active

    @property
    def usable(self) -> bool:
        """Whether another transaction can be tried on this connection."""
        return (
            not self._broken
            and self._conn.awaiting == 0
            and self._conn.state in (ClientState.READY, ClientState.MAIL, ClientState.RCPT)
        )

    # -- Transactions ------------------------------------------------------------

    async def send_message(
        self,
        envelope: Envelope,
        body: Body | bytes,
        *,
        reused: bool = False,
    ) -> list[RecipientResult]:
        """Send one message; return one result per recipient, in order.

        Recipients travel together, at most :data:`MAX_RECIPIENTS` per
        transaction.  RSET goes first when the previous transaction did not
        end cleanly (RFC 5321 4.1.1.5); after a completed one the server is
        reset already (4.1.1.4).  ``reused`` says the connection sat idle in
        a pool: if the server closed it meanwhile (before any reply),
        :class:`StaleConnection` is raised and nothing was delivered.

        Server replies, lost connections and timeouts become results, never
        exceptions; a bad body (a bare line ending under ``REJECT``)
        becomes a permanent result.  Raises :class:`ValueError` if a body
        stream would have to be read twice (more than 100 recipients:
        pass a callable instead).
        """
        if isinstance(body, bytes):
            try:
                body = Body.prepare(body, self.bare_line_endings)
            except MessageRefused as exc:
                return [RecipientResult.from_error(r.address, exc) for r in envelope.recipients]
        recipients = envelope.recipients
        if len(recipients) > MAX_RECIPIENTS and not body.replayable:
            raise ValueError("more than 100 recipients need a body that can be read again")
        results: list[RecipientResult] = []
        for start in range(0, len(recipients), MAX_RECIPIENTS):
            batch = recipients[start : start + MAX_RECIPIENTS]
            if not self.usable:
                error = ConnectionLost("connection no longer usable", host=self.host)
                results += [RecipientResult.from_error(r.address, error) for r in batch]
                continue
            results += await self._transaction(envelope, batch, body, reused=reused and start == 0)
        self.messages += 1
        self.last_used = anyio.current_time()
        return results

    def _mail_params(self, envelope: Envelope, body: Body) -> MailParams:
        """The MAIL parameters this server gets; raise if it cannot take the message."""
        ext = self._features
        p = envelope.params
        size = body.size if body.size is not None else p.size
        if ext.size is None:
            size = None
        elif ext.size and size is not None and size > ext.size:
            # RFC 1870 6: the client should not send a message larger than
            # the server's fixed maximum.
            raise MessageRefused(
                _TOO_BIG.format(size=size, limit=ext.size),
                reply=Reply(552, "5.3.4", _TOO_BIG.format(size=size, limit=ext.size)),
                host=self.host,
            )
        body_type = p.body
        if body_type is BodyType.BINARY_MIME:
            if not (ext.binarymime and ext.chunking):
                raise MessageRefused(
                    "BINARYMIME not supported", reply=_NO_BINARYMIME, host=self.host
                )
        elif body.eight_bit is False and body_type is BodyType.EIGHT_BIT_MIME:
            # Declared 8-bit but is 7-bit: no need for the extension.
            body_type = body_type if ext.eightbitmime else None
        elif body.eight_bit or body_type is BodyType.EIGHT_BIT_MIME:
            # RFC 6152 3: 8-bit data only to a server that announced 8BITMIME;
            # refusing is better than corrupting it (no conversion here).
            if not ext.eightbitmime:
                raise MessageRefused("8BITMIME not supported", reply=_NO_8BITMIME, host=self.host)
            body_type = BodyType.EIGHT_BIT_MIME
        elif body.eight_bit is None and body_type is None and ext.eightbitmime:
            # A stream not yet seen: declare 8BITMIME (harmless for 7-bit
            # content) rather than send 8-bit data undeclared.
            body_type = BodyType.EIGHT_BIT_MIME
        smtputf8 = envelope.needs_smtputf8
        if not smtputf8 and ext.smtputf8 and body.utf8_headers:
            # RFC 6531 3.4: a message that needs the extension's capabilities
            # (here UTF-8 header fields, RFC 6532) goes with SMTPUTF8.  A
            # server without it still gets the message under 8BITMIME, as
            # Postfix sends it: only a UTF-8 address makes it undeliverable.
            smtputf8 = True
        if smtputf8 and not ext.smtputf8:
            # RFC 6531 3.2 and 3.7.5: no downgrade; the message cannot go.
            raise MessageRefused("SMTPUTF8 not supported", reply=_NO_SMTPUTF8, host=self.host)
        if p.requiretls and not (self._conn.tls_active and ext.requiretls):
            # RFC 8689 4.1 / 5: never relay a REQUIRETLS message unencrypted.
            raise MessageRefused("REQUIRETLS not possible", reply=_NO_REQUIRETLS, host=self.host)
        return MailParams(
            size=size,
            body=body_type,
            smtputf8=smtputf8,
            # RFC 3461 5.2.2: DSN parameters only to a server that takes them.
            ret=p.ret if ext.dsn else None,
            envid=p.envid if ext.dsn else None,
            # RFC 4954 5: AUTH= only where AUTH is advertised.
            auth=p.auth if ext.auth else None,
            requiretls=p.requiretls,
            extra=p.extra,
        )

    def _bdat(self, params: MailParams) -> bool:
        ext = self._features
        return ext.chunking and (self.use_chunking or params.body is BodyType.BINARY_MIME)

    async def _transaction(
        self,
        envelope: Envelope,
        recipients: Sequence[Recipient],
        body: Body,
        *,
        reused: bool,
    ) -> list[RecipientResult]:
        tx = _Transaction(self, [r.address for r in recipients])
        try:
            params = self._mail_params(envelope, body)
        except MessageRefused as exc:
            return tx.fail_all(exc)
        dsn = self._features.dsn
        commands: list[Command] = []
        if self._conn.state is not ClientState.READY:
            commands.append(Rset())
        commands.append(MailFrom(envelope.sender, params))
        commands += [
            RcptTo(r.address, r.params if dsn else _strip_dsn(r.params)) for r in recipients
        ]
        bdat = self._bdat(params)
        if not bdat:
            commands.append(Data())
        try:
            await tx.run(commands, body, bdat=bdat)
        except MessageRefused as exc:
            # Found while streaming: the connection is dropped without the
            # end-of-data mark, so the server delivers nothing.
            await self.abort()
            tx.fail_undecided(exc)
        except ClientError as exc:
            if reused and not tx.got_reply and (isinstance(exc, ConnectionLost) or _closing(exc)):
                # Closed while idle in the pool (RFC 5321 4.5.3.2.7), with or
                # without a 421 first (3.8): nothing was delivered.
                raise StaleConnection(str(exc)) from None
            if isinstance(exc, ProtocolError):
                # Replies and commands are out of step: nothing more can be
                # trusted on this connection.
                await self.abort()
            tx.fail_undecided(exc)
        except LocalProtocolError as exc:
            # The server's replies led the state machine where no command is
            # legal (a 354 after a refused MAIL ...): it is out of step.
            await self.abort()
            tx.fail_undecided(ProtocolError(f"the server is out of step: {exc}", host=self.host))
        except BaseException:
            # The caller's body stream failed, or we were cancelled: the
            # session is in an unknown state and must not be reused.
            await self.abort()
            raise
        return tx.results()

    # -- Closing -----------------------------------------------------------------

    async def aclose(self) -> None:
        """Say QUIT (RFC 5321 4.1.1.10) if the session allows, and close."""
        try:
            if self.usable or (self._conn.state is ClientState.HELLO and not self._broken):
                with anyio.move_on_after(min(self.timeouts.command, 10.0)):
                    await self._command(Quit(), self.timeouts.command)
        except (ClientError, LocalProtocolError):
            pass
        finally:
            await self.abort()

    async def abort(self) -> None:
        """Close the connection at once, without QUIT."""
        self._broken = True
        await anyio.aclose_forcefully(self.stream)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _closing(exc: ClientError) -> bool:
    """Whether ``exc`` is the server's 421, closing the session."""
    return isinstance(exc, ReplyError) and exc.remote and exc.reply.code == 421


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed: {exc.verify_message}"
    cause = exc.__cause__ or exc.__context__
    return str(exc) or (str(cause) if cause else "") or type(exc).__name__


@attrs.define(eq=False)
class _Transaction:
    """The bookkeeping of one transaction: which reply decides which recipient."""

    conn: Connection
    recipients: list[Mailbox]
    decided: list[RecipientResult | None] = attrs.field(init=False)
    #: Indices of the recipients the server accepted, in RCPT order.
    accepted: list[int] = attrs.field(factory=list, init=False)
    #: Whether a reply to this transaction was taken in (a 421 closing the
    #: session is not: it says nothing of the transaction).
    got_reply: bool = False
    mail_reply: Reply | None = None
    _rcpts_answered: int = 0

    def __attrs_post_init__(self) -> None:
        self.decided = [None] * len(self.recipients)

    def results(self) -> list[RecipientResult]:
        out = []
        for result in self.decided:
            assert result is not None
            out.append(result)
        return out

    def fail_all(self, error: ClientError) -> list[RecipientResult]:
        self.decided = [RecipientResult.from_error(r, error) for r in self.recipients]
        return self.results()

    def fail_undecided(self, error: ClientError) -> None:
        for i, result in enumerate(self.decided):
            if result is None:
                self.decided[i] = RecipientResult.from_error(self.recipients[i], error)

    def decide(self, index: int, reply: Reply) -> None:
        self.decided[index] = RecipientResult.from_reply(
            self.recipients[index], reply, self.conn.host
        )

    def decide_undecided(self, reply: Reply) -> None:
        for i, result in enumerate(self.decided):
            if result is None:
                self.decide(i, reply)

    async def run(self, commands: list[Command], body: Body, *, bdat: bool) -> None:
        conn = self.conn
        proto = conn._conn
        t = conn.timeouts
        pipelining = conn._features.pipelining or conn.lmtp
        # The whole body rides with the envelope when it is known and fits
        # one chunk (RFC 3030 4.2 pipelines MAIL, RCPT and BDAT): one round
        # trip per message.
        inline = bdat and pipelining and body.data is not None and len(body.data) <= BDAT_CHUNK
        timeouts = {
            "RSET": t.command,
            "MAIL": t.mail,
            "RCPT": t.rcpt,
            "DATA": t.data_init,
        }
        data_reply: Reply | None = None
        first: DataResponse | None = None
        if pipelining:
            # RFC 2920 3.1: the whole group in one write, then the replies,
            # all within the sum of the commands' timeouts (the server may
            # take each one's full time).
            out = b"".join(proto.send(c) for c in commands)
            if inline:
                assert body.data is not None
                out += proto.send_chunk(body.data, last=True)
            group = sum(timeouts[c.verb] for c in commands)
            if inline:
                group += t.data_end
            with conn._deadline(group, "sending the envelope"):
                await conn._write(out, None)
                for command in commands:
                    reply = await conn._reply(None)
                    data_reply = self._group_reply(command, reply) or data_reply
                    self.got_reply = True
                if inline:
                    if self.mail_reply is not None:
                        self.decide_undecided(self.mail_reply)
                    first = await self._body_event(None)
            if inline:
                await self._body_replies(first=first)
                return
        else:
            for command in commands:
                if isinstance(command, RcptTo) and self.mail_reply is not None:
                    break
                if isinstance(command, Data) and not self.accepted:
                    break
                reply = await conn._command(command, timeouts[command.verb])
                data_reply = self._group_reply(command, reply) or data_reply
                self.got_reply = True
        if self.mail_reply is not None:
            self.decide_undecided(self.mail_reply)
        if not self.accepted:
            if data_reply is not None and data_reply.code == 354:
                # RFC 2920 3.1: DATA accepted although every RCPT failed.
                # The client "SHOULD send a single dot", but smtp_message's
                # state machine has no DATA without a recipient; closing the
                # connection ends the empty message just as surely (nothing
                # can be delivered), at the cost of this connection.
                await conn.abort()
            return
        if bdat:
            await self._send_chunks(body, pipelining)
            return
        assert data_reply is not None
        if data_reply.code != 354:
            self.decide_undecided(data_reply)
            return
        await self._send_data(body)

    def _group_reply(self, command: Command, reply: Reply) -> Reply | None:
        """Take in the reply to an envelope command; return it if it is DATA's."""
        if reply.code == 421:
            # RFC 5321 3.8: the server is closing the session.
            raise ReplyError(
                "the server closed the session",
                reply=reply,
                host=self.conn.host,
                remote=True,
            )
        if isinstance(command, Data):
            if reply.is_positive:
                # RFC 5321 4.3.2: DATA's success is 354.  A 2xx here means
                # the replies are out of step with the commands; taking it as
                # a verdict could report an undelivered message delivered.
                raise ProtocolError(f"unexpected reply to DATA: {reply}", host=self.conn.host)
            return reply
        if reply.is_intermediate:
            raise ProtocolError(f"unexpected 3xx reply: {reply}", host=self.conn.host)
        self._envelope_reply(command, reply)
        return None

    def _envelope_reply(self, command: Command, reply: Reply) -> None:
        if isinstance(command, MailFrom):
            if not reply.is_positive:
                self.mail_reply = reply
        elif isinstance(command, RcptTo):
            index = self._rcpts_answered
            self._rcpts_answered += 1
            if self.mail_reply is not None:
                if reply.is_positive:
                    # RFC 5321 4.1.1.3: no RCPT without an accepted MAIL.  A
                    # server that accepts one anyway is out of step, and may
                    # even deliver: never report that as a refusal.
                    raise ProtocolError(
                        f"RCPT accepted after MAIL was refused: {reply}", host=self.conn.host
                    )
                self.decide(index, self.mail_reply)
            elif reply.is_positive:
                self.accepted.append(index)
            elif reply.code == 552:
                # RFC 5321 4.5.3.1.10: a 552 to RCPT is the old code for
                # "too many recipients" (now 452), and "Clients SHOULD treat
                # a 552 code in this case as a temporary, rather than
                # permanent, failure": the recipient is tried again later
                # instead of bouncing.  The reply stays as the server gave it.
                self.decided[index] = RecipientResult(
                    self.recipients[index], Status.TRANSIENT, reply, self.conn.host
                )
            else:
                self.decide(index, reply)
        elif isinstance(command, Rset) and not reply.is_positive:
            raise ProtocolError(f"RSET refused: {reply}", host=self.conn.host)

    def _check_piece(self, piece: bytes, sent: int) -> None:
        ext = self.conn._features
        if not ext.eightbitmime and not piece.isascii():
            raise MessageRefused("8BITMIME not supported", reply=_NO_8BITMIME, host=self.conn.host)
        if ext.size and sent > ext.size:
            text = _TOO_BIG.format(size=f"more than {ext.size}", limit=ext.size)
            raise MessageRefused(text, reply=Reply(552, "5.3.4", text), host=self.conn.host)

    async def _send_data(self, body: Body) -> None:
        conn = self.conn
        proto = conn._conn
        t = conn.timeouts
        sent = 0
        if body.data is not None:
            # Known in full: one write (or one per WRITE_SIZE) for all of it.
            self._check_piece(body.data, len(body.data))
            out = proto.send_body(body.data) + proto.end_body()
            if len(out) <= WRITE_SIZE:
                with conn._deadline(t.data_block + t.data_end, "sending the body"):
                    await conn._write(out, None)
                    first = await self._body_event(None)
                await self._body_replies(first=first)
                return
            await self._write_all(out, t.data_block)
            await self._body_replies(t.data_end)
            return
        async with contextlib.aclosing(body.pieces()) as pieces:
            async for piece in pieces:
                sent += len(piece)
                self._check_piece(piece, sent)
                await self._write_all(proto.send_body(piece), t.data_block)
        await self._write_all(proto.end_body(), t.data_block)
        await self._body_replies(t.data_end)

    async def _write_all(self, data: bytes, seconds: float) -> None:
        for start in range(0, len(data), WRITE_SIZE):
            await self.conn._write(data[start : start + WRITE_SIZE], seconds)

    async def _send_chunks(self, body: Body, pipelining: bool) -> None:
        conn = self.conn
        proto = conn._conn
        t = conn.timeouts
        window = BDAT_WINDOW if pipelining else 0
        outstanding = 0
        sent = 0
        buffer = bytearray()

        async def flush(last: bool) -> bool:
            nonlocal outstanding
            chunk = bytes(buffer)
            buffer.clear()
            await self._write_all(proto.send_chunk(chunk, last=last), t.data_block)
            if last:
                return True
            outstanding += 1
            while outstanding > window:
                outstanding -= 1
                reply = await conn._reply(t.data_block)
                if not reply.is_positive:
                    # RFC 3030 2: a failed chunk ends the transaction.
                    self.decide_undecided(reply)
                    return False
            return True

        async with contextlib.aclosing(body.pieces()) as pieces:
            async for piece in pieces:
                sent += len(piece)
                self._check_piece(piece, sent)
                buffer += piece
                if len(buffer) >= BDAT_CHUNK and not await flush(last=False):
                    await self._drain(outstanding)
                    return
        while outstanding:
            outstanding -= 1
            reply = await conn._reply(t.data_block)
            if not reply.is_positive:
                self.decide_undecided(reply)
                await self._drain(outstanding)
                return
        await flush(last=True)
        await self._body_replies(t.data_end)

    async def _drain(self, outstanding: int) -> None:
        for _ in range(outstanding):
            await self.conn._reply(self.conn.timeouts.data_block)

    def _check_final(self, reply: Reply) -> None:
        if reply.is_intermediate:
            # RFC 5321 4.3.2: the end of the data gets 2xx, 4xx or 5xx.
            raise ProtocolError(f"unexpected reply to the body: {reply}", host=self.conn.host)

    async def _body_event(self, seconds: float | None) -> DataResponse:
        event = await self.conn._event(seconds)
        if not isinstance(event, DataResponse):  # the state machine's job; never an assert
            raise ProtocolError(f"not a reply to the body: {event}", host=self.conn.host)
        return event

    async def _body_replies(
        self, seconds: float | None = None, *, first: DataResponse | None = None
    ) -> None:
        """The reply to the end of the body: one, or one per recipient (LMTP).

        ``first``: the first reply, already read under the deadline of the
        exchange that sent the body.  Each further reply (LMTP) has the whole
        data_end timeout: an LMTP server delivers to one recipient after the
        other, and a reply given up on while it was on its way would make
        the retry deliver that recipient's message twice.
        """
        conn = self.conn
        if first is None:
            first = await self._body_event(seconds)
        if not conn.lmtp:
            event = first
            self._check_final(event.reply)
            for i in self.accepted:
                self.decide(i, event.reply)
            return
        # RFC 2033 4.2: one reply per accepted recipient, in RCPT order (and
        # one reply in all when none was accepted, to a BDAT LAST sent along).
        order: list[int | None] = list(self.accepted) or [None]
        for n, index in enumerate(order):
            event = first if n == 0 else await self._body_event(conn.timeouts.data_end)
            self._check_final(event.reply)
            if event.reply.code == 421:
                self.decide_undecided(event.reply)
                return
            if index is not None:
                self.decide(index, event.reply)
