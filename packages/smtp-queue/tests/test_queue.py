"""The queue's scheduler, leases, retries, expiry and operations."""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from support import (
    BUSY,
    OK,
    SETTINGS,
    START,
    FakeClock,
    FifoWatchdog,
    chunks,
    delivered,
    envelope,
    make_queue,
    message,
    permanent,
    read_body,
    results,
    transient,
)

import smtp_queue._fs
import smtp_queue._fsformat
from smtp_message import Mailbox
from smtp_queue import (
    Delivery,
    Envelope,
    LeaseLostError,
    MessageNotFoundError,
    MessageTooLargeError,
    Queue,
    QueueSettings,
    RecipientResult,
    RecipientStatus,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def test_enqueue_then_deliver_returns_envelope_and_body(spool: Path) -> None:
    """RFC 5321 4.5.4: what was accepted is what is delivered, byte for byte."""
    content = message("one")
    async with make_queue(spool) as queue:
        message_id = await queue.enqueue(envelope("alice@a.example", "bob@b.example"), content)
        delivery = await queue.next_delivery()
        assert delivery.id == message_id
        assert delivery.envelope.sender == Mailbox("alice", "a.example")
        assert [str(r.mailbox) for r in delivery.recipients] == ["bob@b.example"]
        assert delivery.attempt == 1
        assert delivery.size == len(content)
        assert await read_body(delivery) == content
        assert await delivery.record(results([("bob@b.example", delivered())])) is None
        # Every recipient delivered: the message has left the queue.
        assert (await queue.statistics()).messages == 0
        with pytest.raises(MessageNotFoundError):
            await queue.show(message_id)


async def test_a_fifo_in_a_message_files_place_does_not_stop_the_queue(spool: Path) -> None:
    """Hostile spool content at claim time: the queue quarantines the FIFO
    (never blocks on it, never raises to its worker) and delivers the rest."""
    async with make_queue(spool) as queue:
        bad = await queue.enqueue(envelope(), message("bad"))
        good = await queue.enqueue(envelope(), message("good"))
        path = spool / "msg" / bad
        path.unlink()
        os.mkfifo(path)
        with FifoWatchdog(path) as watchdog:
            delivery = await queue.next_delivery()
        assert not watchdog.reader_was_waiting
        assert delivery.id == good
        await delivery.record(results([("bob@b.example", delivered())]))
        assert await queue.try_next_delivery() is None
        (entry,) = await queue.quarantined()
        assert entry.source == f"msg/{bad}"
        assert "not a regular file" in entry.reason


async def test_enqueue_streams_chunks_and_bytes_alike(spool: Path) -> None:
    """DESIGN.md: the server streams DATA into the spool in chunks."""
    content = message("big", "x" * 999 + "\r\n") * 700
    async with make_queue(spool) as queue:
        first = await queue.enqueue(envelope(), chunks(content, 4096))
        second = await queue.enqueue(envelope(), content)
        for _ in range(2):
            delivery = await queue.next_delivery()
            assert delivery.id in (first, second)
            assert await read_body(delivery) == content
            await delivery.record(results([("bob@b.example", delivered())]))


async def test_enqueue_empty_body(spool: Path) -> None:
    """RFC 5321 4.1.1.4: an empty message is still a message."""
    async with make_queue(spool) as queue:
        await queue.enqueue(envelope(), b"")
        delivery = await queue.next_delivery()
        assert await read_body(delivery) == b""
        await delivery.record(results([("bob@b.example", delivered())]))


async def test_enqueue_failing_stream_stores_nothing(spool: Path) -> None:
    """DESIGN.md: 250 only after the body is durable; a client that disconnects
    mid-DATA leaves nothing behind (RFC 5321 4.1.1.4)."""

    async def broken() -> AsyncIterator[bytes]:
        yield b"Subject: half\r\n"
        raise ConnectionResetError("client went away")

    async with make_queue(spool) as queue:
        with pytest.raises(ConnectionResetError):
            await queue.enqueue(envelope(), broken())
        assert (await queue.statistics()).messages == 0
        assert os.listdir(spool / "tmp") == []
        assert await queue.try_next_delivery() is None


async def test_enqueue_cancelled_mid_body_stores_nothing(spool: Path) -> None:
    """A cancelled enqueue (the session ended) leaves no file and no message."""
    started = anyio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 300_000
        started.set()
        await anyio.sleep_forever()
        yield b""  # pragma: no cover

    async with make_queue(spool) as queue:
        async with anyio.create_task_group() as tg:
            tg.start_soon(queue.enqueue, envelope(), slow())
            await started.wait()
            tg.cancel_scope.cancel()
        assert (await queue.statistics()).messages == 0
        assert os.listdir(spool / "tmp") == []


async def test_enqueue_over_size_limit_raises_and_stores_nothing(spool: Path) -> None:
    """RFC 1870 6 / RFC 5321 4.5.3.1.10: too big is a 552, not a stored message."""
    settings = attrs.evolve(SETTINGS, max_message_size=10_000)
    async with make_queue(spool, settings=settings) as queue:
        with pytest.raises(MessageTooLargeError) as info:
            await queue.enqueue(envelope(), chunks(b"y" * 10_001, 100))
        assert info.value.limit == 10_000
        await queue.enqueue(envelope(), b"y" * 10_000)
        assert (await queue.statistics()).messages == 1
        assert os.listdir(spool / "tmp") == []


async def test_enqueue_envelope_over_the_header_limit_is_refused_not_lost(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN.md: a 250 means the message is stored and will be delivered.
    An envelope whose encoded header passes the store's header limit (16 MiB:
    some 52,000 long recipients) was acknowledged, then refused by the
    reader and quarantined at its first lease, never sent.  It is now
    MessageTooLargeError (552 5.3.4, RFC 5321 4.5.3.1.10) and nothing is
    stored.  The limit is lowered here (in the writer and the reader alike)
    so that the test needs 200 recipients, not 52,000."""
    from smtp_queue import _fs, _fsformat

    monkeypatch.setattr(_fsformat, "MAX_HEADER", 4096)
    monkeypatch.setattr(_fs, "MAX_HEADER", 4096)
    many = Envelope(
        Mailbox.parse("a@example.com"), [Mailbox(f"user{i}", "example.net") for i in range(200)]
    )
    async with make_queue(spool) as queue:
        with pytest.raises(MessageTooLargeError, match="envelope") as info:
            await queue.enqueue(many, b"Subject: x\r\n\r\nhi\r\n")
        assert info.value.limit == 4096
        assert (await queue.statistics()).messages == 0
        assert os.listdir(spool / "tmp") == []
        await queue.enqueue(envelope(), b"Subject: x\r\n\r\nhi\r\n")  # a small one fits
        delivery = await queue.try_next_delivery()
        assert delivery is not None
        assert await queue.quarantined() == []


async def test_next_delivery_wakes_on_new_mail(spool: Path) -> None:
    """The scheduler wakes at once for new mail (no polling delay needed)."""
    settings = attrs.evolve(SETTINGS, poll_interval=3600.0)
    got: list[Delivery] = []
    arrived = anyio.Event()
    async with make_queue(spool, settings=settings) as queue:
        async with anyio.create_task_group() as tg:

            async def worker() -> None:
                got.append(await queue.next_delivery())
                arrived.set()

            tg.start_soon(worker)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            with anyio.fail_after(30):
                message_id = await queue.enqueue(envelope(), message())
                await arrived.wait()
        assert got[0].id == message_id
        await got[0].release()


async def test_transient_failure_retries_on_schedule(spool: Path, clock: FakeClock) -> None:
    """RFC 5321 4.5.4.1: retry after the configured delay, not before."""
    async with make_queue(spool, clock) as queue:
        await queue.enqueue(envelope(), message())
        delivery = await queue.next_delivery()
        state = await delivery.record(results([("bob@b.example", transient())]))
        assert state is not None
        assert state.next_attempt == START + 60.0
        assert state.recipients[0].attempts == 1
        assert state.recipients[0].last_reply == BUSY
        assert await queue.try_next_delivery() is None
        clock.advance(59.0)
        assert await queue.try_next_delivery() is None
        clock.advance(1.0)
        second = await queue.try_next_delivery()
        assert second is not None
        assert second.attempt == 2
        state = await second.record(results([("bob@b.example", transient())]))
        assert state is not None
        # The last delay repeats.
        assert state.next_attempt == START + 60.0 + 600.0


async def test_only_pending_recipients_are_retried(spool: Path, clock: FakeClock) -> None:
    """A recipient marked delivered is never sent again (DESIGN.md contract)."""
    env = envelope("alice@a.example", "bob@b.example", "carol@c.example", "dan@d.example")
    async with make_queue(spool, clock) as queue:
        await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        await delivery.record(
            results(
                [
                    ("bob@b.example", delivered()),
                    ("carol@c.example", transient()),
                    ("dan@d.example", transient()),
                ]
            )
        )
        clock.advance(60)
        retry = await queue.next_delivery()
        assert [str(r.mailbox) for r in retry.recipients] == [
            "carol@c.example",
            "dan@d.example",
        ]
        with pytest.raises(ValueError, match="not pending"):
            await retry.record(results([("bob@b.example", delivered())]))
        with pytest.raises(ValueError, match="not a recipient"):
            await retry.record(results([("eve@e.example", delivered())]))
        state = await retry.record(
            results([("carol@c.example", delivered()), ("dan@d.example", transient())])
        )
        assert state is not None
        statuses = [r.status for r in state.recipients]
        assert statuses == [
            RecipientStatus.DELIVERED,
            RecipientStatus.DELIVERED,
            RecipientStatus.PENDING,
        ]
        assert [r.attempts for r in state.recipients] == [1, 2, 2]


async def test_missing_result_counts_as_transient(spool: Path) -> None:
    """A worker that forgets a recipient must not lose it: it is retried."""
    async with make_queue(spool) as queue:
        await queue.enqueue(envelope("a@a.example", "b@b.example", "c@c.example"), b"x")
        delivery = await queue.next_delivery()
        state = await delivery.record(results([("b@b.example", delivered())]))
        assert state is not None
        pending = state.recipients[1]
        assert pending.status is RecipientStatus.PENDING
        assert pending.last_reply is not None
        assert pending.last_reply.code == 451


async def test_expiry_fails_pending_recipients(spool: Path, clock: FakeClock) -> None:
    """RFC 5321 4.5.4.1: give up after the queue lifetime; one last attempt is
    made at the expiry time itself (the retry time is capped to it)."""
    async with make_queue(spool, clock) as queue:
        await queue.enqueue(envelope(None, "bob@b.example"), message())
        for _ in range(7):  # at 0, 60, 660, ... 3060 s; then capped to 3600
            delivery = await queue.next_delivery()
            state = await delivery.record(results([("bob@b.example", transient())]))
            assert state is not None
            clock.now = state.next_attempt
        assert clock.now == START + 3600.0  # capped at arrival + max_age
        delivery = await queue.next_delivery()
        assert await delivery.record(results([("bob@b.example", transient())])) is None
        assert (await queue.statistics()).messages == 0


async def test_delivery_survives_restart_with_timers_from_storage(
    spool: Path, clock: FakeClock
) -> None:
    """Reopening recomputes every timer from the spool (crash or restart)."""
    async with make_queue(spool, clock) as queue:
        deferred = await queue.enqueue(envelope(), message("deferred"))
        clock.advance(1)
        fresh = await queue.enqueue(envelope(), message("fresh"))
        delivery = await queue.next_delivery()
        assert delivery.id == deferred
        await delivery.record(results([("bob@b.example", transient())]))
    async with make_queue(spool, clock) as queue:
        assert queue.scheduled == 2
        delivery = await queue.next_delivery()
        assert delivery.id == fresh
        await delivery.record(results([("bob@b.example", delivered())]))
        assert await queue.try_next_delivery() is None
        clock.advance(60)
        delivery = await queue.next_delivery()
        assert delivery.id == deferred
        assert delivery.attempt == 2
        await delivery.release()


async def test_lease_is_exclusive_between_queues(spool: Path) -> None:
    """At-least-once, not at-most-twice-at-once: one worker per message."""
    async with make_queue(spool) as first, make_queue(spool) as second:
        message_id = await first.enqueue(envelope(), message())
        await second._rescan()
        delivery = await first.next_delivery()
        assert await second.try_next_delivery() is None
        info = await second.show(message_id)
        assert info.leased
        await delivery.release()
        await second._rescan()
        other = await second.try_next_delivery()
        assert other is not None
        assert other.id == message_id
        await other.release()


async def test_released_delivery_counts_no_attempt(spool: Path) -> None:
    """Giving a message back (shutdown) is not a delivery attempt."""
    async with make_queue(spool) as queue:
        await queue.enqueue(envelope(), message())
        delivery = await queue.next_delivery()
        await delivery.release()
        again = await queue.next_delivery()
        assert again.attempt == 1
        with pytest.raises(LeaseLostError):
            await delivery.record({})
        with pytest.raises(LeaseLostError):
            delivery.body()
        await again.release()


async def test_delivery_context_manager_failure_is_transient(spool: Path) -> None:
    """An exception in the worker's block is a transient failure (451 4.3.0)."""
    async with make_queue(spool) as queue:
        await queue.enqueue(envelope(), message())
        with pytest.raises(RuntimeError):
            async with await queue.next_delivery() as delivery:
                raise RuntimeError("network down")
        info = await queue.show(delivery.id)
        reply = info.state.recipients[0].last_reply
        assert reply is not None
        assert reply.code == 451
        assert reply.enhanced == "4.3.0"
        assert info.last_error == reply


async def test_serve_records_results_and_bounces(spool: Path) -> None:
    """serve() runs N workers over the queue until every message is handled;
    each permanent failure bounces once (RFC 3461 6.2), and the bounces, having
    a null sender, cause nothing further when they fail (RFC 5321 4.5.5)."""
    seen: list[str] = []

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        seen.append(delivery.id)
        out = {}
        for r in delivery.recipients:
            good = r.mailbox.local_part.startswith("ok")
            out[r.mailbox] = delivered() if good else permanent()
        return out

    async with make_queue(spool) as queue:
        for i in range(20):
            await queue.enqueue(
                envelope("alice@a.example", f"ok{i}@b.example", f"no{i}@b.example"),
                message(f"m{i}"),
            )
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(handler, workers=4))
            with anyio.fail_after(60):
                while True:
                    if not (await queue.statistics()).messages:
                        break
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        # 20 originals, then 20 bounces to alice, who is not "ok": each bounce
        # failed permanently and, having a null sender, caused nothing more.
        assert len(seen) == 40
        assert len(set(seen)) == 40
        assert await queue.quarantined() == []


async def test_a_body_cut_off_by_the_end_of_the_lease_fails_rather_than_ends(
    spool: Path,
) -> None:
    """DESIGN.md: a client never finishes sending a damaged message.  When
    the lease ends while the holder streams the body (here the queue
    closes; an expired lease ends it the same way), the next read raises
    LeaseLostError: an end that looked normal would let the transport send
    the end-of-data mark after part of the body.  A body read to its end
    before the lease ended stays complete."""
    body = b"Subject: big\r\n\r\n" + b"y" * 1_000_000
    queue = make_queue(spool)
    await queue.open()
    try:
        await queue.enqueue(envelope(), b"Subject: small\r\n\r\nhi\r\n")
        whole = await queue.next_delivery()
        small = [chunk async for chunk in whole.body()]
        await queue.enqueue(envelope(), body)
        cut = await queue.next_delivery()
        stream = cut.body().__aiter__()
        got = await stream.__anext__()
        assert len(got) < len(body)
    finally:
        await queue.aclose()
    received = bytearray(got)

    async def read_on() -> None:
        async for chunk in stream:
            received.extend(chunk)

    with pytest.raises(LeaseLostError):
        await read_on()
    assert len(received) < len(body)
    assert b"".join(small).endswith(b"hi\r\n")


async def test_serve_handler_exception_and_timeout_are_transient(spool: Path) -> None:
    """A crashing or hung delivery returns the message to the queue."""
    settings = attrs.evolve(SETTINGS, lease_duration=0.2)
    calls: list[str] = []

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        calls.append(delivery.id)
        if len(calls) == 1:
            raise OSError("boom")
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async with make_queue(spool, settings=settings) as queue:
        first = await queue.enqueue(envelope(), message("a"))
        second = await queue.enqueue(envelope(), message("b"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(handler, workers=1))
            with anyio.fail_after(30):
                while True:
                    if len(calls) >= 2 and not queue.active:
                        break
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        states = {first: await queue.show(first), second: await queue.show(second)}
        replies = {k: v.state.recipients[0].last_reply for k, v in states.items()}
        codes = sorted((r.enhanced or "") for r in replies.values() if r is not None)
        assert codes == ["4.3.0", "4.4.7"]
        assert all(not v.leased for v in states.values())


async def wait_for(condition: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(30):
        while True:
            if await condition():
                break
            await anyio.sleep(0.01)


@pytest.mark.parametrize("outcome", ["permanent", "transient"])
async def test_serve_survives_a_full_disk_when_saving_results(
    spool: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    outcome: str,
) -> None:
    """DESIGN.md: the queue is at-least-once and a failed lease comes back.
    When the disk is full (ENOSPC) the bounce of a permanent failure (RFC 3461
    6.2) or the state of a transient one cannot be written: the workers keep
    running, the message stays queued with its old state, and is tried again
    later on the retry schedule, not at once (the queue keeps its lease till
    then, so no other process sharing the spool tries it sooner).  A full disk cannot
    be produced safely here, so the one function that writes file contents
    fails while ``full`` is set."""
    full = [True]
    real_write_all = smtp_queue._fsformat.write_all

    def write_all(fd: int, data: bytes | memoryview) -> None:
        if full[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    calls: list[str] = []

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        calls.append(delivery.id)
        fail = permanent() if outcome == "permanent" else transient()
        return {r.mailbox: fail for r in delivery.recipients}

    caplog.set_level(logging.WARNING, "smtp_queue")
    async with make_queue(spool, clock) as queue:
        first = await queue.enqueue(envelope(), message("a"))
        monkeypatch.setattr(smtp_queue._fsformat, "write_all", write_all)

        async def attempted() -> bool:
            return len(calls) == 1 and not queue.active

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(handler, workers=2))
            await wait_for(attempted)
            info = await queue.show(first)
            assert info.state.attempts == 0
            assert info.leased  # parked until its retry time
            assert os.listdir(spool / "tmp") == []
            assert any(
                first in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
            )
            assert await queue.try_next_delivery() is None  # not in a hot loop

            # Room again: the workers are still there, new mail flows at once,
            # and the first message is tried again when its retry is due.
            full[0] = False
            second = await queue.enqueue(envelope(), message("b"))

            async def second_done() -> bool:
                return second in calls and not queue.active

            await wait_for(second_done)
            assert calls.count(first) == 1
            clock.advance(SETTINGS.schedule.delays[0])

            async def retried() -> bool:
                return calls.count(first) == 2 and not queue.active

            await wait_for(retried)
            if outcome == "permanent":

                async def bounced() -> bool:
                    return not (await queue.statistics()).messages

                await wait_for(bounced)  # the bounces too: a null sender
                assert len(calls) == 5  # first twice, second, two bounces
            else:
                assert (await queue.show(first)).state.attempts == 1
            tg.cancel_scope.cancel()


async def test_serve_survives_a_read_error_when_leasing(
    spool: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error (EIO) reading a message as it is leased does not stop the
    workers; the message is tried again later (at-least-once, DESIGN.md).  A
    failing disk cannot be produced safely: reading the file's layout fails
    once."""
    failures = [OSError(errno.EIO, "Input/output error")]
    real_read_layout = smtp_queue._fsformat.read_layout

    def read_layout(fd: int) -> object:
        if failures:
            raise failures.pop()
        return real_read_layout(fd)

    calls: list[str] = []

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        calls.append(delivery.id)
        return {r.mailbox: delivered() for r in delivery.recipients}

    async with make_queue(spool, clock) as queue:
        message_id = await queue.enqueue(envelope(), message())
        monkeypatch.setattr(smtp_queue._fs, "read_layout", read_layout)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(handler, workers=1))

            async def failed() -> bool:
                return not failures and not queue.active

            await wait_for(failed)
            assert calls == []
            assert (await queue.show(message_id)).leased  # parked until its retry
            clock.advance(SETTINGS.schedule.delays[0])

            async def delivered_once() -> bool:
                return not (await queue.statistics()).messages

            await wait_for(delivered_once)
            assert calls == [message_id]
            tg.cancel_scope.cancel()


async def test_serve_survives_a_read_error_when_polling_the_spool(
    spool: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An I/O error (EIO) while a waiting worker polls the spool for other
    processes' changes is logged and the workers go on: mail enqueued after
    it is still delivered.  A failing disk cannot be produced safely: the
    store's poll fails twice."""
    failures = [OSError(errno.EIO, "Input/output error") for _ in range(2)]
    real_poll = smtp_queue._fs.FilesystemStore.poll_changes

    async def poll_changes(self: smtp_queue._fs.FilesystemStore) -> list[str] | None:
        if failures:
            raise failures.pop()
        return await real_poll(self)

    calls: list[str] = []

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        calls.append(delivery.id)
        return {r.mailbox: delivered() for r in delivery.recipients}

    async with make_queue(spool) as queue:
        monkeypatch.setattr(smtp_queue._fs.FilesystemStore, "poll_changes", poll_changes)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(handler, workers=2))

            async def polls_failed() -> bool:
                return not failures

            await wait_for(polls_failed)
            message_id = await queue.enqueue(envelope(), message())

            async def delivered_once() -> bool:
                return not (await queue.statistics()).messages

            await wait_for(delivered_once)
            assert calls == [message_id]
            tg.cancel_scope.cancel()
    assert "cannot read the spool for changes" in caplog.text


async def test_unsaved_result_is_not_redelivered_before_its_retry_by_any_process(
    spool: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At-least-once (DESIGN.md), but not in a loop: when the result of an
    attempt cannot be saved (EIO on the state file) the stored state still says
    "due", and neither a rescan of this queue nor a second process on the same
    spool may deliver the message again before its retry time (RFC 5321
    4.5.4.1: retries are spaced).  A failing disk cannot be produced safely:
    the store's state update fails while ``failing`` is set."""
    failing = [True]
    real_update = smtp_queue._fs.FilesystemStore._update_sync

    def update(self: smtp_queue._fs.FilesystemStore, message_id: str, change: Any) -> Any:
        if failing[0]:
            raise OSError(errno.EIO, "Input/output error")
        return real_update(self, message_id, change)

    calls: list[str] = []

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        calls.append(delivery.id)
        return {r.mailbox: delivered() for r in delivery.recipients}

    settings = attrs.evolve(SETTINGS, rescan_interval=0.1)
    async with (
        make_queue(spool, clock, settings) as a,
        make_queue(spool, clock, settings) as b,
    ):
        message_id = await a.enqueue(envelope(), message())
        monkeypatch.setattr(smtp_queue._fs.FilesystemStore, "_update_sync", update)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: a.serve(handler, workers=2))
            tg.start_soon(lambda: b.serve(handler, workers=2))

            async def attempted() -> bool:
                return bool(calls) and not a.active and not b.active

            await wait_for(attempted)
            # Many polls and rescans of both queues, with the clock frozen.
            await anyio.sleep(1.0)
            assert calls == [message_id]
            assert (await a.show(message_id)).state.attempts == 0

            # The disk recovers; at the retry time the message goes again,
            # once, and this time its result is saved.
            failing[0] = False
            clock.advance(SETTINGS.schedule.delays[0])

            async def gone() -> bool:
                return not (await a.statistics()).messages

            await wait_for(gone)
            assert calls == [message_id, message_id]
            tg.cancel_scope.cancel()


async def test_bounce_of_a_message_near_the_size_limit_is_still_sent(spool: Path) -> None:
    """RFC 3464 / RFC 3461 6.2: the report of a failed message returns it whole
    (RET=FULL by default), so it is larger than the message.  It must not be
    held to max_message_size, or it fails on every attempt and the sender
    never hears."""
    settings = attrs.evolve(SETTINGS, max_message_size=3000)
    async with make_queue(spool, settings=settings) as queue:
        original = await queue.enqueue(envelope(), message(body="x" * 2000 + "\r\n"))
        delivery = await queue.next_delivery()
        assert delivery.id == original
        await delivery.record({r.mailbox: permanent() for r in delivery.recipients})
        bounce = await queue.next_delivery()
        assert bounce.id != original
        assert bounce.envelope.sender is None
        assert bounce.size > 3000
        await bounce.release()


async def test_handler_returning_no_mapping_is_a_transient_failure(
    spool: Path, clock: FakeClock
) -> None:
    """A handler that returns something other than a mapping of results (a
    bug in it) counts as a failed attempt of every pending recipient (451
    4.3.0, RFC 3463 X.3.0) and the workers go on."""
    calls: list[str] = []

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        calls.append(delivery.id)
        return None  # type: ignore[return-value]

    async with make_queue(spool, clock) as queue:
        first = await queue.enqueue(envelope(), message("a"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(handler))

            async def attempted() -> bool:
                return (await queue.show(first)).state.attempts == 1

            await wait_for(attempted)
            (r,) = (await queue.show(first)).state.recipients
            assert r.last_reply is not None
            assert (r.last_reply.code, r.last_reply.enhanced) == (451, "4.3.0")
            second = await queue.enqueue(envelope(), message("b"))

            async def still_serving() -> bool:
                return second in calls

            await wait_for(still_serving)
            tg.cancel_scope.cancel()


async def test_serve_cancelled_gives_message_back(spool: Path) -> None:
    """Shutdown mid-delivery: the lease is released, no attempt recorded."""
    started = anyio.Event()

    async def handler(delivery: Delivery) -> Mapping[Mailbox, RecipientResult]:
        started.set()
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async with make_queue(spool) as queue:
        message_id = await queue.enqueue(envelope(), message())
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: queue.serve(handler, workers=2))
            await started.wait()
            tg.cancel_scope.cancel()
        info = await queue.show(message_id)
        assert not info.leased
        assert info.state.attempts == 0
        delivery = await queue.try_next_delivery()
        assert delivery is not None
        assert delivery.attempt == 1
        await delivery.release()


async def test_hold_release_retry_delete(spool: Path, clock: FakeClock) -> None:
    """Operations of ``postsuper -h/-H/-d`` and ``postqueue -i``."""
    async with make_queue(spool, clock) as queue:
        held = await queue.enqueue(envelope(), message("held"))
        await queue.hold(held)
        assert await queue.try_next_delivery() is None
        info = await queue.show(held)
        assert info.held
        assert info.next_attempt is None
        stats = await queue.statistics()
        assert (stats.messages, stats.held) == (1, 1)
        await queue.retry(held)  # stays held
        assert await queue.try_next_delivery() is None
        await queue.release(held)
        delivery = await queue.next_delivery()
        await delivery.record(results([("bob@b.example", transient())]))
        assert await queue.try_next_delivery() is None
        await queue.retry(held)
        delivery = await queue.next_delivery()
        assert delivery.id == held
        await delivery.release()
        await queue.delete(held)
        assert (await queue.statistics()).messages == 0
        with pytest.raises(MessageNotFoundError):
            await queue.hold(held)
        with pytest.raises(MessageNotFoundError):
            await queue.show("not-an-id")


async def test_hold_during_delivery_keeps_message_held(spool: Path) -> None:
    """An operator's hold is not undone by the result of a running attempt."""
    async with make_queue(spool) as queue:
        message_id = await queue.enqueue(envelope(), message())
        delivery = await queue.next_delivery()
        await queue.hold(message_id)
        state = await delivery.record(results([("bob@b.example", transient())]))
        assert state is not None
        assert state.held
        assert await queue.try_next_delivery() is None


async def test_delete_during_delivery_drops_result(spool: Path) -> None:
    """postsuper -d on an active message: the running attempt's result is dropped."""
    async with make_queue(spool) as queue:
        message_id = await queue.enqueue(envelope(), message())
        delivery = await queue.next_delivery()
        await queue.delete(message_id)
        assert await delivery.record(results([("bob@b.example", transient())])) is None
        assert (await queue.statistics()).messages == 0
        assert os.listdir(spool / "state") == []


async def test_messages_lists_everything_oldest_first(spool: Path, clock: FakeClock) -> None:
    """``smtp-mta queue list``: id, age, size, sender, pending, next, last error."""
    async with make_queue(spool, clock) as queue:
        ids = []
        for i in range(3):
            ids.append(await queue.enqueue(envelope(f"s{i}@a.example"), message(f"{i}")))
            clock.advance(10)
        delivery = await queue.next_delivery()
        await delivery.record(results([("bob@b.example", transient())]))
        listed = [info async for info in queue.messages()]
        assert [i.id for i in listed] == ids
        assert [str(i.sender) for i in listed] == [f"s{i}@a.example" for i in range(3)]
        first = listed[0]
        assert first.age(clock.now) == 30.0
        assert first.last_error == BUSY
        assert first.next_attempt is not None
        assert first.next_attempt.timestamp() == clock.now + 60.0
        assert [str(r.mailbox) for r in first.pending] == ["bob@b.example"]
        stats = await queue.statistics()
        assert stats.messages == 3
        assert stats.deferred == 1
        assert stats.oldest_arrival == START
        assert stats.oldest_age(clock.now) == 30.0
        assert stats.size > sum(i.size for i in listed)


async def test_operations_from_another_queue_reach_the_scheduler(spool: Path) -> None:
    """A second process's release or retry is noticed within the poll interval."""
    async with make_queue(spool) as daemon, make_queue(spool) as operator:
        message_id = await daemon.enqueue(envelope(), message())
        await operator.hold(message_id)
        with anyio.fail_after(30):
            while daemon.scheduled:
                await daemon._maintain()
                await anyio.sleep(0.06)
        assert await daemon.try_next_delivery() is None
        await operator.release(message_id)
        with anyio.fail_after(30):
            delivery = await daemon.next_delivery()
        assert delivery.id == message_id
        await delivery.release()


async def test_queue_rejects_use_before_open(spool: Path) -> None:
    """The API says clearly when the queue is not open."""
    queue = make_queue(spool)
    with pytest.raises(RuntimeError, match="not open"):
        await queue.enqueue(envelope(), b"x")


async def test_settings_validation() -> None:
    """Settings reject nonsense at construction, naming the setting."""
    with pytest.raises(ValueError, match="lease_duration"):
        QueueSettings(lease_duration=0)
    with pytest.raises(ValueError, match="host name"):
        QueueSettings(hostname="bad host")
    with pytest.raises(ValueError, match="max_message_size"):
        QueueSettings(max_message_size=-1)


async def test_from_path_uses_a_filesystem_store(spool: Path) -> None:
    """Queue.from_path is the one-line way to a spool directory."""
    async with Queue.from_path(spool, SETTINGS) as queue:
        await queue.enqueue(envelope(), b"x")
        delivery = await queue.next_delivery()
        await delivery.record({Mailbox("bob", "b.example"): RecipientResult.delivered(OK)})
    assert (spool / "smtp-queue.json").exists()


OPERATOR = """
import json, sys
import anyio
from smtp_queue import Queue, QueueSettings

async def main(spool, leased, other):
    async with Queue.from_path(spool, QueueSettings(hostname="op.example")) as queue:
        seen = (await queue.show(leased)).leased
        await queue.hold(leased)
        await queue.delete(other)
        stats = await queue.statistics()
        print(json.dumps({"leased": seen, "messages": stats.messages}))

anyio.run(main, *sys.argv[1:4])
"""


async def test_operations_from_a_separate_process(spool: Path) -> None:
    """``smtp-mta queue hold/delete`` run as another process while this one
    delivers: it sees the lease, and its changes reach this scheduler."""
    async with make_queue(spool) as queue:
        leased_id = await queue.enqueue(envelope(), message("a"))
        delivery = await queue.next_delivery()
        assert delivery.id == leased_id
        other_id = await queue.enqueue(envelope(), message("b"))
        result = await anyio.run_process(
            [sys.executable, "-c", OPERATOR, str(spool), leased_id, other_id]
        )
        report = json.loads(result.stdout)
        assert report == {"leased": True, "messages": 1}
        # The running attempt finishes; the operator's hold is kept.
        state = await delivery.record(results([("bob@b.example", transient())]))
        assert state is not None
        assert state.held
        # The deletion reaches this process's scheduler through the change log.
        with anyio.fail_after(30):
            while True:
                await queue._maintain()
                if not queue.scheduled:
                    break
                await anyio.sleep(0.06)
        assert await queue.try_next_delivery() is None
        with pytest.raises(MessageNotFoundError):
            await queue.show(other_id)
