"""The queue's values: envelopes, per-recipient state, delivery results."""

from __future__ import annotations

import datetime
import enum
import functools
import re
from typing import TYPE_CHECKING

import attrs

from smtp_message import (
    Mailbox,
    MailParams,
    Notify,
    OriginalRecipient,
    RcptParams,
    Reply,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from smtp_message import MailFrom, RcptTo

__all__ = [
    "Envelope",
    "Handoff",
    "MessageInfo",
    "MessageState",
    "Outcome",
    "QueueStatistics",
    "Recipient",
    "RecipientResult",
    "RecipientState",
    "RecipientStatus",
]


def _to_recipient(value: Recipient | Mailbox) -> Recipient:
    return value if isinstance(value, Recipient) else Recipient(value)


@attrs.frozen
class Recipient:
    """One forward-path of the envelope with its RCPT parameters.

    ``params`` carries the DSN parameters (RFC 3461 4.1 NOTIFY, 4.2 ORCPT)
    that decide which notifications this recipient's fate produces.
    """

    mailbox: Mailbox = attrs.field(validator=attrs.validators.instance_of(Mailbox))
    params: RcptParams = attrs.field(
        factory=RcptParams, validator=attrs.validators.instance_of(RcptParams)
    )

    @property
    def notify(self) -> frozenset[Notify] | None:
        """``NOTIFY=`` as given, or ``None`` when the client did not say."""
        return self.params.notify

    @property
    def orcpt(self) -> OriginalRecipient | None:
        """``ORCPT=``, the address the client originally meant (RFC 3461 4.2)."""
        return self.params.orcpt

    def key(self) -> tuple[str, str]:
        """What makes two recipients the same mailbox.

        The local part is compared exactly (RFC 5321 2.4: it may be case
        sensitive); the domain as DNS compares it.
        """
        return _mailbox_key(self.mailbox)


def _mailbox_key(mailbox: Mailbox) -> tuple[str, str]:
    if mailbox.domain is None:
        # RFC 5321 4.1.1.3: "Postmaster" is case-insensitive.
        return (mailbox.local_part.lower(), "")
    return (mailbox.local_part, mailbox.domain_key())


def _to_recipients(values: Iterable[Recipient | Mailbox]) -> tuple[Recipient, ...]:
    # A client may name one mailbox twice; it gets the message once (as
    # Postfix's duplicate filter does), with the first RCPT's parameters.
    seen: set[tuple[str, str]] = set()
    out = []
    for value in values:
        recipient = _to_recipient(value)
        if recipient.key() not in seen:
            seen.add(recipient.key())
            out.append(recipient)
    return tuple(out)


def _check_recipients(_instance: object, _attribute: object, value: tuple[Recipient, ...]) -> None:
    if not value:
        raise ValueError("an envelope needs at least one recipient")


@attrs.frozen
class Envelope:
    """The SMTP envelope of a queued message (RFC 5321 2.3.1).

    ``sender`` is the reverse-path, ``None`` for the null path ``<>`` that
    notifications are sent with (RFC 5321 4.5.5); a message with a null
    sender never causes a notification itself.  ``params`` keeps the MAIL
    parameters the next hop needs: BODY, SMTPUTF8, REQUIRETLS, and the DSN
    parameters RET and ENVID (RFC 3461 4.3, 4.4).  Recipients are given as
    :class:`Recipient` or plain :class:`~smtp_message.Mailbox`; a mailbox named
    twice is kept once.
    """

    sender: Mailbox | None = attrs.field(
        validator=attrs.validators.optional(attrs.validators.instance_of(Mailbox))
    )
    recipients: tuple[Recipient, ...] = attrs.field(
        converter=_to_recipients, validator=_check_recipients
    )
    params: MailParams = attrs.field(
        factory=MailParams, validator=attrs.validators.instance_of(MailParams)
    )

    @classmethod
    def from_commands(cls, mail: MailFrom, recipients: Iterable[RcptTo]) -> Envelope:
        """The envelope a server accepted: its MAIL command and RCPT commands."""
        return cls(
            mail.reverse_path,
            [Recipient(r.forward_path, r.params) for r in recipients],
            mail.params,
        )

    def recipient_index(self, mailbox: Mailbox) -> int:
        """The position of ``mailbox`` among the recipients.

        Raises :class:`KeyError` if it is not one of them.
        """
        index = self._indices.get(_mailbox_key(mailbox))
        if index is None:
            raise KeyError(str(mailbox))
        return index

    @functools.cached_property
    def _indices(self) -> dict[tuple[str, str], int]:
        # Built once: a delivery records each of thousands of recipients.
        return {recipient.key(): i for i, recipient in enumerate(self.recipients)}


def _to_notified(value: Iterable[Notify]) -> frozenset[Notify]:
    return frozenset(value)


def _to_states(value: Iterable[RecipientState]) -> tuple[RecipientState, ...]:
    return tuple(value)


class RecipientStatus(enum.Enum):
    """Where one recipient stands."""

    #: Not delivered yet; it will be tried again.
    PENDING = "pending"
    #: Accepted by the next hop.  Never sent again.
    DELIVERED = "delivered"
    #: Failed permanently, or still failing when the message expired.
    FAILED = "failed"


@attrs.frozen
class RecipientState:
    """What the queue knows about one recipient."""

    status: RecipientStatus = RecipientStatus.PENDING
    #: Delivery attempts made for this recipient.
    attempts: int = 0
    #: The reply of the last attempt (the server's, or one made up locally).
    last_reply: Reply | None = None
    #: When the last attempt was made (seconds since the epoch).
    last_attempt: float | None = None
    #: The host that gave ``last_reply``; ``None`` when it was local.
    host: str | None = None
    #: The notifications already issued for this recipient, so a restart never
    #: issues them twice: ``Notify.FAILURE``, ``Notify.DELAY``, ``Notify.SUCCESS``.
    notified: frozenset[Notify] = attrs.field(default=frozenset(), converter=_to_notified)

    @property
    def is_final(self) -> bool:
        """Delivered or failed: nothing more will be tried."""
        return self.status is not RecipientStatus.PENDING


@attrs.frozen
class MessageState:
    """The mutable part of a queued message, replaced whole on every change."""

    #: One entry per envelope recipient, in the same order.
    recipients: tuple[RecipientState, ...] = attrs.field(converter=_to_states)
    #: When the message is due next (seconds since the epoch).
    next_attempt: float
    #: Delivery attempts made for the message.
    attempts: int = 0
    #: Held by an operator: not delivered, and not expired, until released.
    held: bool = False

    @classmethod
    def initial(cls, recipients: int, arrival: float) -> MessageState:
        """The state of a message just enqueued: everything pending, due now."""
        return cls((RecipientState(),) * recipients, next_attempt=arrival)

    @property
    def done(self) -> bool:
        """Every recipient delivered or failed: the message can leave the queue."""
        return all(r.is_final for r in self.recipients)

    def pending(self) -> list[int]:
        """Indices of the recipients still to be delivered."""
        return [i for i, r in enumerate(self.recipients) if not r.is_final]


class Outcome(enum.Enum):
    """The result of one delivery attempt for one recipient."""

    DELIVERED = "delivered"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


class Handoff(enum.Enum):
    """What a successful delivery means for notifications (RFC 3461 5.2).

    It decides whether a ``NOTIFY=SUCCESS`` recipient gets a notification from
    this queue, and with which action (RFC 3464 2.3.3).
    """

    #: Final delivery into a mailbox, e.g. over LMTP (5.2.3): "delivered".
    DELIVERED = "delivered"
    #: Relayed to an SMTP server without the DSN extension (5.2.2): "relayed".
    RELAYED = "relayed"
    #: Relayed to a server with the DSN extension, with NOTIFY and ORCPT passed
    #: on (5.2.1): that server reports from now on; nothing is issued here.
    DSN_RELAYED = "dsn-relayed"


_HOST = re.compile(r"[\x21-\x7e]{1,255}")


def _check_host(_instance: object, _attribute: object, value: str | None) -> None:
    if value is not None and not _HOST.fullmatch(value):
        raise ValueError(f"not a host name or address: {value!r}")


@attrs.frozen
class RecipientResult:
    """One recipient's result of one attempt, as a delivery client reports it.

    ``reply`` is the server's reply (or one made up by the client for a
    failure no server answered: a refused connection, a DNS error), ``host``
    the server that gave it (``None`` when nobody did).  The outcome and the
    reply class must agree: 2yz for delivered, 4yz or 5yz for a failure.
    """

    outcome: Outcome
    reply: Reply = attrs.field(validator=attrs.validators.instance_of(Reply))
    host: str | None = attrs.field(default=None, validator=_check_host)
    handoff: Handoff = Handoff.RELAYED

    def __attrs_post_init__(self) -> None:
        if (self.outcome is Outcome.DELIVERED) != self.reply.is_positive:
            raise ValueError(f"a {self.outcome.value} result cannot carry reply {self.reply.code}")
        if self.reply.is_intermediate:
            raise ValueError(f"{self.reply.code} is not a final reply")

    @classmethod
    def delivered(
        cls, reply: Reply, host: str | None = None, handoff: Handoff = Handoff.RELAYED
    ) -> RecipientResult:
        """The next hop took responsibility for this recipient."""
        return cls(Outcome.DELIVERED, reply, host, handoff)

    @classmethod
    def transient(cls, reply: Reply, host: str | None = None) -> RecipientResult:
        """Not delivered this time; try again later."""
        return cls(Outcome.TRANSIENT, reply, host)

    @classmethod
    def permanent(cls, reply: Reply, host: str | None = None) -> RecipientResult:
        """Never deliverable: bounce it."""
        return cls(Outcome.PERMANENT, reply, host)


def _utc(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)


@attrs.frozen
class MessageInfo:
    """One queued message as the operator sees it (``smtp-mta queue show``)."""

    id: str
    envelope: Envelope
    state: MessageState
    #: When the message was enqueued (seconds since the epoch).
    arrival_time: float
    #: Size of the body in octets.
    size: int
    #: Whether a delivery worker (in any process) holds it right now.
    leased: bool

    @property
    def sender(self) -> Mailbox | None:
        """The reverse-path; ``None`` for a notification (``<>``)."""
        return self.envelope.sender

    @property
    def arrival(self) -> datetime.datetime:
        """When the message was enqueued, in UTC."""
        return _utc(self.arrival_time)

    @property
    def held(self) -> bool:
        """Held by an operator."""
        return self.state.held

    @property
    def next_attempt(self) -> datetime.datetime | None:
        """When delivery is tried next; ``None`` while held."""
        return None if self.state.held else _utc(self.state.next_attempt)

    @property
    def pending(self) -> tuple[Recipient, ...]:
        """The recipients not yet delivered or failed."""
        return tuple(self.envelope.recipients[i] for i in self.state.pending())

    @property
    def last_error(self) -> Reply | None:
        """The most recent failure reply among the recipients, if any."""
        failures = [
            (r.last_attempt or 0.0, r.last_reply)
            for r in self.state.recipients
            if r.last_reply is not None and not r.last_reply.is_positive
        ]
        return max(failures, key=lambda f: f[0])[1] if failures else None

    def age(self, now: float) -> float:
        """Seconds since arrival at ``now`` (seconds since the epoch)."""
        return max(0.0, now - self.arrival_time)


@attrs.frozen
class QueueStatistics:
    """Counts over the whole spool, as every process sees it."""

    #: Messages in the queue.
    messages: int
    #: Of which held by an operator.
    held: int
    #: Of which tried at least once and still there.
    deferred: int
    #: Total size of the stored messages in octets (bodies and metadata).
    size: int
    #: Arrival time of the oldest message, or ``None`` for an empty queue.
    oldest_arrival: float | None

    def oldest_age(self, now: float) -> float | None:
        """Seconds the oldest message has waited at ``now``."""
        if self.oldest_arrival is None:
            return None
        return max(0.0, now - self.oldest_arrival)
