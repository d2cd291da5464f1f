"""The server side of a session, sans I/O."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import attrs

from ._address import DEFAULT_POLICY, AddressPolicy
from ._body import BareLineEndings, DataReader
from ._buffer import ReceiveBuffer
from ._commands import (
    Auth,
    AuthResponse,
    Bdat,
    ChunkSyntaxError,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rset,
    StartTls,
    Vrfy,
    parse_auth_response,
    parse_command,
)
from ._errors import (
    BadSequenceError,
    CommandSyntaxError,
    LineTooLongError,
    LocalProtocolError,
    MessageRejectedError,
    ParameterError,
    RemoteProtocolError,
)
from ._events import (
    NEED_DATA,
    PAUSED,
    BodyChunk,
    ConnectionClosed,
    EndOfChunk,
    EndOfData,
    Sentinel,
)
from ._extensions import Extensions
from ._limits import (
    MAIL_LINE_ALLOWANCE,
    MAX_AUTH_LINE,
    MAX_COMMAND_LINE,
    MAX_REPLY_LINE,
    MIN_RECIPIENTS,
    RCPT_LINE_ALLOWANCE,
)
from ._params import BodyType, MailParams
from ._replies import (
    AUTH_CANCELLED,
    AUTH_MECHANISM_UNKNOWN,
    AUTH_REQUIRED,
    BAD_SEQUENCE,
    BINARYMIME_NEEDS_BDAT,
    BYE,
    CANNOT_VRFY,
    COMMAND_UNRECOGNIZED,
    ENCRYPTION_REQUIRED,
    HELP,
    LINE_TOO_LONG,
    MESSAGE_ACCEPTED,
    MESSAGE_TOO_BIG,
    NO_VALID_RECIPIENTS,
    NOT_IMPLEMENTED,
    OK,
    PARAMETER_NOT_RECOGNIZED,
    READY_TO_START_TLS,
    RECIPIENT_OK,
    REQUIRETLS_NEEDS_TLS,
    SENDER_OK,
    START_MAIL_INPUT,
    TLS_REQUIRED,
    TOO_MANY_RECIPIENTS,
)
from ._reply import Reply, _safe_line
from ._state import (
    AUTH_RESPONSE,
    END_OF_DATA,
    GREETING,
    SEQUENCE_ERRORS,
    TLS_ESTABLISHED,
    ServerState,
    server_is_legal,
    server_next,
)

#: Greetings kept per settings, by text (a hook could vary the text).
MAX_CACHED_GREETINGS = 16

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ServerConnection", "ServerSettings", "Transaction"]

ServerEvent = Command | AuthResponse | BodyChunk | EndOfChunk | EndOfData | ConnectionClosed

# RFC 5321 4.1.2:  Domain = sub-domain *("." sub-domain), or an address
# literal: what the server calls itself in its greeting and EHLO reply.
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[\x21-\x5a\x5e-\x7e]+\]")
_MECHANISM = re.compile(r"[A-Z0-9_-]{1,20}")


def _check_hostname(_instance: object, _attribute: object, value: str) -> None:
    if not _HOSTNAME.fullmatch(value):
        raise ValueError(f"not a host name: {value!r}")


def _check_positive(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be at least 1")


def _check_line_length(_instance: object, _attribute: object, value: int) -> None:
    # RFC 5321 4.5.3.1: limits may be raised, never lowered below the RFC's.
    if value < MAX_COMMAND_LINE:
        raise ValueError(f"max_line_length must be at least {MAX_COMMAND_LINE}")


def _check_recipients(_instance: object, _attribute: object, value: int) -> None:
    if value < MIN_RECIPIENTS:
        raise ValueError(f"max_recipients must be at least {MIN_RECIPIENTS} (RFC 5321 4.5.3.1.8)")


def _check_mechanisms(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    for mechanism in value:
        if not _MECHANISM.fullmatch(mechanism):
            raise ValueError(f"not a SASL mechanism name: {mechanism!r}")


def _to_mechanisms(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(m.upper() for m in value)


def _upper_keywords(value: Iterable[str]) -> frozenset[str]:
    return frozenset(v.upper() for v in value)


#: What a session has before EHLO/LHLO, or after HELO (checked per command).
_NO_EXTENSIONS: Final = Extensions()


@attrs.frozen
class ServerSettings:
    """What a server session offers and enforces.

    Every field has a default that makes a working, standards-conforming
    receiver; the ones that bound resource use are set to what an MTA on
    the open Internet would use.
    """

    #: The name the server gives in its greeting and EHLO reply.
    hostname: str = attrs.field(default="localhost", validator=_check_hostname)
    #: Speak LMTP (RFC 2033) instead of SMTP: LHLO, one reply per recipient.
    lmtp: bool = False
    #: Largest message accepted, in octets (RFC 1870); ``None`` for no limit.
    max_message_size: int | None = 32 * 1024 * 1024
    #: Recipients per transaction; further RCPTs get 452 4.5.3.
    max_recipients: int = attrs.field(default=1000, validator=_check_recipients)
    #: Longest command line, CRLF included (RFC 5321 4.5.3.1.4: 512); MAIL,
    #: RCPT and AUTH lines get the extra room their extensions define.
    max_line_length: int = attrs.field(default=MAX_COMMAND_LINE, validator=_check_line_length)
    #: Length limits for addresses (RFC 5321 4.5.3.1).
    address_policy: AddressPolicy = DEFAULT_POLICY
    #: Bare CR or LF in a DATA body (RFC 5321 2.3.8): refuse the message,
    #: keep the octets, or make each CRLF.  None of them ends the body.
    bare_line_endings: BareLineEndings = BareLineEndings.REJECT
    #: Advertise PIPELINING (RFC 2920).
    pipelining: bool = True
    #: Advertise 8BITMIME (RFC 6152).
    eightbitmime: bool = True
    #: Advertise SMTPUTF8 (RFC 6531).
    smtputf8: bool = True
    #: Advertise CHUNKING, i.e. accept BDAT (RFC 3030).
    chunking: bool = True
    #: Advertise BINARYMIME (RFC 3030); needs ``chunking``.
    binarymime: bool = True
    #: Advertise DSN and accept its parameters (RFC 3461).
    dsn: bool = True
    #: Offer STARTTLS (RFC 3207).  The I/O layer sets this when it has a
    #: TLS context.
    starttls: bool = False
    #: SASL mechanisms offered by AUTH (RFC 4954), e.g. ``("PLAIN", "LOGIN")``.
    auth_mechanisms: tuple[str, ...] = attrs.field(
        default=(), converter=_to_mechanisms, validator=_check_mechanisms
    )
    #: Offer AUTH only once TLS is active (RFC 4954 4: plain-text mechanisms
    #: over a clear channel expose passwords).
    auth_requires_tls: bool = True
    #: Refuse MAIL until the client authenticated (submission, RFC 6409 4.3).
    require_auth: bool = False
    #: Refuse MAIL until TLS is active (RFC 3207 4).
    require_tls: bool = False
    #: Advertise REQUIRETLS once TLS is active (RFC 8689).
    requiretls: bool = False
    #: Answer VRFY with 252 (RFC 5321 3.5.3); when false, 502.
    vrfy: bool = True
    #: MAIL parameters, beyond the known ones, passed to the caller instead
    #: of being refused with 555 (RFC 5321 4.1.1.11).
    extra_mail_parameters: frozenset[str] = attrs.field(
        default=frozenset(), converter=_upper_keywords
    )
    #: The same for RCPT parameters.
    extra_rcpt_parameters: frozenset[str] = attrs.field(
        default=frozenset(), converter=_upper_keywords
    )
    #: More EHLO keywords to advertise, as (keyword, parameters) pairs.
    extra_extensions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # Sessions ask for the extension list on every command; the settings
    # are immutable, so each of the four variants is built once.
    _extensions_cache: dict[tuple[bool, bool], Extensions] = attrs.field(
        factory=dict, init=False, eq=False, hash=False, repr=False
    )

    # The EHLO reply's extension lines and their wire form, likewise; and
    # the greetings by text.
    _hello_cache: dict[tuple[bool, bool], tuple[tuple[str, ...], bytes]] = attrs.field(
        factory=dict, init=False, eq=False, hash=False, repr=False
    )
    _greetings: dict[str, Reply] = attrs.field(
        factory=dict, init=False, eq=False, hash=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.binarymime and not self.chunking:
            # RFC 3030 3: BINARYMIME requires CHUNKING.
            raise ValueError("binarymime needs chunking")
        if self.max_message_size is not None and self.max_message_size < 1:
            # RFC 1870 4: "SIZE 0" advertises no limit, so a limit of 0
            # octets could not be advertised as it is enforced.
            raise ValueError("max_message_size must be at least 1 (None: no limit)")
        Extensions(self.extra_extensions)  # validates them

    def extensions(self, *, tls_active: bool, authenticated: bool) -> Extensions:
        """The extensions to advertise in this state of the session."""
        key = (tls_active, authenticated)
        cached = self._extensions_cache.get(key)
        if cached is None:
            cached = self._extensions_cache[key] = self._build_extensions(
                tls_active=tls_active, authenticated=authenticated
            )
        return cached

    def _hello_tail(
        self, *, tls_active: bool, authenticated: bool
    ) -> tuple[tuple[str, ...], bytes]:
        key = (tls_active, authenticated)
        cached = self._hello_cache.get(key)
        if cached is None:
            lines = tuple(
                self.extensions(tls_active=tls_active, authenticated=authenticated).lines()
            )
            wire = Reply(250, None, lines).to_bytes() if lines else b""
            cached = self._hello_cache[key] = (lines, wire)
        return cached

    def _build_extensions(self, *, tls_active: bool, authenticated: bool) -> Extensions:
        entries: list[tuple[str, tuple[str, ...]]] = []
        if self.pipelining or self.lmtp:
            # RFC 2033 4.1: an LMTP server MUST support PIPELINING.
            entries.append(("PIPELINING", ()))
        size = self.max_message_size
        entries.append(("SIZE", (str(size),) if size else ()))
        if self.eightbitmime:
            entries.append(("8BITMIME", ()))
        if self.smtputf8:
            entries.append(("SMTPUTF8", ()))
        # RFC 2034 / RFC 2033 4.1: always (an LMTP server MUST).
        entries.append(("ENHANCEDSTATUSCODES", ()))
        if self.chunking:
            entries.append(("CHUNKING", ()))
        if self.binarymime:
            entries.append(("BINARYMIME", ()))
        if self.dsn:
            entries.append(("DSN", ()))
        if self.starttls and not tls_active:
            entries.append(("STARTTLS", ()))
        if self.auth_offered(tls_active=tls_active) and not authenticated:
            entries.append(("AUTH", self.auth_mechanisms))
        if self.requiretls and tls_active:
            entries.append(("REQUIRETLS", ()))
        entries.extend(self.extra_extensions)
        return Extensions(entries)

    def auth_offered(self, *, tls_active: bool) -> bool:
        """Whether AUTH is available now."""
        return bool(self.auth_mechanisms) and (tls_active or not self.auth_requires_tls)


@attrs.define(eq=False)
class Transaction:
    """The mail transaction in progress: the envelope as accepted so far."""

    mail_from: MailFrom
    recipients: list[RcptTo] = attrs.field(factory=list)
    #: "DATA" or "BDAT" once the body has started, else ``None``.
    body_command: str | None = None
    #: Octets of message body received so far.
    size: int = 0


class _Mode:
    # Plain class attributes, not an Enum: they are tested on every event,
    # and on Python 3.11 each lookup of an Enum member on its class goes
    # through EnumType.__getattr__'s slot (four times a plain attribute).
    COMMAND: Final = 0  # reading command lines
    SKIP_LINE: Final = 1  # dropping the rest of an over-long line
    DATA: Final = 2  # reading a DATA body
    CHUNK: Final = 3  # reading (or discarding) a BDAT chunk


# The states tested on every event, as module names for the same reason.
_GREETING: Final = ServerState.GREETING
_STARTTLS: Final = ServerState.STARTTLS
_CLOSED: Final = ServerState.CLOSED
_AUTH: Final = ServerState.AUTH


# A transaction exists exactly in these states.
_TRANSACTION_STATES = frozenset(
    {ServerState.MAIL, ServerState.RCPT, ServerState.DATA, ServerState.BDAT}
)


#: Replies to these carry no enhanced code (RFC 2034 3: the greeting and
#: the hello replies are exempt).
_HELLO_TRIGGERS = frozenset({"HELO", "EHLO", "LHLO"})
#: Triggers whose positive replies are restricted (see _check_reply_kind).
_KIND_CHECKED = frozenset({"DATA", "STARTTLS"})
#: Triggers whose error reply still moves the state machine.
_APPLIED_AFTER_ERROR = frozenset({END_OF_DATA, "BDAT", "BDAT LAST", AUTH_RESPONSE})


def _trigger(command: Command) -> str:
    if isinstance(command, Bdat) and command.last:
        return "BDAT LAST"
    return command.verb


@attrs.define(eq=False)
class ServerConnection:
    r"""One server session, sans I/O (in the manner of h11's ``Connection``).

    RFC 5321 3 and 4 (with RFC 2033 for LMTP, RFC 3030 for BDAT, RFC 3207
    for STARTTLS, RFC 4954 for AUTH).  The I/O layer feeds received bytes
    with :meth:`receive_data` (``b""`` at end of file), takes events from
    :meth:`next_event`, decides, and turns each reply into bytes to write
    with :meth:`send`::

        conn = ServerConnection(ServerSettings(hostname="mx.example"))
        out = conn.send(conn.greeting())
        conn.receive_data(b"EHLO client.example\\r\\n")
        event = conn.next_event()          # Ehlo(domain='client.example')
        out = conn.send(conn.ehlo_reply(event))

    Every command gets exactly one reply, in order, and :meth:`next_event`
    refuses to go on while one is due (so pipelined commands are answered in
    the order sent, RFC 2920).  A command that is malformed or out of
    sequence raises a :class:`~smtp_message.RemoteProtocolError`; its
    ``reply`` is what to send, and is then due.  The state machine follows
    the table in :mod:`smtp_message._state`.
    """

    settings: ServerSettings = attrs.field(factory=ServerSettings)
    tls_active: bool = False
    state: ServerState = attrs.field(default=ServerState.GREETING, init=False)
    #: The accepted HELO/EHLO/LHLO command, if any.
    hello: Helo | Ehlo | Lhlo | None = attrs.field(default=None, init=False)
    #: The identity accepted by AUTH, if any (set by :meth:`authenticated`).
    auth_identity: str | None = attrs.field(default=None, init=False)
    #: The mail transaction in progress, if any.
    transaction: Transaction | None = attrs.field(default=None, init=False)
    #: 4xx and 5xx replies sent since the last accepted message: a server
    #: closes the session when it grows too large (RFC 5321 4.5.3.2 allows a
    #: server to drop a client that keeps failing).
    errors: int = attrs.field(default=0, init=False)
    #: True if the client sent bytes before the greeting (an early talker).
    client_spoke_first: bool = attrs.field(default=False, init=False)
    _buffer: ReceiveBuffer = attrs.field(factory=ReceiveBuffer, init=False)
    _eof: bool = attrs.field(default=False, init=False)
    _mode: int = attrs.field(default=_Mode.COMMAND, init=False)
    _reader: DataReader | None = attrs.field(default=None, init=False)
    # A BDAT chunk being read: octets left, whether they are discarded, and
    # the error to raise once they are (a chunk out of sequence or too big).
    _chunk_left: int = attrs.field(default=0, init=False)
    _chunk: Bdat | None = attrs.field(default=None, init=False)
    _chunk_error: RemoteProtocolError | None = attrs.field(default=None, init=False)
    # What the reply (or replies) now due answer.
    _due: str | None = attrs.field(default=None, init=False)
    _due_command: Command | None = attrs.field(default=None, init=False)
    _due_count: int = attrs.field(default=0, init=False)
    _due_error: bool = attrs.field(default=False, init=False)
    _end_pending: bool = attrs.field(default=False, init=False)
    # Whether any of the replies now due has been 2xx (LMTP, after a body).
    _delivered: bool = attrs.field(default=False, init=False)

    # -- Input --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the client; ``b""`` means end of file."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after end of file")
            self._buffer.feed(data)
        else:
            self._eof = True

    @property
    def trailing_data(self) -> bytes:
        """Bytes received and not yet parsed (e.g. pipelined after STARTTLS)."""
        return bytes(self._buffer.data)

    @property
    def reply_due(self) -> bool:
        """Whether :meth:`send` must be called before :meth:`next_event`."""
        return self._due_count > 0

    @property
    def replies_due(self) -> int:
        """How many replies are due (more than one only after an LMTP body)."""
        return self._due_count

    def next_event(self) -> ServerEvent | Sentinel:
        """Return the next event, :data:`NEED_DATA` or :data:`PAUSED`.

        Raises a :class:`~smtp_message.RemoteProtocolError` for input the
        protocol forbids; its ``reply`` is then due.
        """
        if self._due_count:
            raise LocalProtocolError(f"a reply to {self._due} is due first")
        state = self.state
        if state is _GREETING:
            raise LocalProtocolError("send the greeting first")
        if state is _STARTTLS:
            return PAUSED
        if state is _CLOSED:
            raise LocalProtocolError("the session is closed")
        while True:
            mode = self._mode
            if mode == _Mode.DATA:
                event = self._next_data_event()
            elif mode == _Mode.CHUNK:
                event = self._next_chunk_event()
            elif mode == _Mode.SKIP_LINE:
                if self._buffer.skip_line():
                    self._mode = _Mode.COMMAND
                    continue
                event = NEED_DATA
            else:
                event = self._next_command_event()
            if event is NEED_DATA and self._eof:
                return self._closed()
            return event

    def _closed(self) -> ConnectionClosed:
        self.state = ServerState.CLOSED
        return ConnectionClosed()

    def _line_limit(self) -> int:
        base = self.settings.max_line_length
        if self.state is _AUTH:
            return max(base, MAX_AUTH_LINE)
        head = self._buffer.data[:5].upper()
        if head == b"MAIL ":
            return base + MAIL_LINE_ALLOWANCE
        if head == b"RCPT ":
            return base + RCPT_LINE_ALLOWANCE
        if head == b"AUTH ":
            return max(base, MAX_AUTH_LINE)
        return base

    def _next_command_event(self) -> ServerEvent | Sentinel:
        buffer = self._buffer
        base = self.settings.max_line_length
        # Every limit is at least the base one: the command's own limit is
        # looked up only for a line longer than that (rare).
        line = buffer.take_line(base)
        if line is ReceiveBuffer.TOO_LONG and (limit := self._line_limit()) > base:
            line = buffer.take_line(limit)
        if line is None:
            return NEED_DATA
        if line is ReceiveBuffer.TOO_LONG:
            # Reported once, now; the rest of the line is dropped as it
            # arrives, never buffered (RFC 5321 4.5.3.1.10).
            self._mode = _Mode.SKIP_LINE
            # An over-long SASL response fails the exchange (RFC 4954 4),
            # like any other bad response: the reply ends it.
            trigger = AUTH_RESPONSE if self.state is _AUTH else "line"
            self._due_for(None, trigger, error=True)
            raise LineTooLongError(LINE_TOO_LONG)
        assert isinstance(line, bytes)
        if self.state is _AUTH:
            return self._auth_response(line)
        try:
            command = parse_command(
                line, utf8=self._utf8_allowed(), policy=self.settings.address_policy
            )
        except ChunkSyntaxError as exc:
            # A BDAT line gone wrong after its size: the chunk is skipped,
            # as for any refused BDAT, never read as commands.
            self._start_chunk(Bdat(exc.size, False))
            self._chunk_error = exc
            return self._next_chunk_event()
        except RemoteProtocolError:
            self._due_for(None, "command", error=True)
            raise
        trigger = _trigger(command)
        if isinstance(command, Bdat):
            # The chunk follows the command line at once, whatever we think
            # of the command: it is read (or skipped) before anything else.
            self._start_chunk(command)
            try:
                self._check_command(command, trigger)
            except RemoteProtocolError as exc:
                self._chunk_error = exc
            return self._next_chunk_event_or(command)
        self._due_for(command, trigger)
        try:
            self._check_command(command, trigger)
        except RemoteProtocolError:
            self._due_error = True
            raise
        return command

    def _auth_response(self, line: bytes) -> AuthResponse:
        self._due_for(None, AUTH_RESPONSE)
        try:
            response = parse_auth_response(line)
        except RemoteProtocolError:
            self._due_error = True
            raise
        if response.data is None:
            # RFC 4954 4: "If the client wishes to cancel an authentication
            # exchange, it issues a line with a single "*".  If the server
            # receives such a response, it MUST reject the AUTH command by
            # sending a 501 reply."
            self._due_error = True
            raise CommandSyntaxError(AUTH_CANCELLED)
        return response

    def _due_for(self, command: Command | None, trigger: str, *, error: bool = False) -> None:
        self._due = trigger
        self._due_command = command
        self._due_count = 1
        self._due_error = error

    def _utf8_allowed(self) -> bool:
        t = self.transaction
        return t is not None and t.mail_from.params.smtputf8

    # -- Command checks -------------------------------------------------------

    def _check_command(self, command: Command, trigger: str) -> None:
        s = self.settings
        # RFC 2033 4.1: "The LHLO command ... HELO and EHLO ... MUST NOT" be
        # accepted by an LMTP server; nor LHLO by an SMTP one.
        if isinstance(command, (Helo, Ehlo) if s.lmtp else Lhlo):
            raise CommandSyntaxError(COMMAND_UNRECOGNIZED)
        if not server_is_legal(self.state, trigger):
            reply = SEQUENCE_ERRORS.get((self.state, trigger), BAD_SEQUENCE)
            if s.lmtp and reply is NO_VALID_RECIPIENTS:
                # RFC 2033 4.2: "If there were no successful RCPT commands in
                # the mail transaction, the DATA command MUST fail with a 503
                # reply code."
                reply = BAD_SEQUENCE
            raise BadSequenceError(reply)
        if isinstance(command, RcptTo):
            self._check_rcpt(command)
        elif isinstance(command, MailFrom):
            self._check_mail(command, self._extensions())
        elif isinstance(command, Bdat):
            if not self._extensions().chunking:
                raise CommandSyntaxError(NOT_IMPLEMENTED)
            t = self.transaction
            assert t is not None
            if t.body_command == "DATA":
                raise BadSequenceError(BAD_SEQUENCE)
            limit = s.max_message_size
            if limit is not None and t.size + command.size > limit:
                raise ParameterError(MESSAGE_TOO_BIG)
        elif isinstance(command, Data):
            t = self.transaction
            assert t is not None
            if t.mail_from.params.body is BodyType.BINARY_MIME:
                raise BadSequenceError(BINARYMIME_NEEDS_BDAT)
        elif isinstance(command, StartTls):
            if self.tls_active:
                raise BadSequenceError(BAD_SEQUENCE, "TLS already active")
            if not self._extensions().starttls:
                raise CommandSyntaxError(NOT_IMPLEMENTED)
        elif isinstance(command, Auth):
            self._check_auth(command, self._extensions())
        elif isinstance(command, Expn):
            raise CommandSyntaxError(NOT_IMPLEMENTED, "EXPN not available")
        elif isinstance(command, Vrfy) and not s.vrfy:
            raise CommandSyntaxError(NOT_IMPLEMENTED, "VRFY not available")

    def _check_mail(self, command: MailFrom, extensions: Extensions) -> None:
        s = self.settings
        if s.require_tls and not self.tls_active:
            raise BadSequenceError(TLS_REQUIRED)
        if s.require_auth and self.auth_identity is None:
            raise BadSequenceError(AUTH_REQUIRED)
        params = command.params
        if params.keywords:
            self._check_mail_keywords(params, extensions)
        if params.requiretls and not self.tls_active:
            raise BadSequenceError(REQUIRETLS_NEEDS_TLS)
        limit = s.max_message_size
        if params.size is not None and limit is not None and params.size > limit:
            # RFC 1870 6.1.
            raise ParameterError(MESSAGE_TOO_BIG)

    def _check_mail_keywords(self, params: MailParams, extensions: Extensions) -> None:
        if isinstance(self.hello, Helo):
            # Parameters need EHLO (RFC 5321 4.1.1.11).
            raise ParameterError(PARAMETER_NOT_RECOGNIZED)
        s = self.settings
        supported = {
            "SIZE": True,
            "BODY": params.body is None
            or params.body is BodyType.SEVEN_BIT
            or (params.body is BodyType.EIGHT_BIT_MIME and extensions.eightbitmime)
            or (params.body is BodyType.BINARY_MIME and extensions.binarymime),
            "SMTPUTF8": extensions.smtputf8,
            "RET": extensions.dsn,
            "ENVID": extensions.dsn,
            "AUTH": s.auth_offered(tls_active=self.tls_active),
            "REQUIRETLS": s.requiretls,
        }
        for keyword in params.keywords:
            ok = supported.get(keyword)
            if ok is None:
                ok = keyword in s.extra_mail_parameters
            if not ok:
                raise ParameterError(PARAMETER_NOT_RECOGNIZED, f"{keyword} not supported")

    def _check_rcpt(self, command: RcptTo) -> None:
        s = self.settings
        t = self.transaction
        assert t is not None
        for keyword in command.params.keywords:
            ok = s.dsn if keyword in ("NOTIFY", "ORCPT") else keyword in s.extra_rcpt_parameters
            if not ok or isinstance(self.hello, Helo):
                raise ParameterError(PARAMETER_NOT_RECOGNIZED, f"{keyword} not supported")
        if len(t.recipients) >= s.max_recipients:
            # RFC 5321 4.5.3.1.10: "452 Too many recipients".
            raise BadSequenceError(TOO_MANY_RECIPIENTS)

    def _check_auth(self, command: Auth, extensions: Extensions) -> None:
        s = self.settings
        if not s.auth_mechanisms or isinstance(self.hello, Helo):
            raise CommandSyntaxError(NOT_IMPLEMENTED)
        if self.auth_identity is not None:
            # RFC 4954 4: "After a successful AUTH command completes, a server
            # MUST reject any further AUTH commands with a 503 reply."
            raise BadSequenceError(BAD_SEQUENCE, "Already authenticated")
        if not s.auth_offered(tls_active=self.tls_active):
            raise BadSequenceError(ENCRYPTION_REQUIRED)
        if command.mechanism not in extensions.auth:
            raise ParameterError(AUTH_MECHANISM_UNKNOWN)

    def _extensions(self) -> Extensions:
        if not isinstance(self.hello, (Ehlo, Lhlo)):
            return _NO_EXTENSIONS
        return self.settings.extensions(
            tls_active=self.tls_active, authenticated=self.auth_identity is not None
        )

    # -- Bodies -----------------------------------------------------------------

    def _next_data_event(self) -> ServerEvent | Sentinel:
        reader = self._reader
        assert reader is not None
        if self._end_pending:
            self._end_pending = False
            return self._end_of_body(reader.violation)
        data, finished = reader.read(self._buffer)
        t = self.transaction
        assert t is not None
        t.size = reader.size
        if data:
            # Give the last piece out first; the end follows on the next call.
            self._end_pending = finished
            return BodyChunk(data)
        if not finished:
            return NEED_DATA
        return self._end_of_body(reader.violation)

    def _end_of_body(self, violation: Reply | None) -> EndOfData:
        self._mode = _Mode.COMMAND
        self._reader = None
        t = self.transaction
        assert t is not None
        count = len(t.recipients) if self.settings.lmtp else 1
        self._due_for(None, END_OF_DATA)
        self._due_count = count
        if violation is not None:
            self._due_error = True
            raise MessageRejectedError(violation)
        return EndOfData()

    def _start_chunk(self, command: Bdat) -> None:
        self._mode = _Mode.CHUNK
        self._chunk = command
        self._chunk_left = command.size
        self._chunk_error = None

    def _next_chunk_event_or(self, command: Bdat) -> ServerEvent | Sentinel:
        if self._chunk_error is None:
            t = self.transaction
            assert t is not None
            t.body_command = "BDAT"
            return command
        return self._next_chunk_event()

    def _next_chunk_event(self) -> ServerEvent | Sentinel:
        chunk = self._chunk
        assert chunk is not None
        if self._chunk_left:
            if not self._buffer:
                return NEED_DATA
            data = self._buffer.take(self._chunk_left)
            self._chunk_left -= len(data)
            if self._chunk_error is None:
                t = self.transaction
                assert t is not None
                t.size += len(data)
                return BodyChunk(data)
            if self._chunk_left:
                return NEED_DATA
        # The whole chunk is in.
        self._mode = _Mode.COMMAND
        self._chunk = None
        error, self._chunk_error = self._chunk_error, None
        trigger = _trigger(chunk)
        if error is not None:
            self._due_for(chunk, trigger, error=True)
            if chunk.last and self.settings.lmtp and self.transaction is not None:
                self._due_count = max(1, len(self.transaction.recipients))
            raise error
        if chunk.last:
            return self._end_of_body(None)
        self._due_for(chunk, trigger)
        return EndOfChunk()

    # -- Output -----------------------------------------------------------------

    def greeting(self, text: str = "ESMTP ready") -> Reply:
        """The usual 220 greeting (RFC 5321 4.2: it starts with our name)."""
        settings = self.settings
        reply = settings._greetings.get(text)
        if reply is None:
            kind = "LMTP" if settings.lmtp else ""
            line = f"{settings.hostname} {text if not kind else text.replace('ESMTP', kind)}"
            reply = Reply(220, None, line)
            if len(settings._greetings) < MAX_CACHED_GREETINGS:
                settings._greetings[text] = reply
        return reply

    def ehlo_reply(self, hello: Helo | Ehlo | Lhlo | None = None) -> Reply:
        """The 250 reply to HELO/EHLO/LHLO, with the extensions for EHLO/LHLO.

        The extension list reflects the session as it will be: no STARTTLS
        once TLS is active, AUTH only where it is offered (RFC 4954 4).
        """
        first = f"{self.settings.hostname} Hello"
        if hello is not None and len(first) + len(hello.domain) < MAX_REPLY_LINE - 6:
            # The client's name is echoed only where it fits on the line:
            # wrapped, it would stand alone as an extension keyword (RFC
            # 5321 4.1.1.1: "250-" Domain [SP ehlo-greet] CRLF).
            first += f" {hello.domain}"
        if isinstance(hello, Helo):
            return Reply(250, None, first)
        lines, tail = self.settings._hello_tail(
            tls_active=self.tls_active, authenticated=self.auth_identity is not None
        )
        if lines and _safe_line(first):
            # The usual case, without checking and serialising the same
            # extension lines for every session.
            wire = f"250-{first}\r\n".encode() + tail
            return Reply._trusted(250, None, (first, *lines), wire)
        return Reply(250, None, [first, *lines])

    @property
    def extensions(self) -> Extensions:
        """The extensions in force (none before EHLO/LHLO, or after HELO)."""
        return self._extensions()

    def default_reply(self, event: ServerEvent) -> Reply:
        """The reply of a server that accepts everything.

        Hooks that have nothing to say about an event answer with this.
        """
        if isinstance(event, (Helo, Ehlo, Lhlo)):
            return self.ehlo_reply(event)
        if isinstance(event, MailFrom):
            return SENDER_OK
        if isinstance(event, RcptTo):
            return RECIPIENT_OK
        if isinstance(event, Data):
            return START_MAIL_INPUT
        if isinstance(event, EndOfChunk):
            chunk = self._due_command
            size = chunk.size if isinstance(chunk, Bdat) else 0
            return Reply(250, "2.0.0", f"{size} octets received")
        if isinstance(event, EndOfData):
            return MESSAGE_ACCEPTED
        if isinstance(event, Quit):
            return BYE
        if isinstance(event, (Rset, Noop)):
            return OK
        if isinstance(event, Help):
            return HELP
        if isinstance(event, Vrfy):
            return CANNOT_VRFY
        if isinstance(event, StartTls):
            return READY_TO_START_TLS
        raise LocalProtocolError(f"no default reply for {event!r}")

    def send(self, reply: Reply) -> bytes:
        """Record ``reply`` as sent and return its bytes.

        Only the reply that is due may be sent, except ``421``, which may
        be sent at any time and closes the session (RFC 5321 3.8).  A 2xx,
        4xx or 5xx reply without an enhanced status code gets the generic one
        of its class (RFC 2034: every such reply carries one once
        ENHANCEDSTATUSCODES is advertised; greeting and hello replies are
        exempt).
        """
        state = self.state
        if state is _CLOSED:
            raise LocalProtocolError("the session is closed")
        if reply.code == 421:
            self._close_with_421()
            return self._with_enhanced(reply).to_bytes()
        if state is _GREETING:
            if reply.code not in (220, 554):
                raise LocalProtocolError(f"a greeting is 220, 554 or 421, not {reply.code}")
            self.client_spoke_first = bool(self._buffer)
            self.state = server_next(state, GREETING, reply.code)
            return reply.to_bytes()
        if not self._due_count:
            raise LocalProtocolError("no reply is due")
        trigger = self._due
        assert trigger is not None
        if trigger not in _HELLO_TRIGGERS:
            reply = self._with_enhanced(reply)
        kind = reply.code // 100
        if self._due_error and kind in (2, 3):
            raise LocalProtocolError(
                f"the {trigger} was rejected by the protocol: the reply must be 4xx or 5xx"
            )
        if kind == 3 or trigger in _KIND_CHECKED:
            self._check_reply_kind(trigger, reply)
        self._due_count -= 1
        # Replies that answer one thing together (LMTP's one per recipient
        # after a body, RFC 2033 4.2) are one outcome, counted once: a
        # message delivered to anyone starts the count over, and one
        # refused by all is one error.  Counting each recipient's refusal
        # would end an LMTP client's session after one message to many
        # full mailboxes.
        self._delivered = self._delivered or kind == 2
        if self._due_count:
            return reply.to_bytes()  # more LMTP replies are due
        delivered, self._delivered = self._delivered, False
        if trigger == END_OF_DATA and delivered:
            self.errors = 0
        elif kind >= 4 and not (trigger == "RCPT" and reply.code == 452):
            # Not a 452 to RCPT: RFC 5321 4.5.3.1.10 has the client send the
            # recipients over a server's limit in a later transaction, so
            # they are not the client's errors (counting them would end the
            # session and lose the recipients already accepted).
            self.errors += 1
        command = self._due_command
        self._due = None
        self._due_command = None
        if not self._due_error or trigger in _APPLIED_AFTER_ERROR:
            self._apply(trigger, command, reply, kind)
        self._due_error = False
        return reply.to_bytes()

    def _with_enhanced(self, reply: Reply) -> Reply:
        if reply.enhanced is None and reply.code // 100 in (2, 4, 5):
            return attrs.evolve(reply, enhanced=f"{reply.code // 100}.0.0")
        return reply

    def _check_reply_kind(self, trigger: str, reply: Reply) -> None:
        # 3xx only where the protocol continues: DATA (354), AUTH (334).
        if reply.is_intermediate:
            if trigger == "DATA" and reply.code != 354:
                raise LocalProtocolError("DATA is answered with 354 to go on")
            if trigger in ("AUTH", AUTH_RESPONSE) and reply.code != 334:
                raise LocalProtocolError("AUTH is answered with 334 to go on")
            if trigger not in ("DATA", "AUTH", AUTH_RESPONSE):
                raise LocalProtocolError(f"{trigger} cannot be answered with {reply.code}")
        elif trigger == "DATA" and reply.is_positive:
            raise LocalProtocolError("DATA is answered with 354, not 2xx")
        elif trigger == "STARTTLS" and reply.is_positive and reply.code != 220:
            raise LocalProtocolError("STARTTLS is answered with 220 to go on")

    def _apply(self, trigger: str, command: Command | None, reply: Reply, kind: int) -> None:
        state = self.state
        new = server_next(state, trigger, reply.code)
        if kind in (2, 3):
            if isinstance(command, (Helo, Ehlo, Lhlo)):
                self.hello = command
            elif isinstance(command, MailFrom):
                self.transaction = Transaction(command)
            elif isinstance(command, RcptTo):
                assert self.transaction is not None
                self.transaction.recipients.append(command)
            elif isinstance(command, Data):
                assert self.transaction is not None
                self.transaction.body_command = "DATA"
                self._mode = _Mode.DATA
                s = self.settings
                self._reader = DataReader(s.bare_line_endings, s.max_message_size)
        if new not in _TRANSACTION_STATES:
            self.transaction = None
        self.state = new

    def _close_with_421(self) -> None:
        self.state = ServerState.CLOSED
        self._due = None
        self._due_command = None
        self._due_count = 0

    def authenticated(self, identity: str) -> None:
        """Record a successful SASL exchange; send the 235 reply after this.

        RFC 4954 4: once authenticated, further AUTH commands get 503.
        """
        self.auth_identity = identity

    def tls_established(self) -> bytes:
        """Record that the STARTTLS handshake completed; return discarded bytes.

        Everything received before the handshake is thrown away, never
        parsed: a client that pipelines commands after STARTTLS is trying
        to inject them into the protected session (CVE-2011-0411).  The
        session starts over (RFC 3207 4.2): the client must say EHLO again,
        and nothing learned before TLS (EHLO name, AUTH, transaction) is kept.
        """
        if self.state is not ServerState.STARTTLS:
            raise LocalProtocolError("no STARTTLS handshake is due")
        discarded = self._buffer.take_all()
        self.tls_active = True
        self.hello = None
        self.auth_identity = None
        self.transaction = None
        self._mode = _Mode.COMMAND
        self.state = server_next(self.state, TLS_ESTABLISHED, 220)
        return discarded
