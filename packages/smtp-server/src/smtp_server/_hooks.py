"""What a server asks its hooks, and what it tells them."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypeAlias

import attrs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from smtp_message import Ehlo, Helo, Lhlo, Mailbox, MailFrom, RcptTo, Reply

__all__ = [
    "Credentials",
    "Envelope",
    "Hooks",
    "MessageAborted",
    "MessageOutcome",
    "Session",
    "TLSInfo",
]


class MessageAborted(Exception):
    """The message being received will not be completed.

    Raised inside :meth:`Hooks.on_message` by the body iterator when the
    client disconnects, times out, aborts a chunked body (RSET, EHLO, QUIT
    between BDAT chunks), or the body breaks a limit or policy.  The hook
    must not keep the message; letting the exception propagate is right.
    ``reason`` says which, for logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class TLSInfo:
    """The TLS session of a connection."""

    version: str | None
    cipher: str | None


@attrs.define(eq=False)
class Session:
    """What hooks know about one SMTP session.

    The server keeps the protocol fields up to date; hooks read them.  Hooks
    may keep their own per-session state in :attr:`data`.
    """

    #: A short unique id, for logs.
    id: str
    #: The client's address (from the PROXY header when there is one).
    peer: tuple[str, int] | None
    #: Our address on this connection.
    local: tuple[str, int] | None
    lmtp: bool = False
    started: float = attrs.field(factory=time.time)
    #: Set once TLS is active (STARTTLS or implicit TLS).
    tls: TLSInfo | None = None
    #: The accepted HELO, EHLO or LHLO.
    hello: Helo | Ehlo | Lhlo | None = None
    #: The identity AUTH accepted, if any.
    auth_identity: str | None = None
    #: Messages accepted in this session.
    messages: int = 0
    #: Free for hooks to keep their own state.
    data: dict[str, object] = attrs.field(factory=dict)


@attrs.frozen
class Envelope:
    """The envelope of a message: the MAIL command and accepted recipients.

    The commands carry their ESMTP parameters: SIZE, BODY, SMTPUTF8 and the
    DSN ones (RET, ENVID, NOTIFY, ORCPT; RFC 3461) among them.
    """

    mail_from: MailFrom
    recipients: tuple[RcptTo, ...]
    #: How the body travels: ``"DATA"`` or ``"BDAT"`` (RFC 3030).
    body_command: str = "DATA"

    @property
    def sender(self) -> Mailbox | None:
        """The reverse-path; ``None`` for the null path ``<>``."""
        return self.mail_from.reverse_path

    @property
    def recipient_addresses(self) -> tuple[Mailbox, ...]:
        """The forward-paths, in RCPT order."""
        return tuple(r.forward_path for r in self.recipients)


def _redacted(_value: str) -> str:
    return "'<redacted>'"


@attrs.frozen
class Credentials:
    """What a client presented to AUTH (RFC 4954; PLAIN is RFC 4616).

    ``password`` never appears in ``repr()``.
    """

    mechanism: str
    username: str
    password: str = attrs.field(repr=_redacted)
    #: The identity to act as, if the client asked for one (PLAIN only).
    authzid: str | None = None


#: What :meth:`Hooks.on_message` returns: ``None`` to accept with the default
#: reply, a :class:`~smtp_message.Reply` for every recipient, or (LMTP only)
#: one reply or ``None`` per recipient, in the envelope's order.
MessageOutcome: TypeAlias = "Reply | Sequence[Reply | None] | None"


class Hooks:
    """The decisions of a server, one async method per protocol step.

    Subclass and override what you need; the defaults accept everything (a
    hook-less server is a working sink) except AUTH, which by default
    accepts no credentials.  Each method returns ``None`` to accept with the
    standard reply, or a :class:`~smtp_message.Reply` to send instead (a
    4xx or 5xx refuses; a 2xx accepts with your own text).

    A hook that raises makes the server answer ``451 4.3.0`` and log the
    traceback; the client never sees it.
    """

    async def on_connect(self, session: Session) -> Reply | None:
        """A client connected; return a reply to replace the 220 greeting.

        A ``554`` refuses service: the client may then only QUIT (RFC 5321
        3.1).  A ``421`` closes the connection at once.
        """
        return None

    async def on_hello(self, session: Session, command: Helo | Ehlo | Lhlo) -> Reply | None:
        """HELO, EHLO or LHLO; ``None`` answers with the extension list."""
        return None

    async def on_auth(self, session: Session, credentials: Credentials) -> bool | str | Reply:
        """Check credentials: ``True`` accepts (235), ``False`` refuses (535).

        ``True`` accepts the user name as the session's identity.  A client
        may ask to act as another identity (``credentials.authzid``, AUTH
        PLAIN); RFC 4616 2 requires the server to check that it may, so
        ``True`` is not enough for that: return the identity granted (a
        string, normally ``credentials.authzid``) to allow it, anything else
        refuses it.

        A 4xx :class:`~smtp_message.Reply` is sent as it is, without penalty
        (say ``454 4.7.0`` when the credentials store is down); a 5xx one is
        sent and counts as a failed attempt, like ``False`` (slowed down,
        then ``421`` after ``Settings.max_auth_failures``).  The default
        refuses.
        """
        return False

    async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
        """MAIL FROM, with its parameters."""
        return None

    async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
        """Each RCPT TO, with its parameters."""
        return None

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> MessageOutcome:
        """The message: decide once ``body`` is exhausted.

        ``body`` yields the message as it arrives (dot-unstuffed for DATA,
        verbatim for BDAT); it is never held whole by the server.  When the
        iteration ends normally the message is complete and valid; if it
        cannot be completed, iterating raises :class:`MessageAborted`.
        Whatever is returned is sent only after the whole body has been
        read.  In LMTP, return one reply (or ``None``) per recipient to
        decide for each (RFC 2033 4.2); one reply applies to all.

        The default reads and discards the body.
        """
        async for _chunk in body:
            pass
        return None

    async def on_disconnect(self, session: Session) -> None:
        """The session ended, for whatever reason.  For cleanup and logs."""
        return
