"""The package's exceptions.

Two families, named by who is at fault (as in h11 and trio):

- :class:`RemoteProtocolError`: the peer sent something the protocol forbids.
  On the server side it always carries the exact :class:`~smtp_message.Reply`
  to send back; the session goes on unless that reply closes it.
- :class:`LocalProtocolError`: the code driving a connection object tried
  something illegal (a reply when none is due, a command out of sequence).
  It is a bug in the caller, never the peer's doing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._reply import Reply


class SMTPError(Exception):
    """Base class of every exception raised by :mod:`smtp_message`."""


class RemoteProtocolError(SMTPError):
    """The peer violated the protocol.

    ``reply`` is what a server answers (code, enhanced code, text).  It is
    ``None`` only when the server is the peer at fault (a malformed reply
    read by a client), where there is nothing to answer.
    """

    def __init__(self, reply: Reply | None, message: str | None = None) -> None:
        self.reply = reply
        if message is None:
            message = reply.text if reply is not None else "protocol error"
        super().__init__(message)


class CommandSyntaxError(RemoteProtocolError):
    """A command line that does not parse: unknown verb, bad arguments."""


class LineTooLongError(RemoteProtocolError):
    """A command line longer than the limit (RFC 5321 4.5.3.1.4)."""


class BadSequenceError(RemoteProtocolError):
    """A well-formed command sent when the session state forbids it."""


class AddressError(CommandSyntaxError, ValueError):
    """An address that does not satisfy the RFC 5321 Mailbox grammar."""


class ParameterError(CommandSyntaxError, ValueError):
    """A malformed, duplicated or unsupported ESMTP parameter."""


class MessageRejectedError(RemoteProtocolError):
    """A message body broke a limit or a policy (size, bare CR or LF).

    The whole body has been read and thrown away when this is raised, so the
    session is in step again and its reply can be sent.
    """


class ReplySyntaxError(RemoteProtocolError, ValueError):
    """A server reply that does not parse (client side)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class LocalProtocolError(SMTPError):
    """The caller tried an action the protocol state does not allow."""


class BareLineEndingError(LocalProtocolError, ValueError):
    """A body to send has a bare CR or LF, and the policy refuses it.

    RFC 5321 2.3.8: "CR and LF MUST only occur together as CRLF".  Raised
    by :class:`~smtp_message.DotStuffer` and
    :class:`~smtp_message.LineEndingNormalizer` under ``REJECT``, and when
    a sender is asked to ``KEEP`` bare line endings (which it never may).
    A :class:`ValueError` too, as it was before it had a name of its own.
    """
