"""The process test_crash.py kills: it enqueues and delivers without pause.

Usage: ``python crash_child.py SPOOL LOG BACKEND ROUND``.  Everything it
claims is appended to LOG with one ``write`` per line, and only after the
claim holds:

- ``ACK <id> <seq>``: ``enqueue`` returned (a server would now say 250);
- ``SEND <id> <mailbox>``: about to hand the recipient to a transport;
- ``DONE <id> <mailbox>``: ``record`` returned with the recipient delivered;
- ``FINISH <id>``: the results about to be recorded end every recipient, so
  the message may be gone after this line;
- ``OWES <id> <sender>``: the results about to be recorded fail a recipient
  permanently, so once they take effect (the state says failed, or the
  message is gone) a bounce to ``<sender>`` must exist.

The "transport" is a decision by local part: ``ok*`` is delivered, ``tmp*``
fails transiently on the first attempt and is delivered after, ``bad*``
fails permanently (and causes a bounce to the sender, delivered as ``s*``).
"""

from __future__ import annotations

import os
import random
import sys
import zlib

import anyio

from smtp_message import Mailbox, Reply
from smtp_queue import (
    Envelope,
    FilesystemStore,
    Queue,
    QueueSettings,
    RecipientResult,
    RetrySchedule,
)

SETTINGS = QueueSettings(
    hostname="mx.example",
    schedule=RetrySchedule((0.05,), max_age=86400.0, jitter=0.0),
    delay_warning_after=None,
    poll_interval=0.05,
)
OK = Reply(250, "2.0.0", "ok")
LATER = Reply(451, "4.3.0", "later")
NEVER = Reply(550, "5.1.1", "no such user")


def body_for(seq: int) -> bytes:
    """The body of message ``seq``: its own size and content, checkable."""
    rng = random.Random(seq)
    # Mostly small; now and then one that takes several writes to store.
    size = rng.choice([0, 10, 1000, 10_000, 10_000, 50_000, 400_000])
    filler = bytes(rng.randrange(33, 127) for _ in range(min(size, 997)))
    lines = (filler + b"\r\n") * (size // 999 + 1)
    head = f"X-Seq: {seq}\r\nX-Sum: {zlib.crc32(lines[:size])}\r\nSubject: crash\r\n\r\n"
    return head.encode() + lines[:size]


def envelope_for(seq: int) -> Envelope:
    """Sender and recipients of message ``seq``."""
    sender = None if seq % 7 == 0 else Mailbox(f"s{seq}", "a.example")
    kinds = ["ok", "tmp", "bad"][: 1 + seq % 3]
    return Envelope(sender, [Mailbox(f"{k}{seq}", "b.example") for k in kinds])


class Log:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


#: The producer waits while this many messages are queued, so the spool (and
#: the parent's checks) stay small however long the run.
BACKLOG = 40


async def produce(queue: Queue, log: Log, first_seq: int) -> None:
    seq = first_seq
    while True:
        if queue.scheduled + queue.active > BACKLOG:
            await anyio.sleep(0.01)
            continue
        message_id = await queue.enqueue(envelope_for(seq), body_for(seq))
        log.write(f"ACK {message_id} {seq}")
        seq += 1


async def deliver(queue: Queue, log: Log) -> None:
    while True:
        delivery = await queue.next_delivery()
        data = bytearray()
        async for chunk in delivery.body():
            data += chunk
        if delivery.envelope.sender is not None and data.startswith(b"X-Seq: "):
            seq = int(data[7 : data.index(b"\r\n")])
            if bytes(data) != body_for(seq):
                log.write(f"BADBODY {delivery.id}")
        results = {}
        for recipient in delivery.recipients:
            mailbox = recipient.mailbox
            log.write(f"SEND {delivery.id} {mailbox}")
            kind = mailbox.local_part.rstrip("0123456789")
            if kind in ("ok", "s") or (kind == "tmp" and delivery.attempt > 1):
                results[mailbox] = RecipientResult.delivered(OK, "mx.b.example")
            elif kind == "tmp":
                results[mailbox] = RecipientResult.transient(LATER, "mx.b.example")
            else:
                results[mailbox] = RecipientResult.permanent(NEVER, "mx.b.example")
        if all(not r.reply.is_transient for r in results.values()):
            log.write(f"FINISH {delivery.id}")
        sender = delivery.envelope.sender
        if sender is not None and any(r.reply.is_permanent for r in results.values()):
            log.write(f"OWES {delivery.id} {sender}")
        await delivery.record(results)
        for mailbox, result in results.items():
            if result.reply.is_positive:
                log.write(f"DONE {delivery.id} {mailbox}")


async def main(spool: str, log_path: str, round_number: int) -> None:
    log = Log(log_path)
    queue = Queue(FilesystemStore(spool), SETTINGS)
    async with queue, anyio.create_task_group() as tg:
        log.write("READY")
        tg.start_soon(produce, queue, log, round_number * 1_000_000)
        for _ in range(3):
            tg.start_soon(deliver, queue, log)


if __name__ == "__main__":
    spool, log_path, backend, round_number = sys.argv[1:5]
    anyio.run(main, spool, log_path, int(round_number), backend=backend)
