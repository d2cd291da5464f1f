"""A model of the queue, checked step by step against the real one.

Hypothesis drives enqueue / lease / complete / release / hold / clock /
crash-and-reopen in any order; after every step the spool must hold exactly
the messages the model holds, every recipient where the model says (delivered,
failed, pending), nothing lost, nothing duplicated, and the scheduler must
hand out exactly the messages that are due.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, ClassVar

import anyio.from_thread
import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support import FakeClock, delivered, permanent, transient

from smtp_message import Mailbox
from smtp_queue import (
    Envelope,
    FilesystemStore,
    Queue,
    QueueSettings,
    RecipientStatus,
    RetrySchedule,
)

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from smtp_queue import Delivery, RecipientResult

SETTINGS = QueueSettings(
    hostname="mx.example",
    schedule=RetrySchedule((10.0, 100.0), max_age=300.0, jitter=0.0),
    delay_warning_after=None,
)
OUTCOMES = {
    "delivered": delivered(),
    "transient": transient(),
    "permanent": permanent(),
}


@attrs.define
class Model:
    sender: Mailbox | None
    recipients: list[Mailbox]
    body: bytes
    arrival: float
    statuses: list[RecipientStatus]
    next_attempt: float
    attempts: int = 0
    held: bool = False

    def pending(self) -> list[int]:
        return [i for i, s in enumerate(self.statuses) if s is RecipientStatus.PENDING]


_ids = itertools.count()


def deterministic_id(arrival: float) -> str:
    # Real ids end in random bits; here they must not, so that Hypothesis can
    # replay a run (which message a rule picks depends on the ids' order).
    return f"{int(arrival * 1000):012x}{next(_ids):016x}"


class QueueMachine(RuleBasedStateMachine):
    portal: ClassVar[BlockingPortal]
    #: Whether the store fsyncs.  The long run skips it: fsyncs cost time and
    #: change no outcome a model can see (no power is lost here); the short
    #: durable run checks the same model through the fsyncing code paths.
    durable: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        global _ids
        _ids = itertools.count()
        self.directory = tempfile.mkdtemp(prefix="smtpq-model-")
        self.clock = FakeClock()
        self.model: dict[str, Model] = {}
        self.leased: dict[str, Delivery] = {}
        self.queue = self.open()

    def open(self) -> Queue:
        queue = Queue(
            FilesystemStore(self.directory, durable=self.durable),
            SETTINGS,
            clock=self.clock,
            random=lambda: 0.5,
        )
        self.call(queue.open)
        return queue

    def call(self, fn: Any, *args: Any) -> Any:
        async def bounded() -> Any:
            # A scheduler bug that spins would otherwise hang the test run.
            with anyio.fail_after(60):
                return await fn(*args)

        return self.portal.call(bounded)

    def teardown(self) -> None:
        self.call(self.queue.aclose)
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- rules -----------------------------------------------------------------

    @rule(
        recipients=st.integers(1, 3),
        null_sender=st.booleans(),
        body=st.binary(max_size=3000),
    )
    def enqueue(self, recipients: int, null_sender: bool, body: bytes) -> None:
        n = len(self.model)
        sender = None if null_sender else Mailbox(f"s{n}", "a.example")
        mailboxes = [Mailbox(f"r{n}x{i}", "b.example") for i in range(recipients)]
        message_id = self.call(self.queue.enqueue, Envelope(sender, mailboxes), body)
        assert message_id not in self.model
        self.model[message_id] = Model(
            sender,
            mailboxes,
            body,
            self.clock.now,
            [RecipientStatus.PENDING] * recipients,
            self.clock.now,
        )

    @rule()
    def lease(self) -> None:
        delivery = self._lease()
        if delivery is not None:
            self.leased[delivery.id] = delivery

    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        delivery = self._lease()
        if delivery is not None:
            self._complete(delivery, data)

    def _lease(self) -> Delivery | None:
        delivery: Delivery | None = self.call(self.queue.try_next_delivery)
        due = [
            message_id
            for message_id, m in self.model.items()
            if not m.held and message_id not in self.leased and m.next_attempt <= self.clock.now
        ]
        if delivery is None:
            assert due == [], "a due message was not handed out"
            return None
        assert delivery.id in due, "a message was handed out before it was due"
        model = self.model[delivery.id]
        assert [r.mailbox for r in delivery.recipients] == [
            model.recipients[i] for i in model.pending()
        ], "a recipient not pending was handed out again"
        assert self.call(_read, delivery) == model.body
        return delivery

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        message_id = data.draw(st.sampled_from(sorted(self.leased)))
        self._complete(self.leased.pop(message_id), data)

    def _complete(self, delivery: Delivery, data: st.DataObject) -> None:
        message_id = delivery.id
        model = self.model[message_id]
        results: dict[Mailbox, RecipientResult] = {}
        failed_now = False
        expired = self.clock.now >= model.arrival + SETTINGS.schedule.max_age
        for i in model.pending():
            outcome = data.draw(st.sampled_from(sorted(OUTCOMES)))
            results[model.recipients[i]] = OUTCOMES[outcome]
            if outcome == "delivered":
                model.statuses[i] = RecipientStatus.DELIVERED
            elif outcome == "permanent" or expired:
                model.statuses[i] = RecipientStatus.FAILED
                failed_now = True
        model.attempts += 1
        model.next_attempt = SETTINGS.schedule.next_attempt(
            now=self.clock.now, arrival=model.arrival, failures=model.attempts
        )
        before = set(self._stored_ids())
        self.call(delivery.record, results)
        if not model.pending():
            del self.model[message_id]
        new = set(self._stored_ids()) - before
        # RFC 3461 6.1: one failure report to a real sender; none for <>.
        expected = 1 if failed_now and model.sender is not None else 0
        assert len(new) == expected, f"expected {expected} reports, got {len(new)}"
        for report_id in new:
            info = self.call(self.queue.show, report_id)
            assert info.sender is None
            assert [r.mailbox for r in info.envelope.recipients] == [model.sender]
            self.model[report_id] = Model(
                None,
                [model.sender],  # type: ignore[list-item]
                self.call(_read_stored, self.queue, report_id),
                self.clock.now,
                [RecipientStatus.PENDING],
                self.clock.now,
            )

    @precondition(lambda self: self.leased)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        message_id = data.draw(st.sampled_from(sorted(self.leased)))
        self.call(self.leased.pop(message_id).release)

    @precondition(lambda self: self.model)
    @rule(data=st.data(), hold=st.booleans())
    def operator(self, data: st.DataObject, hold: bool) -> None:
        message_id = data.draw(st.sampled_from(sorted(self.model)))
        model = self.model[message_id]
        if hold:
            self.call(self.queue.hold, message_id)
            model.held = True
        else:
            self.call(self.queue.release, message_id)
            model.held = False
            model.next_attempt = self.clock.now

    @rule(seconds=st.sampled_from([0.0, 5.0, 10.0, 100.0, 200.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.leased or self.model)
    @rule()
    def crash_and_reopen(self) -> None:
        # What kill -9 does: descriptors (and so flock leases) closed, nothing
        # else written.  The real SIGKILL test is test_crash.py.
        store = self.queue.store
        assert isinstance(store, FilesystemStore)
        store._abandon()
        self.leased.clear()
        self.queue = self.open()

    # -- invariants ----------------------------------------------------------

    def _stored_ids(self) -> list[str]:
        return [e.id for e in self.call(self.queue.store.scan)]

    @invariant()
    def storage_matches_model(self) -> None:
        stored = self._stored_ids()
        assert len(stored) == len(set(stored)), "a message stored twice"
        assert sorted(stored) == sorted(self.model), "lost or unexpected messages"
        for message_id in stored:
            info = self.call(self.queue.show, message_id)
            model = self.model[message_id]
            assert [r.status for r in info.state.recipients] == model.statuses
            assert info.held == model.held
            assert info.leased == (message_id in self.leased)
        assert self.call(self.queue.quarantined) == []


async def _read(delivery: Delivery) -> bytes:
    data = bytearray()
    async for chunk in delivery.body():
        data += chunk
    return bytes(data)


async def _read_stored(queue: Queue, message_id: str) -> bytes:
    data = bytearray()
    async for chunk in queue.store.body(message_id):
        data += chunk
    return bytes(data)


class DurableQueueMachine(QueueMachine):
    durable = True


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_queue_state_machine(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No message lost or duplicated in storage; every recipient ends
    delivered, failed (and reported, RFC 3461 6.2) or pending; delivered ones
    are never handed out again; leases come back after a crash."""
    monkeypatch.setattr("smtp_queue._fs.new_message_id", deterministic_id)
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        QueueMachine.portal = portal
        run_state_machine_as_test(
            QueueMachine,
            settings=settings(max_examples=150, stateful_step_count=50, deadline=None),
        )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_queue_state_machine_durable(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same model with ``durable=True``, the default: the fsyncing paths
    (file, directory, group commit; DESIGN.md "250 after DATA means the
    message is durable") keep every invariant.  A short run: each step
    fsyncs, and what fsync adds (surviving power loss) no model can see; the
    order of the syncs is checked in test_durability.py."""
    monkeypatch.setattr("smtp_queue._fs.new_message_id", deterministic_id)
    with anyio.from_thread.start_blocking_portal(backend) as portal:
        DurableQueueMachine.portal = portal
        run_state_machine_as_test(
            DurableQueueMachine,
            settings=settings(max_examples=15, stateful_step_count=30, deadline=None),
        )
