"""The package's exceptions, classified for a mail queue.

Every failure of a delivery attempt is a :class:`ClientError` that says
whether trying again later may help (:attr:`ClientError.permanent`) and
carries a :class:`~smtp_message.Reply`: the server's own when it sent one
(:attr:`ClientError.remote` is true), otherwise one made up here with the
RFC 3463 code that describes the failure, so a DSN can always quote a code
and a text.  Foreign exceptions (anyio, ssl, dnspython, OSError) are
translated into these at the boundary, as httpcore does.

:meth:`Client.send <smtp_client.Client.send>` never raises them for a
failed delivery: it returns per-recipient results built from them.  The
lower-level :class:`~smtp_client.Connection` raises them.
"""

from __future__ import annotations

import re

from smtp_message import Reply

__all__ = [
    "AuthError",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "DNSError",
    "MessageRefused",
    "NoRouteError",
    "NoSuchDomain",
    "NullMXError",
    "ProtocolError",
    "ReplyError",
    "TLSError",
    "TimedOut",
]


# What smtp_message.Reply refuses in a reply's text: control characters (CR
# and LF above all) and lone surrogates.  A local reply's text comes from
# messages that may quote a host name, a path or a library's error: escaped,
# never a reason for building the error itself to fail.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub(
        lambda m: m[0].encode("unicode_escape", "backslashreplace").decode(), text
    )


class ClientError(Exception):
    """A delivery attempt failed.

    ``reply`` is what the failure is reported as: the server's reply when
    ``remote`` is true, else a reply composed locally whose code and RFC 3463
    enhanced code classify the failure (4xx transient, 5xx permanent).
    ``host`` names the server involved, if any.
    """

    #: The reply used when none is given: subclasses override it.
    default_reply: Reply = Reply(451, "4.0.0", "delivery failed")

    def __init__(
        self,
        message: str,
        *,
        reply: Reply | None = None,
        host: str | None = None,
        remote: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.host = host
        self.remote = remote and reply is not None
        if reply is None:
            base = self.default_reply
            reply = Reply(base.code, base.enhanced, _printable(message))
        self.reply = reply

    @property
    def permanent(self) -> bool:
        """True if repeating the attempt cannot succeed (a 5xx reply)."""
        return self.reply.is_permanent

    def __str__(self) -> str:
        where = f" ({self.host})" if self.host else ""
        return f"{self.message}{where}"


class ConnectError(ClientError):
    """The TCP or unix-socket connection could not be made (refused, unreachable).

    RFC 3463 X.4.1 "No answer from host".
    """

    default_reply = Reply(451, "4.4.1", "connection failed")


class TimedOut(ClientError):
    """The server did not answer (or accept data) within the timeout.

    RFC 5321 4.5.3.2 sets the timeouts; RFC 3463 X.4.2 "Bad connection".
    Also raised for a connection that could not be made in time.
    """

    default_reply = Reply(451, "4.4.2", "timed out")


class ConnectionLost(ClientError):
    """The server closed or reset the connection when a reply was due.

    RFC 3463 X.4.2 "Bad connection".
    """

    default_reply = Reply(451, "4.4.2", "connection lost")


class TLSError(ClientError):
    """TLS failed: handshake, certificate, or STARTTLS required but refused.

    RFC 3463 X.7.5 "Cryptographic failure" (X.7.4 "Security features not
    supported" when STARTTLS is missing).  Always transient, whatever the
    server replied: its configuration may be fixed, and mail waits.
    """

    default_reply = Reply(454, "4.7.5", "TLS failed")

    @property
    def permanent(self) -> bool:
        """Never: a TLS failure is worth trying again later."""
        return False


class ProtocolError(ClientError):
    """The server broke the protocol: a malformed or unexpected reply.

    RFC 3463 X.5.0 "Other or undefined protocol status".
    """

    default_reply = Reply(451, "4.5.0", "protocol error")


class ReplyError(ClientError):
    """The server refused the session or closed it (421).

    A 4xx or 5xx reply to the greeting, EHLO/HELO, STARTTLS or AUTH, or a
    421 at any time (RFC 5321 3.8).  ``reply`` is the server's.
    """


class AuthError(ReplyError):
    """Authentication (RFC 4954) failed or could not be attempted.

    With the server's reply (454 transient; 535 permanent only when the
    credentials ask for it, see :class:`~smtp_client.Credentials`
    ``soft_bounce``), or a local one when the server offers no usable
    mechanism or the session is not encrypted (credentials are never sent
    in clear).
    """

    default_reply = Reply(454, "4.7.0", "authentication not possible")

    def __init__(
        self,
        message: str,
        *,
        reply: Reply | None = None,
        host: str | None = None,
        remote: bool = False,
        soft: bool = False,
    ) -> None:
        super().__init__(message, reply=reply, host=host, remote=remote)
        self.soft = soft

    @property
    def permanent(self) -> bool:
        """True for a 5xx reply, unless the failure is to be deferred (``soft``)."""
        return self.reply.is_permanent and not self.soft


class MessageRefused(ClientError):
    """The message cannot be sent to this server as it is, so it was not.

    Found before anything was written, or while streaming the body (the
    connection is then dropped without the end-of-data mark, so nothing is
    delivered): too big for the server's SIZE (RFC 1870, 5.3.4), 8-bit data
    for a server without 8BITMIME (RFC 6152, 5.6.3), UTF-8 addresses for a
    server without SMTPUTF8 (RFC 6531, 5.6.7), a bare CR or LF under the
    ``REJECT`` policy (5.6.0), REQUIRETLS not satisfiable (RFC 8689, 5.7.30).
    Always permanent: resending the same message cannot help.
    """

    default_reply = Reply(554, "5.6.0", "message refused")


class DNSError(ClientError):
    """The DNS lookup failed temporarily (SERVFAIL, timeout, no answer).

    RFC 5321 5.1; RFC 3463 X.4.3 "Directory server failure".
    """

    default_reply = Reply(451, "4.4.3", "DNS lookup failed")


class NoSuchDomain(ClientError):
    """The domain does not exist (NXDOMAIN).

    RFC 3463 X.1.2 "Bad destination system address".
    """

    default_reply = Reply(550, "5.1.2", "domain not found")


class NullMXError(ClientError):
    """The domain publishes a null MX: it accepts no mail (RFC 7505 3).

    RFC 7505 4.3's "556 5.1.10 Recipient address has null MX".
    """

    default_reply = Reply(556, "5.1.10", "recipient address has null MX")


class NoRouteError(ClientError):
    """No mail exchanger of the domain has an address (RFC 5321 5.1).

    RFC 3463 X.4.4 "Unable to route".
    """

    default_reply = Reply(550, "5.4.4", "no route to the domain")
