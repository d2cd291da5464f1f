"""What a delivery attempt did, recipient by recipient."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from smtp_message import Extensions, Mailbox, Reply

    from ._errors import ClientError

__all__ = ["RecipientResult", "SendResult", "Status"]


class Status(enum.Enum):
    """The outcome for one recipient, as a queue needs it."""

    #: The server took responsibility for the message (2xx; RFC 5321 6.1).
    DELIVERED = "delivered"
    #: Not delivered; trying again later may work (4xx, connection or DNS
    #: trouble).
    TRANSIENT = "transient"
    #: Not delivered, and repeating the attempt will not help (5xx, NXDOMAIN,
    #: null MX): the sender gets a DSN.
    PERMANENT = "permanent"

    @classmethod
    def of(cls, reply: Reply) -> Status:
        """The status a reply code means: 2xx, 4xx or 5xx."""
        if reply.is_positive:
            return cls.DELIVERED
        if reply.is_permanent:
            return cls.PERMANENT
        return cls.TRANSIENT


@attrs.frozen
class RecipientResult:
    """One recipient's outcome, with the reply that decided it.

    ``reply`` is the server's full reply (code, enhanced code, text) when
    ``remote`` is true: to RCPT when the recipient was refused, to the end of
    the body otherwise (in LMTP, that recipient's own reply; RFC 2033 4.2).
    When no server reply decided it (connection refused, DNS failure, a
    message refused locally), ``remote`` is false and ``reply`` is a local
    one whose code and RFC 3463 enhanced code classify the failure.
    ``host`` names the server that answered (or was tried last).
    """

    recipient: Mailbox
    status: Status
    reply: Reply
    host: str | None = None
    remote: bool = True

    @classmethod
    def from_reply(cls, recipient: Mailbox, reply: Reply, host: str | None) -> RecipientResult:
        """The result a server's reply gives."""
        return cls(recipient, Status.of(reply), reply, host, remote=True)

    @classmethod
    def from_error(cls, recipient: Mailbox, error: ClientError) -> RecipientResult:
        """The result a failure gives (transient or permanent, never delivered)."""
        status = Status.PERMANENT if error.permanent else Status.TRANSIENT
        return cls(recipient, status, error.reply, error.host, remote=error.remote)


@attrs.frozen
class SendResult:
    """The outcome of sending one message: one result per recipient, in order.

    ``host`` is the server the message was sent to (``None`` if none could
    be reached); ``tls`` says whether the session was encrypted;
    ``extensions`` is what that server advertised, e.g. to tell whether DSN
    parameters were passed on (RFC 3461 5.2: without the DSN extension, a
    ``NOTIFY=SUCCESS`` recipient gets a "relayed" DSN from the sender's side).
    """

    recipients: tuple[RecipientResult, ...]
    host: str | None = None
    tls: bool = False
    extensions: Extensions | None = None

    def __getitem__(self, recipient: Mailbox) -> RecipientResult:
        """The (first) result for ``recipient``."""
        for result in self.recipients:
            if result.recipient == recipient:
                return result
        raise KeyError(recipient)

    def with_status(self, status: Status) -> tuple[RecipientResult, ...]:
        """The results whose status is ``status``."""
        return tuple(r for r in self.recipients if r.status is status)

    @property
    def delivered(self) -> tuple[RecipientResult, ...]:
        """Recipients the server accepted responsibility for."""
        return self.with_status(Status.DELIVERED)

    @property
    def transient(self) -> tuple[RecipientResult, ...]:
        """Recipients to try again later."""
        return self.with_status(Status.TRANSIENT)

    @property
    def permanent(self) -> tuple[RecipientResult, ...]:
        """Recipients that failed for good."""
        return self.with_status(Status.PERMANENT)
