"""A leased message, as one delivery worker sees it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Self

import anyio
import attrs

from smtp_message import Reply

from ._errors import LeaseLostError
from ._model import RecipientResult

if TYPE_CHECKING:
    from types import TracebackType

    from smtp_message import Mailbox

    from ._model import Envelope, MessageState, Recipient
    from ._queue import Queue
    from ._store import BodyStream, Lease, StoredMessage

__all__ = ["HANDLER_FAILED", "Delivery"]

#: Recorded for every pending recipient when a delivery handler raised.
HANDLER_FAILED = Reply(451, "4.3.0", "Local error in delivery, will try again")


@attrs.define(eq=False)
class Delivery:
    """A leased message, handed to one delivery worker for one attempt.

    Deliver :attr:`recipients` (the pending ones) with :attr:`envelope`'s
    parameters and :meth:`body`, then :meth:`record` one result per recipient.
    Used as an async context manager, leaving the block without recording
    counts as a transient failure of every recipient (or, if cancelled,
    gives the message back untouched).
    """

    _queue: Queue
    _stored: StoredMessage
    _lease: Lease
    #: When the lease runs out (``anyio.current_time()`` clock).
    deadline: float
    _finished: bool = attrs.field(init=False, default=False)
    _bodies: list[_LeasedBody] = attrs.field(init=False, factory=list)

    @property
    def id(self) -> str:
        """The message id."""
        return self._stored.id

    @property
    def envelope(self) -> Envelope:
        """The whole envelope, as enqueued."""
        return self._stored.envelope

    @property
    def recipients(self) -> tuple[Recipient, ...]:
        """The recipients to deliver to now: those still pending."""
        return tuple(self.envelope.recipients[i] for i in self._stored.state.pending())

    @property
    def state(self) -> MessageState:
        """The state as it was when the lease was taken."""
        return self._stored.state

    @property
    def arrival(self) -> float:
        """When the message was enqueued (seconds since the epoch)."""
        return self._stored.arrival

    @property
    def size(self) -> int:
        """The body's size in octets."""
        return self._stored.size

    @property
    def attempt(self) -> int:
        """Which attempt this is: 1 for the first."""
        return self._stored.state.attempts + 1

    def body(self) -> BodyStream:
        """Stream the body.  May be called again for another attempt at it."""
        if self._finished:
            raise LeaseLostError(f"the lease on {self.id} has ended")
        stream = _LeasedBody(self._queue.store.body(self.id), self.id)
        self._bodies.append(stream)
        return stream

    async def record(self, results: Mapping[Mailbox, RecipientResult]) -> MessageState | None:
        """Record this attempt's results durably and end the lease.

        ``results`` has one entry per pending recipient, keyed by mailbox; a
        recipient left out counts as a transient failure.  Delivered
        recipients are never tried again; failed ones (and, at the end of the
        message's lifetime, transiently failing ones) are bounced to the sender
        as their NOTIFY asks.  Returns the new state, or ``None`` once the
        message has left the queue.  Raises :class:`LeaseLostError` if the lease
        ended first, :class:`ValueError` for a mailbox that is not pending.  If
        the store fails (:class:`OSError`, e.g. a full disk), the error is
        raised after the delivery has ended: the message keeps its previous
        state and is tried again when this attempt's retry would have been;
        till then the queue keeps its lease, so that no other process
        sharing the store tries it sooner.  :class:`TypeError` if
        ``results`` is not a mapping.
        """
        if self._finished:
            raise LeaseLostError(f"the lease on {self.id} has ended")
        if not isinstance(results, Mapping):
            raise TypeError(f"results must be a mapping, not {type(results).__name__}")
        pending = set(self._stored.state.pending())
        indexed: dict[int, RecipientResult] = {}
        for mailbox, result in results.items():
            try:
                i = self.envelope.recipient_index(mailbox)
            except KeyError:
                raise ValueError(f"{mailbox} is not a recipient of {self.id}") from None
            if i not in pending:
                raise ValueError(f"{mailbox} is not pending in {self.id}")
            if not isinstance(result, RecipientResult):
                raise TypeError(f"not a RecipientResult: {result!r}")
            indexed[i] = result
        return await self._queue._record(self, indexed)

    async def release(self) -> None:
        """Give the message back without counting an attempt (e.g. shutting down)."""
        if not self._finished:
            await self._queue._finish(self)
            state = self._stored.state
            if not state.held:
                self._queue._schedule(self.id, state.next_attempt)

    async def _close(self) -> None:
        self._finished = True
        for stream in self._bodies:
            await stream.revoke()
        self._bodies.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._finished:
            return
        with anyio.CancelScope(shield=True):
            if exc_type is not None and issubclass(exc_type, anyio.get_cancelled_exc_class()):
                await self.release()
            else:
                reply = HANDLER_FAILED if exc_type is not None else None
                await self.record(
                    {}
                    if reply is None
                    else {r.mailbox: RecipientResult.transient(reply) for r in self.recipients}
                )


class _LeasedBody:
    """A store's body stream, valid only while the lease lasts.

    When the lease ends (it expired, or the queue closed) before the holder
    has read to the end, the next read raises :class:`LeaseLostError`:
    an end that looked normal would let the holder finish sending a
    truncated message (its end-of-data mark after part of the body).
    """

    def __init__(self, inner: BodyStream, message_id: str) -> None:
        self._inner = inner
        self._chunks = inner.__aiter__()
        self._id = message_id
        self._ended = False
        self._revoked = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._revoked:
            raise LeaseLostError(f"the lease on {self._id} has ended")
        if self._ended:
            raise StopAsyncIteration
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._ended = True
            raise
        if self._revoked:  # ended while this chunk was being read
            raise LeaseLostError(f"the lease on {self._id} has ended")
        return chunk

    async def aclose(self) -> None:
        """Release what the reader holds."""
        self._ended = True
        await self._inner.aclose()

    async def revoke(self) -> None:
        """The lease ended: close, and fail the next read unless it was done."""
        if not self._ended:
            self._revoked = True
        await self._inner.aclose()
