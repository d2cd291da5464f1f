"""The filesystem store: layout, recovery, quarantine, locks, streaming."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import attrs
import pytest
from support import START, FifoWatchdog, chunks, envelope, message

from smtp_queue import (
    CorruptMessageError,
    FilesystemStore,
    MessageNotFoundError,
    MessageState,
    SpoolError,
)
from smtp_queue import _fs as fs
from smtp_queue._fsformat import read_layout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from smtp_queue import Envelope

pytestmark = pytest.mark.anyio


async def opened(path: Path) -> FilesystemStore:
    store = FilesystemStore(path)
    await store.open()
    return store


async def add(store: FilesystemStore, data: bytes = b"", env: Envelope | None = None) -> str:
    return await store.add(
        env or envelope(), chunks(data or message()), arrival=START, max_size=None
    )


async def body(store: FilesystemStore, message_id: str) -> bytes:
    out = bytearray()
    stream = store.body(message_id)
    async for chunk in stream:
        out += chunk
    return bytes(out)


def quarantined_contents(paths: list[str]) -> list[str]:
    return sorted(
        p.read_text()
        for path in paths
        for p in Path(path).iterdir()
        if p.is_file() and p.name != "reason.json"
    )


async def test_open_creates_private_layout(spool: Path) -> None:
    """Mail is private: the spool and its files are owner-only."""
    store = await opened(spool)
    try:
        names = sorted(os.listdir(spool))
        assert names == [
            "changes",
            "msg",
            "quarantine",
            "smtp-queue.json",
            "state",
            "tmp",
        ]
        assert stat.S_IMODE(os.stat(spool).st_mode) == 0o700
        message_id = await add(store)
        assert stat.S_IMODE(os.stat(spool / "msg" / message_id).st_mode) == 0o600
        info = json.loads((spool / "smtp-queue.json").read_text())
        assert info == {"format": "smtp-queue spool", "version": 1}
    finally:
        await store.close()


async def test_open_refuses_a_foreign_directory(tmp_path: Path) -> None:
    """Pointing the queue at the wrong directory must not quarantine someone's
    files: a non-empty directory without the marker is refused."""
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SpoolError, match="not an smtp-queue spool"):
        await FilesystemStore(tmp_path).open()
    assert (tmp_path / "notes.txt").read_text() == "mine"


async def test_open_refuses_a_newer_format(spool: Path) -> None:
    """A spool written by a later format version is not misread."""
    store = await opened(spool)
    await store.close()
    (spool / "smtp-queue.json").write_text('{"format": "smtp-queue spool", "version": 2}')
    with pytest.raises(SpoolError, match="version 2"):
        await FilesystemStore(spool).open()


async def test_message_file_is_framed_and_checksummed(spool: Path) -> None:
    """The file holds header, body and a trailer with length and CRC."""
    store = await opened(spool)
    try:
        content = message("framed")
        message_id = await add(store, content)
        fd = os.open(spool / "msg" / message_id, os.O_RDONLY)
        try:
            layout = read_layout(fd)
        finally:
            os.close(fd)
        assert layout.body_length == len(content)
        assert os.stat(spool / "msg" / message_id).st_mtime_ns == int(START * 1e9)
        stored = await store.load(message_id)
        assert stored.arrival == START
        assert stored.state == MessageState.initial(1, START)
        assert await body(store, message_id) == content
    finally:
        await store.close()


async def test_partial_writes_are_removed_on_open(spool: Path) -> None:
    """A kill -9 mid-write leaves a file in tmp/: never a message, and gone on
    a later start or scan once it is older than ``tmp_grace`` (a younger one
    may belong to a writer that has not locked it yet).  A file a live writer
    holds (locked) is left alone at any age.  ``tmp_grace=0`` stands for "an
    hour later": a file's ctime cannot be set back."""
    store = await opened(spool)
    await store.close()
    dead = spool / "tmp" / ("a" * 28 + ".msg")
    dead.write_bytes(b"SMTPQ/1 10\n{partial")
    live = spool / "tmp" / ("b" * 28 + ".msg")
    live.write_bytes(b"SMTPQ/1 10\n{still bei")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        store = await opened(spool)
        assert dead.exists()  # young: perhaps not locked yet
        await store.close()
        store = FilesystemStore(spool, tmp_grace=0.0)
        await store.open()
        assert not dead.exists()
        assert live.exists()
        assert await store.scan() == []
        dead.write_bytes(b"SMTPQ/1 10\n{partial")  # a writer died while open
        assert await store.scan() == []
        assert not dead.exists()
        assert live.exists()
        assert await store.quarantined() == []
        await store.close()
    finally:
        os.close(fd)


async def test_orphan_state_is_removed_on_open(spool: Path) -> None:
    """A crash between removing a message and its state leaves the state."""
    store = await opened(spool)
    message_id = await add(store)
    await store.update(message_id, lambda s: attrs.evolve(s, attempts=3))
    os.unlink(spool / "msg" / message_id)
    await store.close()
    store = await opened(spool)
    try:
        assert os.listdir(spool / "state") == []
        assert await store.quarantined() == []
    finally:
        await store.close()


async def test_a_crash_while_quarantining_keeps_the_state_with_its_message(
    spool: Path,
) -> None:
    """A quarantine moves the message file first, then its state (a message
    without its state would look new and go to every recipient again).  A
    crash between the two left an orphan state, which recovery deleted: the
    record of who already has the message (RFC 5321 6.1: nothing accepted is
    lost, and a restored message must not be delivered twice) was gone.
    It now joins the message in the quarantine.  The crash is simulated by
    doing only the first of the two renames."""
    store = await opened(spool)
    message_id = await add(store)
    await store.update(message_id, lambda s: attrs.evolve(s, attempts=3))
    state = (spool / "state" / message_id).read_bytes()
    await store.close()
    folder = spool / "quarantine" / "000000000000-deadbeef"
    folder.mkdir()
    os.rename(spool / "msg" / message_id, folder / f"msg-{message_id}")
    store = await opened(spool)
    try:
        assert os.listdir(spool / "state") == []
        assert (folder / f"state-{message_id}").read_bytes() == state
        [entry] = await store.quarantined()
        assert entry.reason == "no readable reason (interrupted quarantine)"
    finally:
        await store.close()


async def test_a_tmp_file_replaced_after_the_listing_is_quarantined(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial write that becomes a FIFO between the tmp/ listing and its
    open is set aside as "not a regular file", and the open neither blocks
    on it nor fails.  The race is forced, not waited for: the listing
    function is wrapped to swap the real file for a real FIFO just after it
    returns (no timing could hit that window reliably)."""
    store = await opened(spool)
    await store.close()
    name = "d" * 28 + ".msg"
    path = spool / "tmp" / name
    path.write_bytes(b"SMTPQ/1 10\n{partial")
    listed = fs._scandir
    swapped: list[str] = []

    def scandir_then_swap(directory: str) -> list[os.DirEntry[str]]:
        entries = listed(directory)
        if not swapped and any(e.name == name for e in entries):
            swapped.append(name)
            path.unlink()
            os.mkfifo(path)
        return entries

    monkeypatch.setattr(fs, "_scandir", scandir_then_swap)
    # The FIFO is made just now, and a ctime cannot be set back: a negative
    # grace counts it as old (with 0 its ctime may tick past the clock).
    store = FilesystemStore(spool, tmp_grace=-5.0)
    with FifoWatchdog(path) as watchdog:
        await store.open()
    try:
        assert swapped
        assert not watchdog.reader_was_waiting
        assert not path.exists()
        (entry,) = await store.quarantined()
        assert entry.source == f"tmp/{name}"
        assert "not a regular file" in entry.reason
        (moved,) = _set_aside(entry.path)
        assert moved.is_fifo()
    finally:
        await store.close()


async def test_an_orphan_state_replaced_after_the_listing_is_quarantined(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An orphan state file (its message gone: a crash during removal) that
    becomes a FIFO between the state/ listing and its removal is quarantined,
    not opened for good, and the store still opens.  The race is forced by
    wrapping the listing, as above."""
    store = await opened(spool)
    message_id = await add(store)
    await store.update(message_id, lambda s: attrs.evolve(s, attempts=3))
    os.unlink(spool / "msg" / message_id)
    await store.close()
    path = spool / "state" / message_id
    listing = fs._listing
    swapped: list[str] = []

    def listing_then_swap(directory: str) -> Iterator[tuple[str, bool]]:
        yield from listing(directory)
        if not swapped and Path(directory) == spool / "state":
            swapped.append(directory)
            path.unlink()
            os.mkfifo(path)

    monkeypatch.setattr(fs, "_listing", listing_then_swap)
    store = FilesystemStore(spool)
    with FifoWatchdog(path) as watchdog:
        await store.open()
    try:
        assert swapped
        assert not path.exists()
        assert not watchdog.reader_was_waiting
        (entry,) = await store.quarantined()
        assert entry.source == f"state/{message_id}"
        assert "state: not a regular file" in entry.reason
        assert os.listdir(spool / "state") == []
        assert await store.scan() == []
    finally:
        await store.close()


async def test_a_foreign_file_with_the_longest_name_is_quarantined_too(spool: Path) -> None:
    """README: a foreign file is quarantined "and the queue carries on".  A
    name of 253 octets is legal, but with the quarantine's "msg-" prefix it
    passed NAME_MAX: the rename failed with ENAMETOOLONG and open() (so
    every restart) raised.  The moved file gets a shortened name; the
    original is kept in reason.json."""
    store = await opened(spool)
    await store.close()
    long_name = "x" * 253
    for sub in ("", "tmp", "msg", "state"):
        (spool / sub / long_name).write_text(f"{sub or 'root'} stranger")
    store = await opened(spool)
    try:
        entries = await store.quarantined()
        assert sorted(e.source for e in entries) == sorted(
            f"{sub}/{long_name}" if sub else long_name for sub in ("", "tmp", "msg", "state")
        )
        kept = quarantined_contents([e.path for e in entries])
        assert sorted(kept) == ["msg stranger", "root stranger", "state stranger", "tmp stranger"]
        assert await store.scan() == []
    finally:
        await store.close()


async def test_foreign_files_are_quarantined_never_dropped(spool: Path) -> None:
    """Issue: a foreign file is quarantined and reported, never silently dropped."""
    store = await opened(spool)
    await store.close()
    (spool / "README").write_text("root stranger")
    (spool / "msg" / "hello.txt").write_text("msg stranger")
    (spool / "msg" / ("c" * 28)).mkdir()
    (spool / "state" / "junk").write_text("state stranger")
    (spool / "tmp" / "editor.swp").write_text("tmp stranger")
    store = await opened(spool)
    try:
        entries = await store.quarantined()
        sources = sorted(e.source for e in entries)
        assert sources == sorted(
            [
                "README",
                "msg/hello.txt",
                "msg/" + "c" * 28,
                "state/junk",
                "tmp/editor.swp",
            ]
        )
        assert all(e.reason for e in entries)
        kept = quarantined_contents([e.path for e in entries])
        assert kept == [
            "msg stranger",
            "root stranger",
            "state stranger",
            "tmp stranger",
        ]
        assert await store.scan() == []
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: data[: len(data) // 2], "truncated|trailer"),
        (lambda data: b"GARBAGE" + data, "preamble"),
        (lambda data: data.replace(b'"v":1', b'"v":9'), "version"),
        (lambda data: data.replace(b'"arrival"', b'"arrivel"'), "arrival"),
        (lambda data: data[:-5] + b"XX\n\n\n", "trailer"),
        (lambda data: b"", "preamble"),
    ],
)
async def test_corrupt_message_is_quarantined_on_load(
    spool: Path, damage: object, reason: str
) -> None:
    """Bad input in the spool: quarantined with a reason, the queue goes on."""
    store = await opened(spool)
    try:
        good = await add(store)
        bad = await add(store)
        path = spool / "msg" / bad
        path.write_bytes(damage(path.read_bytes()))  # type: ignore[operator]
        with pytest.raises(CorruptMessageError, match=reason) as info:
            await store.load(bad)
        assert info.value.message_id == bad
        assert not path.exists()
        (entry,) = await store.quarantined()
        assert entry.source == f"msg/{bad}"
        assert [e.id for e in await store.scan()] == [good]
        await store.load(good)
    finally:
        await store.close()


async def test_damaged_body_fails_before_its_last_chunk(spool: Path) -> None:
    """A bit flip in the body is caught by the CRC before the end of the
    stream, so a client never finishes sending a damaged message."""
    store = await opened(spool)
    try:
        content = b"A" * 200_000
        message_id = await add(store, content)
        path = spool / "msg" / message_id
        data = bytearray(path.read_bytes())
        data[len(data) - 100] ^= 0x01
        path.write_bytes(bytes(data))
        received = bytearray()

        async def drain() -> None:
            async for chunk in store.body(message_id):
                received.extend(chunk)

        with pytest.raises(CorruptMessageError, match="CRC"):
            await drain()
        assert len(received) < len(content)
        assert [e.source for e in await store.quarantined()] == [f"msg/{message_id}"]
    finally:
        await store.close()


async def test_corrupt_state_quarantines_message_and_state(spool: Path) -> None:
    """A state that cannot be read makes the message undeliverable safely:
    both go to quarantine (which recipients were delivered is unknown)."""
    store = await opened(spool)
    try:
        message_id = await add(store)
        await store.update(message_id, lambda s: attrs.evolve(s, attempts=1))
        (spool / "state" / message_id).write_bytes(b'{"v":1,"rcpts":[],"next":NaN}')
        with pytest.raises(CorruptMessageError, match="bad state"):
            await store.load(message_id)
        (entry,) = await store.quarantined()
        assert sorted(entry.source.split(", ")) == [
            f"msg/{message_id}",
            f"state/{message_id}",
        ]
    finally:
        await store.close()


def _set_aside(directory: str) -> list[Path]:
    return [p for p in Path(directory).iterdir() if p.name != "reason.json"]


async def _use(store: FilesystemStore, operation: str, message_id: str) -> None:
    if operation == "lease":
        await store.lease(message_id)
    elif operation == "is_leased":
        await store.is_leased(message_id)
    elif operation == "load":
        await store.load(message_id)
    elif operation == "body":
        await body(store, message_id)
    else:
        await store.update(message_id, lambda s: attrs.evolve(s, attempts=1))


@pytest.mark.parametrize("operation", ["lease", "is_leased", "load", "body", "update"])
async def test_a_fifo_in_a_message_files_place_is_quarantined_not_waited_on(
    spool: Path, operation: str
) -> None:
    """Hostile spool content: a FIFO where a message file was (put there
    after a listing) is quarantined with a reason; no operation blocks on it."""
    store = await opened(spool)
    try:
        good = await add(store)
        bad = await add(store)
        path = spool / "msg" / bad
        path.unlink()
        os.mkfifo(path)
        with (
            FifoWatchdog(path) as watchdog,
            pytest.raises(CorruptMessageError, match="not a regular file") as info,
        ):
            await _use(store, operation, bad)
        assert not watchdog.reader_was_waiting
        assert info.value.message_id == bad
        assert not path.is_symlink()
        assert not path.exists()
        (entry,) = await store.quarantined()
        assert f"msg/{bad}" in entry.source.split(", ")
        assert [e.id for e in await store.scan()] == [good]
        await store.load(good)
    finally:
        await store.close()


@pytest.mark.parametrize("operation", ["load", "update"])
async def test_a_fifo_in_a_state_files_place_is_quarantined_not_waited_on(
    spool: Path, operation: str
) -> None:
    """The same for ``state/<id>``: read on every load, locked first on
    every update."""
    store = await opened(spool)
    try:
        message_id = await add(store)
        path = spool / "state" / message_id
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.mkfifo(path)
        with (
            FifoWatchdog(path) as watchdog,
            pytest.raises(CorruptMessageError, match="state: not a regular file"),
        ):
            await _use(store, operation, message_id)
        assert not watchdog.reader_was_waiting
        assert [e.source for e in await store.quarantined()] == [
            f"msg/{message_id}, state/{message_id}"
        ]
    finally:
        await store.close()


async def test_a_symlink_in_a_message_files_place_is_not_followed(
    spool: Path, tmp_path: Path
) -> None:
    """A symlink where a message file was is refused and quarantined: the
    store never reads, locks or moves the file it points to."""
    store = await opened(spool)
    try:
        message_id = await add(store)
        path = spool / "msg" / message_id
        outside = tmp_path / "elsewhere"
        outside.write_bytes(path.read_bytes())  # a valid message file
        path.unlink()
        path.symlink_to(outside)
        content = outside.read_bytes()
        with pytest.raises(CorruptMessageError, match="not a regular file"):
            await store.lease(message_id)
        with pytest.raises(MessageNotFoundError):
            await store.load(message_id)
        (entry,) = await store.quarantined()
        assert entry.source == f"msg/{message_id}"
        assert not path.is_symlink()
        assert not path.exists()
        # The link itself was set aside; the file it names is untouched and
        # no lease is held on it.
        (moved,) = _set_aside(entry.path)
        assert moved.is_symlink()
        assert outside.read_bytes() == content
        with outside.open("rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        await store.close()


async def test_a_fifo_as_the_change_log_does_not_block_an_enqueue(spool: Path) -> None:
    """The change log is written after every commit; a FIFO put in its place
    loses the notice (other processes rescan) and never blocks the commit."""
    store = await opened(spool)
    try:
        path = spool / "changes"
        path.unlink()
        os.mkfifo(path)
        with FifoWatchdog(path) as watchdog:
            message_id = await add(store)
        assert not watchdog.writer_was_waiting
        assert [e.id for e in await store.scan()] == [message_id]
    finally:
        await store.close()


async def test_a_fifo_as_the_spool_marker_is_refused(spool: Path) -> None:
    """Opening a spool whose marker is not a regular file fails at once."""
    store = await opened(spool)
    await store.close()
    marker = spool / "smtp-queue.json"
    marker.unlink()
    os.mkfifo(marker)
    with FifoWatchdog(marker) as watchdog, pytest.raises(SpoolError, match="not a regular"):
        await opened(spool)
    assert not watchdog.reader_was_waiting


async def test_leases_exclude_across_store_instances(spool: Path) -> None:
    """flock leases: one holder at a time, in one process or several."""
    first, second = await opened(spool), await opened(spool)
    try:
        message_id = await add(first)
        lease = await first.lease(message_id)
        assert lease is not None
        assert await second.lease(message_id) is None
        assert await first.lease(message_id) is None
        assert await second.is_leased(message_id)
        await first.release(lease)
        await first.release(lease)  # idempotent
        assert not await second.is_leased(message_id)
        other = await second.lease(message_id)
        assert other is not None
        await second.close()  # closing releases
        again = await first.lease(message_id)
        assert again is not None
        await first.release(again)
        with pytest.raises(MessageNotFoundError):
            await first.lease("0" * 28)
    finally:
        await first.close()
        await second.close()


async def test_concurrent_updates_from_two_stores_are_serialised(spool: Path) -> None:
    """Read-modify-write of the state never loses an update (the state lock)."""
    first, second = await opened(spool), await opened(spool)
    try:
        message_id = await add(first)

        def bump(state: MessageState) -> MessageState:
            return attrs.evolve(state, attempts=state.attempts + 1)

        async def hammer(store: FilesystemStore) -> None:
            for _ in range(40):
                await store.update(message_id, bump)

        async with anyio.create_task_group() as tg:
            for store in (first, second, first, second):
                tg.start_soon(hammer, store)
        assert (await first.load(message_id)).state.attempts == 160
    finally:
        await first.close()
        await second.close()


async def test_scan_hints_follow_state(spool: Path) -> None:
    """The scan schedules from stat() alone: mtime is the next attempt, the
    owner-execute bit means held; the JSON stays authoritative."""
    store = await opened(spool)
    try:
        message_id = await add(store)
        (entry,) = await store.scan()
        assert (entry.due, entry.attempted) == (START, False)
        await store.update(message_id, lambda s: attrs.evolve(s, next_attempt=START + 99))
        (entry,) = await store.scan()
        assert (entry.due, entry.attempted) == (START + 99, True)
        await store.update(message_id, lambda s: attrs.evolve(s, held=True))
        assert (await store.scan())[0].due is None
        assert await store.locate(message_id) == (await store.scan())[0]
        assert await store.locate("f" * 28) is None
        assert await store.locate("../../etc/passwd") is None
    finally:
        await store.close()


async def test_update_to_none_removes_message(spool: Path) -> None:
    """Removal is the message file first, then its state."""
    store = await opened(spool)
    try:
        message_id = await add(store)
        await store.update(message_id, lambda s: attrs.evolve(s, attempts=1))
        assert await store.update(message_id, lambda s: None) is None
        assert os.listdir(spool / "msg") == os.listdir(spool / "state") == []
        with pytest.raises(MessageNotFoundError):
            await store.update(message_id, lambda s: s)
        assert os.listdir(spool / "state") == []  # no placeholder left behind
        other = await add(store)
        with pytest.raises(ValueError, match="one entry per recipient"):
            await store.update(other, lambda s: attrs.evolve(s, recipients=()))
    finally:
        await store.close()


async def test_change_log_reports_other_instances_only(spool: Path) -> None:
    """Another process's change is announced; our own are not echoed back."""
    first, second = await opened(spool), await opened(spool)
    try:
        message_id = await add(first)
        assert await first.poll_changes() == []
        assert await second.poll_changes() == [message_id]
        assert await second.poll_changes() == []
        await second.update(message_id, lambda s: attrs.evolve(s, held=True))
        assert await first.poll_changes() == [message_id]
        # A rotated log is reported as "unknown": scan again.
        os.replace(spool / "changes", spool / "tmp" / "changes.00000000")
        (spool / "changes").write_bytes(b"")
        assert await first.poll_changes() is None
        assert await first.poll_changes() == []
    finally:
        await first.close()
        await second.close()


async def test_body_is_never_held_in_memory(spool: Path) -> None:
    """DESIGN.md: a 64 MB message costs the writer and the reader a bounded
    buffer, not its size (measured with tracemalloc, not a timer)."""
    size = 64 * 1024 * 1024

    async def generate() -> AsyncIterator[bytes]:
        block = b"x" * 998 + b"\r\n"
        for _ in range(size // len(block)):
            yield block

    store = await opened(spool)
    try:
        tracemalloc.start()
        try:
            message_id = await store.add(envelope(), generate(), arrival=START, max_size=None)
            _, peak_write = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            total = 0
            async for chunk in store.body(message_id):
                total += len(chunk)
            _, peak_read = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == size // 1000 * 1000
        assert peak_write < 4 * 1024 * 1024
        assert peak_read < 4 * 1024 * 1024
    finally:
        await store.close()


async def test_closed_store_refuses_work(spool: Path) -> None:
    """Using a store that is not open is a clear error, not a crash later."""
    store = FilesystemStore(spool)
    with pytest.raises(RuntimeError, match="not open"):
        await store.scan()
