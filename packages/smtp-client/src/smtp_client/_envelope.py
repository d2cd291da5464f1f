"""The envelope of a message: who it is from, who it is for, and how."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from smtp_message import Mailbox, MailParams, RcptParams

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Envelope", "Recipient"]


def _mailbox(value: str | Mailbox) -> Mailbox:
    if isinstance(value, Mailbox):
        return value
    # Mailbox.parse accepts UTF-8 (RFC 6531) and refuses every control
    # character, CR and LF above all: nothing that could end a command line
    # early can reach the wire (aiosmtplib GHSA-v3q9-hj7j-63hq).
    return Mailbox.parse(value, utf8=True)


@attrs.frozen
class Recipient:
    """One forward-path with its RCPT parameters (RFC 3461 NOTIFY, ORCPT)."""

    address: Mailbox = attrs.field(validator=attrs.validators.instance_of(Mailbox))
    params: RcptParams = attrs.field(
        factory=RcptParams, validator=attrs.validators.instance_of(RcptParams)
    )

    @classmethod
    def parse(cls, address: str | Mailbox, params: RcptParams | None = None) -> Recipient:
        """A recipient from ``local@domain`` text; raises ``ValueError`` if bad."""
        return cls(_mailbox(address), params or RcptParams())


def _to_recipients(value: Iterable[Recipient]) -> tuple[Recipient, ...]:
    return tuple(value)


def _check_recipients(_instance: object, _attribute: object, value: tuple[Recipient, ...]) -> None:
    if not value:
        raise ValueError("an envelope needs at least one recipient")
    for item in value:
        if not isinstance(item, Recipient):
            raise TypeError(f"not a Recipient: {item!r}")


@attrs.frozen
class Envelope:
    """The SMTP envelope (RFC 5321 2.3.1): reverse-path, recipients, parameters.

    ``sender`` is ``None`` for the null reverse-path ``<>`` (bounces, RFC
    5321 4.5.5).  ``params`` are the MAIL parameters the caller wants
    passed on (DSN's ``RET`` and ``ENVID``, ``BODY``, ``SMTPUTF8``,
    ``REQUIRETLS``); the client adds ``SIZE``, ``BODY=8BITMIME`` and
    ``SMTPUTF8`` itself when the server supports them and the message
    needs them, and drops DSN parameters a server does not support.

    Every value is checked when built, so an envelope holding a CR, LF or
    other control character cannot exist.
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
    def build(
        cls,
        sender: str | Mailbox | None,
        recipients: Iterable[str | Mailbox | Recipient],
        params: MailParams | None = None,
    ) -> Envelope:
        """An envelope from address text (``""`` or ``None``: the null path).

        Raises :class:`ValueError` (an :class:`~smtp_message.AddressError`)
        for an address that does not parse, including one holding CR or LF.
        """
        mailbox = None if sender is None or sender == "" else _mailbox(sender)
        rcpts = [r if isinstance(r, Recipient) else Recipient(_mailbox(r)) for r in recipients]
        return cls(mailbox, rcpts, params or MailParams())

    @property
    def needs_smtputf8(self) -> bool:
        """True if an address is non-ASCII, or SMTPUTF8 was asked for (RFC 6531)."""
        if self.params.smtputf8:
            return True
        if self.sender is not None and self.sender.needs_smtputf8:
            return True
        return any(r.address.needs_smtputf8 for r in self.recipients)
