"""The client side of a session, sans I/O."""

from __future__ import annotations

from collections import deque

import attrs

from ._body import BareLineEndings, DotStuffer
from ._commands import (
    Auth,
    AuthResponse,
    Bdat,
    Command,
    Data,
    Ehlo,
    Helo,
    Lhlo,
    MailFrom,
    RcptTo,
    StartTls,
)
from ._errors import LocalProtocolError, ReplySyntaxError
from ._events import NEED_DATA, PAUSED, ConnectionClosed, Sentinel
from ._extensions import Extensions
from ._params import BodyType
from ._reply import Reply, ReplyParser
from ._state import (
    AUTH_RESPONSE,
    END_OF_DATA,
    GREETING,
    TLS_ESTABLISHED,
    ClientState,
    client_is_legal,
    client_next,
)

__all__ = ["ClientConnection", "DataResponse", "Greeting", "Response"]


@attrs.frozen
class Greeting:
    """The server's first reply (RFC 5321 3.1)."""

    reply: Reply


@attrs.frozen
class Response:
    """The server's reply to one command the client sent."""

    #: ``None`` only for a 421 the server sent unprompted (RFC 5321 3.8).
    command: Command | AuthResponse | None
    reply: Reply


@attrs.frozen
class DataResponse:
    """The server's reply to a message body.

    In LMTP there is one per accepted recipient, in RCPT order (RFC 2033
    4.2), and ``recipient`` says whose it is; in SMTP there is one, for
    every recipient, and ``recipient`` is ``None``.
    """

    reply: Reply
    recipient: RcptTo | None = None


ClientEvent = Greeting | Response | DataResponse | ConnectionClosed

# RFC 2920 3.1: "RSET, MAIL FROM, SEND FROM, SOML FROM, SAML FROM, and RCPT
# TO can appear anywhere in a pipelined command group", "the actual transfer
# of message content is explicitly allowed to be the first 'command' in a
# group", and RFC 3030 4.2 pipelines BDAT chunks.  Every other command ends
# a group: the client waits for the replies before sending anything more.
_PIPELINABLE = frozenset({"RSET", "MAIL", "RCPT", "BDAT", "BDAT LAST", END_OF_DATA})

# The reply that lets each command go on, for the state a pipelining
# client expects to be in once its commands succeed.
_SUCCESS = {"DATA": 354, "AUTH": 334, "STARTTLS": 220, "QUIT": 221}


_TRANSACTION_STATES = frozenset(
    {ClientState.MAIL, ClientState.RCPT, ClientState.DATA, ClientState.BDAT}
)


def _trigger(command: Command | AuthResponse) -> str:
    if isinstance(command, AuthResponse):
        return AUTH_RESPONSE
    if isinstance(command, Bdat) and command.last:
        return "BDAT LAST"
    return command.verb


@attrs.define(eq=False)
class ClientConnection:
    r"""One client session, sans I/O (in the manner of h11's ``Connection``).

    RFC 5321 3 and 4 (replies: 4.2; with RFC 2033 for LMTP, RFC 3030 for
    BDAT, RFC 3207 for STARTTLS, RFC 4954 for AUTH).  :meth:`send` turns a
    command into bytes to write, after checking it is legal now: in
    sequence, allowed by the extensions the server advertised, and
    pipelined only where RFC 2920 allows.  Received bytes go to
    :meth:`receive_data`; :meth:`next_event` pairs each reply with what it
    answers::

        conn = ClientConnection()
        conn.receive_data(b"220 mx.example ESMTP\\r\\n")
        conn.next_event()                    # Greeting(reply=Reply(220, ...))
        out = conn.send(Ehlo("client.example"))

    Anything a command would need that the server did not advertise
    (SMTPUTF8 for a UTF-8 address, 8BITMIME, CHUNKING, a SIZE parameter ...)
    raises :class:`~smtp_message.LocalProtocolError` before a byte is
    produced.  After ``354`` the body goes through :meth:`send_body` and
    :meth:`end_body`, which dot-stuff it and make every line ending CRLF.
    """

    lmtp: bool = False
    #: What to do with a bare CR or LF in a body sent with DATA or BDAT.
    bare_line_endings: BareLineEndings = BareLineEndings.NORMALIZE
    state: ClientState = attrs.field(default=ClientState.GREETING, init=False)
    #: What the server advertised in its last EHLO/LHLO reply.
    extensions: Extensions = attrs.field(factory=Extensions, init=False)
    tls_active: bool = False
    #: The MAIL command of the transaction in progress, once accepted.
    mail_from: MailFrom | None = attrs.field(default=None, init=False)
    #: Recipients the server accepted in this transaction, in order.
    accepted: list[RcptTo] = attrs.field(factory=list, init=False)
    _parser: ReplyParser = attrs.field(factory=ReplyParser, init=False)
    _pending: deque[tuple[str, Command | AuthResponse | RcptTo | None]] = attrs.field(
        factory=deque, init=False
    )
    _projected: ClientState = attrs.field(default=ClientState.GREETING, init=False)
    _stuffer: DotStuffer | None = attrs.field(default=None, init=False)
    _eof: bool = attrs.field(default=False, init=False)
    _sent_mail: MailFrom | None = attrs.field(default=None, init=False)
    # How the body in progress ends: END_OF_DATA (DATA) or "BDAT LAST".
    _body_trigger: str = attrs.field(default=END_OF_DATA, init=False)
    # The message of the first ReplySyntaxError: set, the session is over.
    _error: str | None = attrs.field(default=None, init=False)

    # -- Input --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the server; ``b""`` means end of file."""
        if data:
            self._parser.feed(data)
        else:
            self._eof = True

    @property
    def awaiting(self) -> int:
        """How many replies are still expected."""
        return len(self._pending) + (1 if self.state is ClientState.GREETING else 0)

    def next_event(self) -> ClientEvent | Sentinel:
        """Return the next reply event, :data:`NEED_DATA` or :data:`PAUSED`.

        Raises :class:`~smtp_message.ReplySyntaxError` for a malformed reply
        (RFC 5321 4.2), or a reply when none was expected.  The error is
        final, as in h11: the replies and the commands are out of step, so
        the state becomes ``CLOSED``, the caller should close the
        connection, and every later call raises
        :class:`~smtp_message.ReplySyntaxError` again.
        """
        if self._error is not None:
            raise ReplySyntaxError(self._error)
        if self.state is ClientState.STARTTLS:
            return PAUSED
        try:
            return self._next_event()
        except ReplySyntaxError as exc:
            self._error = str(exc)
            self._close()
            raise

    def _next_event(self) -> ClientEvent | Sentinel:
        expecting = self._pending[0][0] if self._pending else None
        if self.state is ClientState.GREETING:
            expecting = GREETING
        self._parser.enhanced = self.extensions.enhancedstatuscodes and expecting not in (
            GREETING,
            "HELO",
            "EHLO",
            "LHLO",
        )
        reply = self._parser.next_reply()
        if reply is None:
            if self._eof:
                self._close()
                return ConnectionClosed()
            return NEED_DATA
        if expecting == GREETING:
            self.state = self._projected = client_next(self.state, GREETING, reply.code)
            return Greeting(reply)
        if expecting is None:
            if reply.code == 421:
                # RFC 5321 3.8: a server may say 421 and close at any time.
                self._close()
                return Response(None, reply)
            raise ReplySyntaxError(f"reply without a command: {reply}")
        trigger, command = self._pending.popleft()
        if trigger == END_OF_DATA:
            event: ClientEvent = DataResponse(
                reply, command if isinstance(command, RcptTo) else None
            )
            if reply.code == 421:
                self._close()
            elif not (self._pending and self._pending[0][0] == END_OF_DATA):
                # The body's last reply (LMTP: one per recipient); commands
                # pipelined after the body may still be waiting for theirs.
                self._finish_body(reply)
            return event
        assert isinstance(command, Command | AuthResponse)
        if isinstance(command, Bdat) and command.last:
            if reply.code == 421:
                # The reply to the body, even when it closes the session:
                # whoever waits for a DataResponse gets one.
                first = self.accepted[0] if self.lmtp and self.accepted else None
                self._close()
                return DataResponse(reply, first)
            return self._on_last_chunk(reply)
        if reply.code == 421:
            self._close()
            return Response(command, reply)
        self._on_reply(trigger, command, reply)
        return Response(command, reply)

    def _close(self) -> None:
        self.state = self._projected = ClientState.CLOSED
        self._pending.clear()
        self._end_transaction()

    def _on_reply(self, trigger: str, command: Command | AuthResponse, reply: Reply) -> None:
        self.state = client_next(self.state, trigger, reply.code)
        if reply.is_positive or reply.is_intermediate:
            if isinstance(command, Ehlo | Lhlo):
                self.extensions = Extensions.from_reply(reply)
            elif isinstance(command, Helo):
                self.extensions = Extensions()
            elif isinstance(command, MailFrom):
                self.mail_from = command
            elif isinstance(command, RcptTo):
                self.accepted.append(command)
            elif isinstance(command, Data):
                self._body_trigger = END_OF_DATA
                self._stuffer = DotStuffer(self.bare_line_endings)
        if self.state not in _TRANSACTION_STATES:
            self._end_transaction()
        self._sync_projection()

    def _on_last_chunk(self, reply: Reply) -> ClientEvent:
        self._body_trigger = "BDAT LAST"
        if self.lmtp and self.accepted:
            # RFC 2033 4.2 with RFC 3030: the body gets one reply per
            # accepted recipient, in RCPT order; this is the first.
            first, *rest = self.accepted
            for rcpt in reversed(rest):
                self._pending.appendleft((END_OF_DATA, rcpt))
            if not rest:
                self._finish_body(reply)
            return DataResponse(reply, first)
        self._finish_body(reply)
        return DataResponse(reply, None)

    def _finish_body(self, reply: Reply) -> None:
        self.state = client_next(self.state, self._body_trigger, reply.code)
        self._end_transaction()
        self._sync_projection()

    def _end_transaction(self) -> None:
        self.mail_from = None
        self.accepted = []
        self._stuffer = None

    def _sync_projection(self) -> None:
        if not self._pending:
            self._projected = self.state

    # -- Output -----------------------------------------------------------------

    def send(self, command: Command | AuthResponse) -> bytes:
        """Check ``command`` is legal now and return its bytes.

        Raises :class:`~smtp_message.LocalProtocolError` (and produces
        nothing) if it is not.
        """
        trigger = _trigger(command)
        state = self._projected
        if self.state is ClientState.GREETING:
            raise LocalProtocolError("wait for the server's greeting")
        body_open = self.state is ClientState.DATA and self._stuffer is not None
        if self.state in (ClientState.CLOSED, ClientState.STARTTLS) or body_open:
            raise LocalProtocolError(f"cannot send {trigger} in state {self.state.name}")
        if not client_is_legal(state, trigger):
            raise LocalProtocolError(f"{trigger} is out of sequence in state {state.name}")
        if self._pending:
            front_ok = all(t in _PIPELINABLE for t, _ in self._pending)
            if not (self.extensions.pipelining or self.lmtp) or not front_ok:
                raise LocalProtocolError(
                    f"wait for the replies before sending {trigger} (RFC 2920)"
                )
        self._check_extensions(command)
        if isinstance(command, MailFrom):
            self._sent_mail = command
        self._pending.append((trigger, command))
        code = _SUCCESS.get(trigger, 250)
        self._projected = client_next(state, trigger, code)
        if isinstance(command, Bdat) and command.last and self.lmtp:
            self._projected = ClientState.READY
        return command.to_bytes()

    def _check_extensions(self, command: Command | AuthResponse) -> None:
        ext = self.extensions
        if isinstance(command, Lhlo) != self.lmtp and isinstance(command, Helo | Ehlo | Lhlo):
            raise LocalProtocolError("LMTP uses LHLO; SMTP uses EHLO or HELO")
        if isinstance(command, MailFrom):
            p = command.params
            needs = {
                "SIZE": ext.size is not None,
                "SMTPUTF8": ext.smtputf8,
                "RET": ext.dsn,
                "ENVID": ext.dsn,
                "AUTH": bool(ext.auth),
                "REQUIRETLS": ext.requiretls,
            }
            for keyword, ok in needs.items():
                if keyword in p.keywords and not ok:
                    raise LocalProtocolError(f"the server does not support {keyword}")
            if p.body is BodyType.EIGHT_BIT_MIME and not ext.eightbitmime:
                raise LocalProtocolError("the server does not support 8BITMIME")
            if p.body is BodyType.BINARY_MIME and not ext.binarymime:
                raise LocalProtocolError("the server does not support BINARYMIME")
            path = command.reverse_path
            if path is not None and path.needs_smtputf8 and not p.smtputf8:
                raise LocalProtocolError("a UTF-8 address needs the SMTPUTF8 parameter")
            size = ext.size
            if size and p.size is not None and p.size > size:
                raise LocalProtocolError(
                    f"message of {p.size} octets exceeds the server's limit of {size}"
                )
        elif isinstance(command, RcptTo):
            if command.params.keywords & {"NOTIFY", "ORCPT"} and not ext.dsn:
                raise LocalProtocolError("the server does not support DSN")
            mail = self._sent_mail
            utf8 = mail is not None and mail.params.smtputf8
            if command.forward_path.needs_smtputf8 and not utf8:
                raise LocalProtocolError("a UTF-8 address needs SMTPUTF8 on MAIL")
        elif isinstance(command, Bdat):
            if not ext.chunking:
                raise LocalProtocolError("the server does not support CHUNKING")
        elif isinstance(command, StartTls):
            if self.tls_active or not ext.starttls:
                raise LocalProtocolError("STARTTLS is not available")
        elif isinstance(command, Auth) and command.mechanism not in ext.auth:
            raise LocalProtocolError(f"the server does not offer AUTH {command.mechanism}")
        elif isinstance(command, Data):
            mail = self._sent_mail
            if mail is not None and mail.params.body is BodyType.BINARY_MIME:
                raise LocalProtocolError("BODY=BINARYMIME needs BDAT (RFC 3030)")

    def send_body(self, chunk: bytes) -> bytes:
        """Encode the next piece of a DATA body (after the 354)."""
        if self.state is not ClientState.DATA or self._stuffer is None:
            raise LocalProtocolError("no DATA body is being sent")
        return self._stuffer.feed(chunk)

    def end_body(self) -> bytes:
        """Finish a DATA body: the rest of it and ``CRLF . CRLF``."""
        if self.state is not ClientState.DATA or self._stuffer is None:
            raise LocalProtocolError("no DATA body is being sent")
        out = self._stuffer.end()
        self._stuffer = None
        recipients: list[RcptTo | None] = list(self.accepted) if self.lmtp else [None]
        for rcpt in recipients or [None]:
            self._pending.append((END_OF_DATA, rcpt))
        # What may be pipelined after the body (RFC 2920 3.1) is judged
        # from the state its success would lead to.
        self._projected = client_next(ClientState.DATA, END_OF_DATA, 250)
        return out

    @property
    def body_size(self) -> int:
        """Octets of the DATA body sent so far (RFC 1870's message size)."""
        return self._stuffer.size if self._stuffer is not None else 0

    def send_chunk(self, data: bytes, *, last: bool = False) -> bytes:
        """``BDAT len(data) [LAST]`` followed by ``data`` (RFC 3030 2)."""
        return self.send(Bdat(len(data), last)) + data

    def tls_established(self) -> bytes:
        """Record that the STARTTLS handshake completed; return discarded bytes.

        Bytes the server sent after its 220 and before the handshake are
        thrown away, never read as replies (an injection attempt, like
        GHSA-vxj7-4xrp-5vr4 in aiosmtplib).  The session starts over: EHLO
        is next and the old extension list is forgotten (RFC 3207 4.2).
        """
        if self.state is not ClientState.STARTTLS:
            raise LocalProtocolError("no STARTTLS handshake is due")
        discarded = self._parser.take_unparsed()
        self._parser = ReplyParser()
        self.tls_active = True
        self.extensions = Extensions()
        self.state = self._projected = client_next(self.state, TLS_ESTABLISHED, 220)
        return discarded
