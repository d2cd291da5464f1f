"""Helpers shared by the queue's tests."""

from __future__ import annotations

import email
import email.message
import email.policy
import os
import select
import threading
from typing import TYPE_CHECKING, Self

import attrs

from smtp_message import Mailbox, MailParams, RcptParams, Reply
from smtp_queue import (
    Envelope,
    FilesystemStore,
    Queue,
    QueueSettings,
    Recipient,
    RecipientResult,
    RetrySchedule,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable
    from pathlib import Path

    from smtp_queue import Delivery

START = 1_700_000_000.0

OK = Reply(250, "2.0.0", "Ok: queued as X")
BUSY = Reply(451, "4.7.1", "Greylisted, try again later")
UNKNOWN = Reply(550, "5.1.1", "No such user here")


@attrs.define
class FakeClock:
    """Wall-clock time that moves only when a test says so."""

    now: float = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def mailbox(text: str) -> Mailbox:
    return Mailbox.parse(text)


def envelope(
    sender: str | None = "alice@a.example",
    *recipients: str | Recipient,
    params: MailParams | None = None,
) -> Envelope:
    rcpts = [r if isinstance(r, Recipient) else Recipient(mailbox(r)) for r in recipients]
    return Envelope(
        None if sender is None else mailbox(sender),
        rcpts or [Recipient(mailbox("bob@b.example"))],
        params or MailParams(),
    )


def recipient(text: str, **params: object) -> Recipient:
    return Recipient(mailbox(text), RcptParams(**params))  # type: ignore[arg-type]


def message(subject: str = "hello", body: str = "Hi there.\r\n") -> bytes:
    return (
        f"From: alice@a.example\r\nTo: bob@b.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@a.example>\r\n\r\n{body}"
    ).encode()


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


SETTINGS = QueueSettings(
    hostname="mx.example",
    schedule=RetrySchedule((60.0, 600.0), max_age=3600.0, jitter=0.0),
    delay_warning_after=1800.0,
    poll_interval=0.05,
)


def make_queue(
    path: Path,
    clock: FakeClock | None = None,
    settings: QueueSettings = SETTINGS,
    *,
    durable: bool = True,
) -> Queue:
    return Queue(
        FilesystemStore(path, durable=durable),
        settings,
        clock=clock or FakeClock(),
        random=lambda: 0.5,
    )


async def read_body(delivery: Delivery) -> bytes:
    data = bytearray()
    async for chunk in delivery.body():
        data += chunk
    return bytes(data)


def results(
    outcomes: Iterable[tuple[str, RecipientResult]],
) -> dict[Mailbox, RecipientResult]:
    return {mailbox(address): result for address, result in outcomes}


def delivered(host: str = "mx.b.example") -> RecipientResult:
    return RecipientResult.delivered(OK, host)


def transient(host: str = "mx.b.example") -> RecipientResult:
    return RecipientResult.transient(BUSY, host)


def permanent(host: str = "mx.b.example") -> RecipientResult:
    return RecipientResult.permanent(UNKNOWN, host)


def parse(content: bytes) -> email.message.EmailMessage:
    parsed = email.message_from_bytes(content, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


class FifoWatchdog:
    """Unblocks whoever is stuck opening the FIFO at ``path``, and says so.

    Opening a FIFO waits for the other end: a store that did that would
    hang its worker thread forever.  If a reader or a writer is still
    waiting after ``patience`` seconds, this opens the other end (which
    lets it go, so the test ends and fails instead of hanging), again
    every second.  Cancelled at once when the store returns, so a passing
    test never waits for it.
    """

    def __init__(self, path: Path, patience: float = 10.0) -> None:
        self.path = path
        self.patience = patience
        self.reader_was_waiting = False
        self.writer_was_waiting = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        wait = self.patience
        while not self._stop.wait(wait):
            wait = 1.0
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO: no reader
            except OSError:
                pass
            else:
                self.reader_was_waiting = True
                os.close(fd)
            # A reader that opens without blocking; a writer sees its end
            # open and goes on (what it writes is discarded with the FIFO).
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                # What a writer let go writes comes within the second.
                if select.select([fd], [], [], 1.0)[0] and os.read(fd, 65536):
                    self.writer_was_waiting = True
            finally:
                os.close(fd)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
