"""The storage interface: what the scheduler needs from a place to keep mail.

:class:`~smtp_queue.Queue` only ever talks to a :class:`Store`, so a shared
store (PostgreSQL with ``SELECT ... FOR UPDATE SKIP LOCKED`` leases) can
replace the filesystem one without the scheduler knowing.  The contract of
each method is written for any backend; the filesystem's way of keeping it is
in its own module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable

    from ._model import Envelope, MessageState

__all__ = [
    "BodyStream",
    "Lease",
    "QuarantineEntry",
    "ScanEntry",
    "Store",
    "StoredMessage",
]


@attrs.frozen
class ScanEntry:
    """What a scan knows of one message without reading it.

    ``due`` is a hint for the scheduler (the authoritative time is in the
    state): the next attempt time, or ``None`` while the message is held.
    """

    id: str
    arrival: float
    due: float | None
    #: Octets the message occupies in the store.
    size: int
    #: Whether it has been tried at least once (it has a saved state).
    attempted: bool


@attrs.frozen
class StoredMessage:
    """A message's metadata, read back."""

    id: str
    arrival: float
    envelope: Envelope
    state: MessageState
    #: Size of the body in octets.
    size: int


@attrs.frozen
class QuarantineEntry:
    """A file the store set aside because it could not use it."""

    #: Where it is now.
    path: str
    #: Where it was found.
    source: str
    reason: str
    #: When it was set aside (seconds since the epoch).
    time: float


class Lease(Protocol):
    """An exclusive claim on one message for one delivery attempt.

    While it is held no other lease on the message can be taken, in this
    process or any other sharing the store.  It ends when released, and also
    when its holder dies (the filesystem store uses ``flock``, which the kernel
    drops with the process; a database store gives leases an expiry time).
    """

    @property
    def message_id(self) -> str:
        """The leased message."""


class BodyStream(Protocol):
    """A message body read in chunks; close it when done (or read it to the end)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Iterate over the chunks."""

    async def aclose(self) -> None:
        """Release what the reader holds."""


class Store(Protocol):
    """Durable storage of messages, their state, and leases on them.

    Every method may be called concurrently from several tasks, and several
    processes may share the store.  Blocking work must not stall the event
    loop: a store does its I/O in worker threads or natively async.
    """

    async def open(self) -> None:
        """Prepare for use and recover from a crash.

        Anything written only in part when a writer died is removed (it was
        never acknowledged); anything that is not this store's is quarantined.
        """

    async def close(self) -> None:
        """Release every lease and resource this instance holds."""

    async def add(
        self,
        envelope: Envelope,
        body: AsyncIterable[bytes],
        *,
        arrival: float,
        max_size: int | None,
    ) -> str:
        """Store a new message and return its id.

        The body is read chunk by chunk and never held whole in memory.  When
        this returns, the message is durable: a crash at any later instant
        does not lose it.  If it raises (the body's iterator failed, the size
        exceeded ``max_size``, the disk is full), nothing was stored.
        """

    async def scan(self) -> list[ScanEntry]:
        """Every message, without reading their contents."""

    async def locate(self, message_id: str) -> ScanEntry | None:
        """One message's :class:`ScanEntry`, or ``None`` if it is not there."""

    async def poll_changes(self) -> list[str] | None:
        """Ids that other store instances changed since the last call.

        ``None`` means the store cannot tell (its change log was lost or
        rotated): the caller should :meth:`scan` again.
        """

    async def lease(self, message_id: str) -> Lease | None:
        """Take the lease on a message; ``None`` if someone else holds it.

        Raises :class:`~smtp_queue.MessageNotFoundError` if it is gone, and
        :class:`~smtp_queue.CorruptMessageError` (after quarantining it) if
        what is there is not a message file.
        """

    async def release(self, lease: Lease) -> None:
        """End a lease (idempotent)."""

    async def is_leased(self, message_id: str) -> bool:
        """Whether anybody holds the lease on the message right now.

        It only looks: a :meth:`lease` taken at the same moment, in any
        process, must still succeed (an operator's ``show`` never delays a
        delivery).
        """

    async def load(self, message_id: str) -> StoredMessage:
        """Read a message's envelope and state.

        Raises :class:`~smtp_queue.MessageNotFoundError`, or
        :class:`~smtp_queue.CorruptMessageError` after quarantining a message
        that cannot be read.
        """

    def body(self, message_id: str) -> BodyStream:
        """Stream the body.

        The stream checks the body against what was stored and raises
        :class:`~smtp_queue.CorruptMessageError` (after quarantining the
        message) rather than yield the last chunk of a damaged one.
        """

    async def update(
        self,
        message_id: str,
        change: Callable[[MessageState], MessageState | None],
    ) -> MessageState | None:
        """Atomically replace a message's state with ``change(state)``.

        ``change`` is a pure function, called with no other update of the
        message in progress anywhere; returning ``None`` removes the message.
        When this returns, the change is durable.  Raises
        :class:`~smtp_queue.MessageNotFoundError` if the message is gone,
        :class:`~smtp_queue.CorruptMessageError` (after quarantining it) if
        its files are not what they should be, and :class:`OSError` if the
        change could not be made durable: it may then be in place already
        (the rename done, the directory's fsync failed), so readers see it,
        and a crash may or may not undo it.  Callers treat it as not saved
        and let the next attempt read whichever state is there.
        Updating does not need the lease: operators hold, release and delete
        messages while a delivery is in progress.
        """

    async def quarantined(self) -> list[QuarantineEntry]:
        """What has been set aside so far, oldest first."""
