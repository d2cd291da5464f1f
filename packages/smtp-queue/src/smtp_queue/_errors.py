"""Exceptions, named by cause (as trio names its own)."""

from __future__ import annotations

__all__ = [
    "CorruptMessageError",
    "LeaseLostError",
    "MessageNotFoundError",
    "MessageTooLargeError",
    "QueueError",
    "SpoolError",
]


class QueueError(Exception):
    """Base class of every error this package raises."""


class MessageNotFoundError(QueueError, LookupError):
    """No message has this id: it was delivered, bounced, deleted or never was."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"no message {message_id!r} in the queue")
        self.message_id = message_id


class LeaseLostError(QueueError):
    """The delivery's lease ended before its result was recorded.

    It was released, timed out, or the queue was closed.  The message went
    back to the queue and will be tried again (delivery is at-least-once).
    """


class MessageTooLargeError(QueueError):
    """The message is over a limit of the queue; nothing was enqueued.

    The body exceeded the queue's size limit while it was being written;
    or (``what="envelope"``) the envelope, tens of thousands of recipients,
    exceeded the store's limit for a message's header.  A server answers
    ``552 5.3.4`` (RFC 5321 4.5.3.1.10, RFC 3463 X.3.4).
    """

    def __init__(self, limit: int, what: str = "message") -> None:
        super().__init__(f"{what} larger than the limit of {limit} octets")
        self.limit = limit
        self.what = what


class CorruptMessageError(QueueError):
    """A stored message or its state cannot be read back.

    The store has moved the files to quarantine before raising this; nothing is
    deleted.  ``reason`` says what was wrong.
    """

    def __init__(self, message_id: str, reason: str) -> None:
        super().__init__(f"message {message_id!r} is corrupt: {reason}")
        self.message_id = message_id
        self.reason = reason


class SpoolError(QueueError):
    """The spool directory cannot be used: not a spool, or a newer format."""
