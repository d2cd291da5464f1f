"""The queue: enqueue, the scheduler that hands out deliveries, operations."""

from __future__ import annotations

import heapq
import logging
import random
import time
from typing import TYPE_CHECKING, Self, TypeAlias

import anyio
import attrs

from smtp_message import Notify, Reply, Ret

from ._delivery import HANDLER_FAILED, Delivery
from ._dsn import build_report, header_block
from ._errors import CorruptMessageError, LeaseLostError, MessageNotFoundError, QueueError
from ._fs import FilesystemStore
from ._model import MessageInfo, QueueStatistics, RecipientResult
from ._policy import apply_results
from ._settings import QueueSettings

if TYPE_CHECKING:
    import os
    from collections.abc import (
        AsyncIterable,
        AsyncIterator,
        Awaitable,
        Callable,
        Mapping,
    )

    from smtp_message import Mailbox

    from ._model import Envelope, MessageState
    from ._policy import Notice
    from ._store import Lease, QuarantineEntry, Store, StoredMessage

__all__ = ["Handler", "Queue"]

logger = logging.getLogger("smtp_queue")

#: Recorded when a delivery attempt ran past the lease (RFC 3463 X.4.7).
ATTEMPT_TIMED_OUT = Reply(451, "4.4.7", "Delivery attempt timed out")
#: A lease is taken back this long after its deadline if its holder is silent.
LEASE_GRACE = 60.0
#: At most this many leases kept open after failed saves (each an open file).
MAX_PARKED = 1024
#: How much of a header section is returned at most (RET=HDRS, or a message
#: too large to return whole).
MAX_RETURNED_HEADERS = 256 * 1024

#: What :meth:`Queue.serve` calls for each delivery: it attempts it and returns
#: one result per recipient.
Handler: TypeAlias = "Callable[[Delivery], Awaitable[Mapping[Mailbox, RecipientResult]]]"


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


@attrs.define(eq=False)
class Queue:
    """A durable mail queue over a :class:`Store`.

    Open it with ``async with``; then :meth:`enqueue` messages, run delivery
    workers with :meth:`serve` (or take deliveries one by one with
    :meth:`next_delivery`), and operate on it (:meth:`messages`,
    :meth:`hold`, :meth:`retry`, ...).  Several processes may open queues on
    the same store: an operator's command and the MTA's workers, or several
    MTA instances.

    ``clock`` gives the wall-clock time (seconds since the epoch) used for
    everything stored; ``random`` the jitter of retry times.  Both are there
    for tests.
    """

    store: Store
    settings: QueueSettings = attrs.field(factory=QueueSettings)
    clock: Callable[[], float] = time.time
    random: Callable[[], float] = random.random
    _due: dict[str, float] = attrs.field(init=False, factory=dict)
    _heap: list[tuple[float, str]] = attrs.field(init=False, factory=list)
    _active: dict[str, Delivery] = attrs.field(init=False, factory=dict)
    #: Messages whose last attempt could not be saved (or that could not be
    #: read): not before this time, and the lease kept till then if any.
    _parked: dict[str, tuple[Lease | None, float]] = attrs.field(init=False, factory=dict)
    _wakeup: anyio.Event | None = attrs.field(init=False, default=None)
    _is_open: bool = attrs.field(init=False, default=False)
    _maintaining: bool = attrs.field(init=False, default=False)
    _last_poll: float = attrs.field(init=False, default=0.0)
    _last_scan: float = attrs.field(init=False, default=0.0)

    @classmethod
    def from_path(
        cls,
        directory: str | os.PathLike[str],
        settings: QueueSettings | None = None,
        *,
        durable: bool = True,
    ) -> Queue:
        """A queue on a spool directory (a :class:`FilesystemStore`)."""
        return cls(FilesystemStore(directory, durable=durable), settings or QueueSettings())

    # -- opening ---------------------------------------------------------------

    async def open(self) -> None:
        """Open the store, recover it, and schedule every message in it."""
        await self.store.open()
        self._wakeup = anyio.Event()
        self._is_open = True
        await self._rescan()

    async def aclose(self) -> None:
        """Give back every lease and close the store."""
        if not self._is_open:
            return
        self._is_open = False
        with anyio.CancelScope(shield=True):
            for delivery in list(self._active.values()):
                await self._finish(delivery)
            for message_id in list(self._parked):
                await self._unpark(message_id)
            await self.store.close()
        self._notify()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if not self._is_open:
            raise RuntimeError("the queue is not open")

    # -- enqueueing ------------------------------------------------------------

    async def enqueue(self, envelope: Envelope, body: AsyncIterable[bytes] | bytes) -> str:
        """Store a message durably and return its id.

        ``body`` is the message content (RFC 5322 header and body, CRLF line
        ends, not dot-stuffed): bytes, or an async iterable of byte chunks that
        is read as it comes and never held whole in memory.  When this returns
        the message has been written, fsynced and renamed into place and the
        directory fsynced: a server may now answer 250.  If it raises, nothing
        was enqueued.
        """
        self._check_open()
        return await self._enqueue(envelope, body, self.settings.max_message_size)

    async def _enqueue(
        self, envelope: Envelope, body: AsyncIterable[bytes] | bytes, max_size: int | None
    ) -> str:
        chunks = _one_chunk(bytes(body)) if isinstance(body, bytes | bytearray) else body
        arrival = self.clock()
        message_id = await self.store.add(envelope, chunks, arrival=arrival, max_size=max_size)
        self._schedule(message_id, arrival)
        return message_id

    # -- scheduling ------------------------------------------------------------

    def _notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = anyio.Event() if self._is_open else None

    def _schedule(self, message_id: str, due: float) -> None:
        if not self._is_open or message_id in self._active:
            return
        due = self._not_before(message_id, due)
        self._due[message_id] = due
        heapq.heappush(self._heap, (due, message_id))
        if len(self._heap) > 2 * len(self._due) + 1024:
            # Drop the entries superseded by later scheduling.
            self._heap = [(d, m) for m, d in self._due.items()]
            heapq.heapify(self._heap)
        self._notify()

    def _unschedule(self, message_id: str) -> None:
        self._due.pop(message_id, None)

    def _not_before(self, message_id: str, due: float) -> float:
        parked = self._parked.get(message_id)
        return due if parked is None else max(due, parked[1])

    async def _park(self, message_id: str, lease: Lease | None, failures: int) -> None:
        """After a storage error, try ``message_id`` again on the retry schedule.

        The stored state still says the message is due (its new state is what
        could not be saved), so the later time is kept here, where a rescan or
        another process's change cannot undo it; and the lease is kept until
        then, so that no other process sharing the store delivers it again at
        once.  A disk that is full now is likely full in a second too.
        """
        if lease is not None and sum(1 for held, _ in self._parked.values() if held) >= MAX_PARKED:
            # Bounded: each parked lease is an open file.  Past the bound only
            # this process waits; another may try the message sooner.
            await self.store.release(lease)
            lease = None
        # _claim took any earlier parking of this message before the attempt.
        assert message_id not in self._parked
        until = self.clock() + self.settings.schedule.delay(failures, self.random())
        self._parked[message_id] = (lease, until)
        self._schedule(message_id, until)

    async def _unpark(self, message_id: str) -> None:
        parked = self._parked.pop(message_id, None)
        if parked is not None and parked[0] is not None:
            await self.store.release(parked[0])

    def _pop_due(self) -> str | None:
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            due, message_id = heapq.heappop(self._heap)
            if self._due.get(message_id) == due and message_id not in self._active:
                del self._due[message_id]
                return message_id
        return None

    def _next_due(self) -> float | None:
        while self._heap:
            due, message_id = self._heap[0]
            if self._due.get(message_id) == due:
                return due
            heapq.heappop(self._heap)
        return None

    async def _rescan(self) -> None:
        entries = await self.store.scan()
        self._due = {
            e.id: self._not_before(e.id, e.due)
            for e in entries
            if e.due is not None and e.id not in self._active
        }
        self._heap = [(due, message_id) for message_id, due in self._due.items()]
        heapq.heapify(self._heap)
        self._last_scan = self._last_poll = anyio.current_time()
        self._notify()

    async def _refresh(self, message_ids: list[str]) -> None:
        for message_id in message_ids:
            entry = await self.store.locate(message_id)
            if entry is None or entry.due is None:
                self._unschedule(message_id)
            else:
                self._schedule(message_id, entry.due)

    async def _maintain(self) -> None:
        """Notice other processes' changes, rescan now and then, end dead leases.

        Run by waiting workers, at most once per poll interval.
        """
        now = anyio.current_time()
        if self._maintaining or now - self._last_poll < self.settings.poll_interval:
            return
        self._maintaining = True
        try:
            self._last_poll = now
            try:
                changed = await self.store.poll_changes()
                if changed is None or now - self._last_scan >= self.settings.rescan_interval:
                    await self._rescan()
                elif changed:
                    await self._refresh(changed)
            except (OSError, QueueError):
                # A disk error reading the spool (EIO, a lost directory)
                # must not end the waiting workers, and serve() with them:
                # what is scheduled still runs; the next poll tries again.
                logger.exception(
                    "cannot read the spool for changes; trying again in %g s",
                    self.settings.poll_interval,
                )
            for delivery in list(self._active.values()):
                if anyio.current_time() > delivery.deadline + LEASE_GRACE:
                    logger.warning("lease on %s expired; taking it back", delivery.id)
                    await self._finish(delivery)
                    self._schedule(delivery.id, self.clock() + self.settings.schedule.delay(1))
        finally:
            self._maintaining = False

    async def try_next_delivery(self) -> Delivery | None:
        """Lease a message that is due now, or return ``None`` if none is."""
        self._check_open()
        while True:
            message_id = self._pop_due()
            if message_id is None:
                return None
            delivery = await self._claim(message_id)
            if delivery is not None:
                return delivery

    async def next_delivery(self) -> Delivery:
        """Wait until a message is due, lease it and return it.

        Wakes at once when a message is enqueued by this queue, within
        ``poll_interval`` when another process changes the store.
        """
        while True:
            delivery = await self.try_next_delivery()
            if delivery is not None:
                return delivery
            await self._maintain()
            if not self._is_open or self._wakeup is None:
                raise RuntimeError("the queue was closed")
            event = self._wakeup
            due = self._next_due()
            wait = self.settings.poll_interval
            if due is not None:
                wait = min(wait, max(0.0, due - self.clock()))
            if wait > 0:
                with anyio.move_on_after(wait):
                    await event.wait()

    async def _claim(self, message_id: str) -> Delivery | None:
        parked = self._parked.pop(message_id, None)
        lease: Lease | None
        if parked is not None and parked[0] is not None:
            lease = parked[0]  # still ours since the failed attempt
        else:
            try:
                lease = await self.store.lease(message_id)
            except (MessageNotFoundError, CorruptMessageError):
                return None  # gone, or quarantined (not a message file)
            except OSError:
                logger.exception("cannot lease %s; trying it again later", message_id)
                await self._park(message_id, None, 1)
                return None
        if lease is None:
            # Another process is delivering it; its result will be logged as a
            # change, and in any case look again later.
            self._schedule(message_id, self.clock() + self.settings.busy_retry)
            return None
        try:
            stored = await self.store.load(message_id)
            state = stored.state
            if state.done:
                # A crash came between recording the last result and removing
                # the message: finish the removal.
                await self.store.update(message_id, lambda s: None if s.done else s)
            elif state.held:
                pass
            elif state.next_attempt > self.clock():
                self._schedule(message_id, state.next_attempt)
            else:
                delivery = Delivery(
                    self,
                    stored,
                    lease,
                    anyio.current_time() + self.settings.lease_duration,
                )
                self._active[message_id] = delivery
                return delivery
        except (MessageNotFoundError, CorruptMessageError):
            pass
        except OSError:
            logger.exception("cannot read %s; trying it again later", message_id)
            await self._park(message_id, lease, 1)
            return None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.store.release(lease)
            raise
        await self.store.release(lease)
        return None

    async def _finish(self, delivery: Delivery, *, park_after: int | None = None) -> None:
        """End the delivery; with ``park_after`` (failed attempts), park it."""
        if delivery._finished:
            return
        await delivery._close()
        if self._active.get(delivery.id) is delivery:
            del self._active[delivery.id]
        if park_after is None:
            await self.store.release(delivery._lease)
        else:
            await self._park(delivery.id, delivery._lease, park_after)

    async def _record(
        self, delivery: Delivery, results: Mapping[int, RecipientResult]
    ) -> MessageState | None:
        stored = delivery._stored
        now = self.clock()
        new_state, notices = apply_results(
            envelope=stored.envelope,
            state=stored.state,
            results=results,
            now=now,
            arrival=stored.arrival,
            settings=self.settings,
            spread=self.random(),
        )

        def merge(current: MessageState) -> MessageState | None:
            # Recipients change only under the lease, which is ours; an
            # operator may have held the message meanwhile.
            if new_state.done:
                return None
            return attrs.evolve(new_state, held=current.held)

        final: MessageState | None = None
        saved = False
        try:
            with anyio.CancelScope(shield=True):
                # Notifications first: a crash before the state is saved sends
                # one twice, never zero times.
                for notice in notices:
                    await self._send_notice(stored, notice, now)
                final = await self.store.update(stored.id, merge)
            saved = True
        except MessageNotFoundError:
            logger.info("message %s was removed during its delivery", stored.id)
            saved = True
        except CorruptMessageError as exc:
            logger.warning("message %s was quarantined during its delivery: %s", stored.id, exc)
            saved = True
        finally:
            with anyio.CancelScope(shield=True):
                # If the store failed (a full disk), the message keeps the
                # state it had and is parked: tried again when this attempt's
                # retry would have been, not at once, by this process.
                await self._finish(delivery, park_after=None if saved else delivery.attempt)
        if final is not None and not final.held:
            self._schedule(stored.id, final.next_attempt)
        return final

    async def _send_notice(self, stored: StoredMessage, notice: Notice, now: float) -> None:
        envelope = stored.envelope
        full = (
            notice.kind is Notify.FAILURE
            and envelope.params.ret is not Ret.HDRS
            and stored.size <= self.settings.return_limit
        )
        try:
            original = await self._read_original(stored.id, full)
        except (MessageNotFoundError, CorruptMessageError) as exc:
            logger.warning("cannot return the content of %s: %s", stored.id, exc)
            original, full = b"", False
        schedule = self.settings.schedule
        try:
            report_envelope, content = build_report(
                kind=notice.kind,
                envelope=envelope,
                entries=notice.entries,
                arrival=stored.arrival,
                now=now,
                hostname=self.settings.hostname,
                original=original,
                full=full,
                will_retry_until=schedule.expires(stored.arrival),
            )
        except Exception:
            # A report that cannot be made (a bug, or input the email package
            # refuses) must not keep the results from being saved: the
            # message would be delivered again to the recipients that
            # already have it, at every retry, and never expire.
            logger.exception(
                "cannot make the %s notification for %s; it is not sent",
                notice.kind.value.lower(),
                stored.id,
            )
            return
        # Not held to max_message_size: the report of a message near that
        # limit, returned whole, is over it, and would fail the same way on
        # every attempt.  Its size is bounded by return_limit instead.
        report_id = await self._enqueue(report_envelope, content, None)
        logger.info("%s notification %s for %s", notice.kind.value.lower(), report_id, stored.id)

    async def _read_original(self, message_id: str, full: bool) -> bytes:
        limit = self.settings.return_limit if full else MAX_RETURNED_HEADERS
        data = bytearray()
        stream = self.store.body(message_id)
        try:
            async for chunk in stream:
                data += chunk
                if len(data) > limit or (not full and b"\n\r\n" in data):
                    break
        finally:
            await stream.aclose()
        return bytes(data) if full else header_block(bytes(data[:limit]))

    # -- running workers -------------------------------------------------------

    async def serve(
        self,
        handler: Handler,
        *,
        workers: int = 1,
    ) -> None:
        """Run ``workers`` delivery workers until cancelled.

        Each takes the next due delivery and awaits ``handler(delivery)``,
        which returns a result per recipient (``smtp_client``'s results,
        converted).  A handler that raises, or takes longer than
        ``settings.lease_duration``, counts as a transient failure of every
        pending recipient; on cancellation the message is given back.  A
        storage error (a full disk) while leasing or saving a result is
        logged with the message id and the workers go on; the message stays
        queued and is tried again later.  One while polling the spool for
        other processes' changes is logged, and the next poll tries again.
        """
        if workers < 1:
            raise ValueError("at least one worker")
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(self._worker, handler)

    async def _worker(self, handler: Handler) -> None:
        while True:
            delivery = await self.next_delivery()
            await self._attempt(delivery, handler)

    async def _attempt(
        self,
        delivery: Delivery,
        handler: Handler,
    ) -> None:
        failure: Reply | None = None
        results: Mapping[Mailbox, RecipientResult] = {}
        try:
            with anyio.fail_after(max(0.0, delivery.deadline - anyio.current_time())):
                results = await handler(delivery)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await delivery.release()
            raise
        except TimeoutError:
            logger.warning("delivery of %s timed out", delivery.id)
            failure = ATTEMPT_TIMED_OUT
        except Exception:
            logger.exception("delivery handler failed for %s", delivery.id)
            failure = HANDLER_FAILED
        if failure is not None:
            results = {r.mailbox: RecipientResult.transient(failure) for r in delivery.recipients}
        try:
            await self._save(delivery, results)
        except Exception:
            # Results that are not a mapping of pending recipients to
            # RecipientResult (ValueError, TypeError), or another failure of
            # record(): the attempt counts as the handler's failure.
            logger.exception("delivery handler gave bad results for %s", delivery.id)
            await self._save(
                delivery,
                {r.mailbox: RecipientResult.transient(HANDLER_FAILED) for r in delivery.recipients},
            )

    async def _save(self, delivery: Delivery, results: Mapping[Mailbox, RecipientResult]) -> None:
        # A storage error must not end the worker, and with it serve() and
        # every other worker: the message is still queued (its lease ended,
        # its retry is scheduled), so log it and carry on.
        try:
            await delivery.record(results)
        except LeaseLostError:
            logger.warning("lease on %s lost before its result was saved", delivery.id)
        except (OSError, QueueError):
            logger.exception(
                "cannot save the result of delivering %s; it stays queued and is tried again",
                delivery.id,
            )

    # -- operations ------------------------------------------------------------

    async def show(self, message_id: str) -> MessageInfo:
        """One message (``smtp-mta queue show``).

        Raises :class:`MessageNotFoundError`.
        """
        self._check_open()
        stored = await self.store.load(message_id)
        leased = message_id in self._active or await self.store.is_leased(message_id)
        return MessageInfo(
            stored.id,
            stored.envelope,
            stored.state,
            stored.arrival,
            stored.size,
            leased,
        )

    async def messages(self) -> AsyncIterator[MessageInfo]:
        """Every message, oldest first (``smtp-mta queue list``).

        Read one at a time, so listing a large queue takes little memory.
        Messages that leave the queue meanwhile are skipped; unreadable ones
        are quarantined (see :meth:`quarantined`) and skipped.
        """
        self._check_open()
        entries = sorted(await self.store.scan(), key=lambda e: (e.arrival, e.id))
        for entry in entries:
            try:
                info = await self.show(entry.id)
            except (MessageNotFoundError, CorruptMessageError):
                continue
            yield info

    async def retry(self, message_id: str) -> None:
        """Make a message due now (``postqueue -i``).  A held one stays held."""
        self._check_open()
        now = self.clock()
        # An operator's retry overrides a wait after a storage error.
        await self._unpark(message_id)
        state = await self.store.update(
            message_id,
            lambda s: attrs.evolve(s, next_attempt=min(now, s.next_attempt)),
        )
        if state is not None and not state.held:
            self._schedule(message_id, state.next_attempt)

    async def retry_all(self) -> int:
        """Make every message that is not held due now; return how many."""
        count = 0
        for entry in await self.store.scan():
            if entry.due is not None:
                try:
                    await self.retry(entry.id)
                except (MessageNotFoundError, CorruptMessageError):
                    continue
                count += 1
        return count

    async def hold(self, message_id: str) -> None:
        """Stop delivering a message until :meth:`release` (``postsuper -h``).

        An attempt already in progress finishes; no other starts.
        """
        self._check_open()
        await self.store.update(message_id, lambda s: attrs.evolve(s, held=True))
        self._unschedule(message_id)

    async def release(self, message_id: str) -> None:
        """Release a held message; it is due at once (``postsuper -H``)."""
        self._check_open()
        now = self.clock()
        await self.store.update(message_id, lambda s: attrs.evolve(s, held=False, next_attempt=now))
        self._schedule(message_id, now)

    async def delete(self, message_id: str) -> None:
        """Remove a message without notifying anybody (``postsuper -d``).

        An attempt in progress may still deliver it; its result is dropped.
        """
        self._check_open()
        await self.store.update(message_id, lambda s: None)
        self._unschedule(message_id)
        await self._unpark(message_id)

    async def statistics(self) -> QueueStatistics:
        """Counts over the whole store (every process's messages)."""
        self._check_open()
        entries = await self.store.scan()
        return QueueStatistics(
            messages=len(entries),
            held=sum(1 for e in entries if e.due is None),
            deferred=sum(1 for e in entries if e.attempted),
            size=sum(e.size for e in entries),
            oldest_arrival=min((e.arrival for e in entries), default=None),
        )

    async def quarantined(self) -> list[QuarantineEntry]:
        """Files the store set aside as unreadable, with the reasons."""
        self._check_open()
        return await self.store.quarantined()

    @property
    def active(self) -> int:
        """Deliveries in progress in this process."""
        return len(self._active)

    @property
    def scheduled(self) -> int:
        """Messages this queue knows of that wait for their next attempt."""
        return len(self._due)
