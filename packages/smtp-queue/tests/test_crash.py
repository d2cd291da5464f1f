"""kill -9 at random moments: a real child process, many times.

The child (crash_child.py) enqueues and delivers without pause and logs what
it has been told is done.  After every SIGKILL the spool must show:

- every message file in ``msg/`` complete (framing, header, CRC), and every
  saved state readable: nothing half-written is ever visible;
- after reopening (the recovery a restart does): no partial file left in
  ``tmp/``, nothing quarantined, every acknowledged message still there
  unless its last results were being recorded, every body intact, no message
  stored twice;
- every recipient whose delivery was recorded still marked delivered, and
  never handed to a transport again;
- for every permanent failure that took effect (the state says failed, or
  the message is gone), a bounce to the sender is there or was delivered:
  a bounce is enqueued before the state is saved, and must survive a kill
  like any acknowledged message (each is checked for its content too).

``SMTP_QUEUE_CRASH_ROUNDS`` sets the number of kills per backend (default
30, about 15 s per backend here); set it to a few hundred for a long run.
"""

from __future__ import annotations

import email
import email.policy
import os
import random
import subprocess
import sys
import zlib
from pathlib import Path

import anyio
import attrs
import pytest

from smtp_queue import Envelope, FilesystemStore, Queue, RecipientStatus
from smtp_queue._codec import decode_header, decode_state
from smtp_queue._fsformat import ID_PATTERN, read_layout

sys.path.insert(0, str(Path(__file__).parent))
from crash_child import SETTINGS, body_for

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = int(os.environ.get("SMTP_QUEUE_CRASH_ROUNDS", "30"))

pytestmark = pytest.mark.anyio


@attrs.define
class Claims:
    """What the child said was done, over every round so far."""

    acked: dict[str, int] = attrs.field(factory=dict)
    finished: set[str] = attrs.field(factory=set)
    done: dict[tuple[str, str], int] = attrs.field(factory=dict)
    sent: list[tuple[int, str, str]] = attrs.field(factory=list)
    #: (message, sender) whose results about to be recorded owe a bounce.
    owes: set[tuple[str, str]] = attrs.field(factory=set)
    bad_bodies: list[str] = attrs.field(factory=list)

    @classmethod
    def read(cls, log: Path) -> Claims:
        claims = cls()
        if not log.exists():
            return claims
        data = log.read_bytes()
        # A line cut by the kill is not a claim.
        lines = data[: data.rfind(b"\n") + 1].decode().splitlines()
        for position, line in enumerate(lines):
            kind, *args = line.split(" ")
            if kind == "ACK":
                claims.acked[args[0]] = int(args[1])
            elif kind == "FINISH":
                claims.finished.add(args[0])
            elif kind == "DONE":
                claims.done.setdefault((args[0], args[1]), position)
            elif kind == "SEND":
                claims.sent.append((position, args[0], args[1]))
            elif kind == "OWES":
                claims.owes.add((args[0], args[1]))
            elif kind == "BADBODY":
                claims.bad_bodies.append(args[0])
        return claims


def _readies(log: Path) -> int:
    return log.read_bytes().count(b"READY\n") if log.exists() else 0


def check_files_as_left(spool: Path) -> None:
    """Before any recovery: everything visible in msg/ and state/ is whole."""
    if not (spool / "msg").exists():
        return  # killed before the spool was made
    for name in os.listdir(spool / "msg"):
        assert ID_PATTERN.fullmatch(name), f"stray file msg/{name}"
        fd = os.open(spool / "msg" / name, os.O_RDONLY)
        try:
            layout = read_layout(fd)
            body = os.pread(fd, layout.body_length, layout.body_offset)
        finally:
            os.close(fd)
        assert zlib.crc32(body) == layout.crc, f"msg/{name}: body damaged"
        _, _, envelope = decode_header(layout.header)
        state = spool / "state" / name
        if state.exists() and state.stat().st_size:
            decode_state(state.read_bytes(), len(envelope.recipients))


def is_bounce(envelope: Envelope) -> bool:
    # Originals go to b.example; only bounces go back to a sender at a.example.
    return envelope.sender is None and envelope.recipients[0].mailbox.domain == "a.example"


def check_bounce(message_id: str, envelope: Envelope, content: bytes) -> str:
    """A stored bounce is a whole report about its sender's message."""
    (recipient,) = envelope.recipients
    seq = int(recipient.mailbox.local_part.removeprefix("s"))
    report = email.message_from_bytes(content, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report", f"{message_id}: not a report"
    assert f"X-Seq: {seq}\r\n".encode() in content, f"{message_id}: about another message"
    return str(recipient.mailbox)


async def check_after_reopen(spool: Path, claims: Claims) -> int:
    """Reopen as a restart would, and hold the child to its claims."""
    # No writer is alive: every partial file may go at once, however young.
    async with Queue(FilesystemStore(spool, tmp_grace=0.0), SETTINGS) as queue:
        assert os.listdir(spool / "tmp") == [], "a partial write survived recovery"
        assert await queue.quarantined() == []
        present = {entry.id for entry in await queue.store.scan()}
        lost = [
            message_id
            for message_id in claims.acked
            if message_id not in present and message_id not in claims.finished
        ]
        assert lost == [], f"acknowledged messages lost: {lost}"
        seqs: list[int] = []
        bounced: set[str] = set()
        failed: set[str] = set()
        for message_id in sorted(present):
            info = await queue.show(message_id)
            data = bytearray()
            async for chunk in queue.store.body(message_id):
                data += chunk
            if is_bounce(info.envelope):
                bounced.add(check_bounce(message_id, info.envelope, bytes(data)))
            else:
                seq = int(data[7 : data.index(b"\r\n")])
                assert bytes(data) == body_for(seq), f"{message_id}: body changed"
                seqs.append(seq)
            for i, recipient in enumerate(info.envelope.recipients):
                if info.state.recipients[i].status is RecipientStatus.FAILED:
                    failed.add(message_id)
                if (message_id, str(recipient.mailbox)) in claims.done:
                    status = info.state.recipients[i].status
                    assert status is RecipientStatus.DELIVERED, (
                        f"{message_id} {recipient.mailbox}: was delivered, now {status}"
                    )
        assert len(seqs) == len(set(seqs)), "a message stored twice"
        # A bounce may be stored twice (a kill between enqueueing it and
        # saving the state that says it was sent), never zero times.
        delivered = {
            mailbox
            for _, message_id, mailbox in claims.sent
            if message_id in claims.finished or (message_id, mailbox) in claims.done
        }
        owed = {
            sender
            for message_id, sender in claims.owes
            if message_id not in present or message_id in failed
        }
        lost_bounces = sorted(owed - bounced - delivered)
        assert lost_bounces == [], f"bounces lost: {lost_bounces[:5]}"
        return len(present)


def check_never_sent_again(claims: Claims) -> None:
    """DESIGN.md: a recipient marked delivered is never sent again."""
    again = [
        (message_id, mailbox)
        for position, message_id, mailbox in claims.sent
        if claims.done.get((message_id, mailbox), position) < position
    ]
    assert again == [], f"sent again after being recorded delivered: {again[:5]}"


async def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, anyio_backend: str) -> None:
    """RFC 5321 6.1 ("the receiver-SMTP MUST NOT lose the message") and the
    DESIGN.md contract: kill -9 at any instant loses no acknowledged message
    and leaves none half-visible; delivery is at-least-once, and a recipient
    recorded delivered is never sent again."""
    spool, log = tmp_path / "spool", tmp_path / "claims.log"
    seed = int(os.environ.get("SMTP_QUEUE_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    progress = []
    for round_number in range(ROUNDS):
        stderr_path = tmp_path / f"stderr-{round_number}"
        readies = _readies(log)
        with stderr_path.open("wb") as stderr:
            process = await anyio.open_process(
                [
                    sys.executable,
                    str(CHILD),
                    str(spool),
                    str(log),
                    anyio_backend,
                    str(round_number),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            if rng.random() < 0.25:
                # Anywhere, including the child's own recovery at startup.
                await anyio.sleep(rng.uniform(0.0, 0.5))
            else:
                with anyio.fail_after(60):
                    while _readies(log) == readies:
                        assert process.returncode is None
                        await anyio.sleep(0.01)
                await anyio.sleep(rng.uniform(0.0, 0.4))
        finally:
            if process.returncode is None:
                process.kill()
            with anyio.CancelScope(shield=True):
                await process.wait()
        assert process.returncode == -9, (
            f"seed {seed}, round {round_number}: the child died by itself:\n"
            + stderr_path.read_text()
        )
        claims = Claims.read(log)
        assert claims.bad_bodies == [], f"seed {seed}: bodies read back wrong"
        check_files_as_left(spool)
        # Every third round, leave recovery to the child's next start.
        if round_number % 3 != 2 or round_number == ROUNDS - 1:
            progress.append(await check_after_reopen(spool, claims))
        check_never_sent_again(claims)
    claims = Claims.read(log)
    # The run did real work: messages acknowledged and deliveries recorded.
    assert len(claims.acked) > ROUNDS, f"seed {seed}: too little happened"
    assert claims.done
    assert claims.finished
    assert claims.owes, f"seed {seed}: no bounce was made"
