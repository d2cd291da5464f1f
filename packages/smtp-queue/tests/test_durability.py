"""The filesystem store's durability contract, watched at the system calls.

DESIGN.md: "``250`` after DATA means the message is durable: written and
fsynced by the queue (file and directory) before the reply leaves".  A
SIGKILL test cannot see a missing fsync (the page cache survives a killed
process), so these tests watch the calls themselves: each spy calls the real
function and notes what it did, in order.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import pytest
from support import envelope, make_queue, message

import smtp_queue._fs
import smtp_queue._fsformat

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = pytest.mark.anyio

#: (what, kind, inode): "sync" of a "file" or "dir"; "rename" of a file's
#: inode into a directory (kind is the directory's inode); "unlink" of a
#: path's inode from a directory.
Event = tuple[str, str | int, int]


def _inode(path: str | os.PathLike[str]) -> int:
    return os.stat(path).st_ino


def spy_on_disk(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """Wrap the calls durability rests on; each calls through, then records."""
    events: list[Event] = []
    real_fsync = os.fsync
    real_fdatasync = getattr(os, "fdatasync", None)
    real_rename, real_replace, real_unlink = os.rename, os.replace, os.unlink

    def synced(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("sync", "dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced(fd)

    def fdatasync(fd: int) -> None:
        assert real_fdatasync is not None
        real_fdatasync(fd)
        synced(fd)

    def moved(real: Callable[[str, str], None]) -> Callable[[str, str], None]:
        def move(src: str, dst: str) -> None:
            inode = _inode(src)
            real(src, dst)
            events.append(("rename", _inode(os.path.dirname(dst)), inode))

        return move

    def unlink(path: str) -> None:
        inode, directory = _inode(path), _inode(os.path.dirname(path))
        real_unlink(path)
        events.append(("unlink", directory, inode))

    monkeypatch.setattr(os, "fsync", fsync)
    if real_fdatasync is not None:
        monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(os, "rename", moved(real_rename))
    monkeypatch.setattr(os, "replace", moved(real_replace))
    monkeypatch.setattr(os, "unlink", unlink)
    return events


def check_renamed_durably(events: list[Event], directory: int) -> int:
    """The one rename into ``directory``: synced before, directory synced after.

    Returns the renamed file's inode.
    """
    (position,) = [i for i, e in enumerate(events) if e[0] == "rename" and e[1] == directory]
    inode = events[position][2]
    assert ("sync", "file", inode) in events[:position], "renamed before its data was synced"
    assert ("sync", "dir", directory) in events[position + 1 :], "rename not made durable"
    return inode


async def test_enqueue_syncs_file_then_renames_then_syncs_directory(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DESIGN.md durability contract (RFC 5321 6.1, "MUST NOT lose the
    message"): before enqueue returns, the file's data is synced, then it is
    renamed into msg/, then msg/ is synced.  Without the first sync a power
    loss can leave an empty or partial file under the final name; without the
    second, no file at all."""
    async with make_queue(spool) as queue:
        events = spy_on_disk(monkeypatch)
        message_id = await queue.enqueue(envelope(), message())
        returned = list(events)
        inode = check_renamed_durably(returned, _inode(spool / "msg"))
        assert inode == _inode(spool / "msg" / message_id)


async def test_state_update_syncs_file_then_renames_then_syncs_directory(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The design's state-change contract: a metadata update (here an
    operator's hold) is durable when it returns, by the same sequence into
    state/; removal makes the message's unlink durable before the state goes
    (else a power loss could resurrect a message without its state, which
    would be delivered again to recipients already done)."""
    async with make_queue(spool) as queue:
        message_id = await queue.enqueue(envelope(), message())
        events = spy_on_disk(monkeypatch)
        await queue.hold(message_id)
        returned = list(events)
        inode = check_renamed_durably(returned, _inode(spool / "state"))
        assert inode == _inode(spool / "state" / message_id)

        events.clear()
        msg_dir, state_dir = _inode(spool / "msg"), _inode(spool / "state")
        await queue.delete(message_id)
        kinds = [e for e in events if e[0] == "unlink" or e[1:2] == ("dir",)]
        msg_unlink = next(i for i, e in enumerate(kinds) if e[:2] == ("unlink", msg_dir))
        state_unlink = next(i for i, e in enumerate(kinds) if e[:2] == ("unlink", state_dir))
        assert ("sync", "dir", msg_dir) in kinds[msg_unlink:state_unlink], (
            "the state went before the message's removal was durable"
        )


async def test_enqueue_failing_directory_fsync_stores_nothing(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queue.enqueue: "If it raises, nothing was enqueued."  An fsync of msg/
    that fails (EIO) after the rename means the message is not durable, so the
    server answers 4xx and the client sends it again (RFC 5321 4.2.5): the
    renamed file must go, or the retry makes a duplicate.  A failing disk
    cannot be produced safely, so os.fsync fails once for that directory."""
    async with make_queue(spool) as queue:
        msg_dir = os.stat(spool / "msg")
        real_fsync = os.fsync
        failures = [OSError(errno.EIO, "Input/output error")]

        def flaky(fd: int) -> None:
            st = os.fstat(fd)
            if failures and (st.st_dev, st.st_ino) == (msg_dir.st_dev, msg_dir.st_ino):
                raise failures.pop()
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", flaky)
        with pytest.raises(OSError, match="Input/output"):
            await queue.enqueue(envelope(), message())
        assert failures == []
        assert os.listdir(spool / "msg") == []
        assert os.listdir(spool / "tmp") == []
        assert (await queue.statistics()).messages == 0
        assert await queue.try_next_delivery() is None
        # The disk works again: enqueueing works again.
        await queue.enqueue(envelope(), message())
    async with make_queue(spool) as queue:
        assert (await queue.statistics()).messages == 1


async def test_recovery_leaves_a_young_temporary_file_alone(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer creates its tmp/ file (O_EXCL) and only then locks it; another
    process's recovery running in between must not take the file away (the
    DESIGN.md scaling model: many instances share one spool).  The writer is
    held between the two steps while a second queue opens the spool."""
    created, proceed = threading.Event(), threading.Event()
    real_lock = smtp_queue._fsformat.lock_exclusive
    paused: list[int] = []

    def slow_lock(fd: int, *, wait: bool) -> bool:
        if not paused:
            paused.append(fd)
            created.set()
            assert proceed.wait(30)
        return real_lock(fd, wait=wait)

    ids: list[str] = []
    async with make_queue(spool) as first:
        monkeypatch.setattr(smtp_queue._fsformat, "lock_exclusive", slow_lock)

        async def enqueue() -> None:
            ids.append(await first.enqueue(envelope(), message()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(enqueue)
            try:
                assert await anyio.to_thread.run_sync(created.wait, 30)
                assert len(os.listdir(spool / "tmp")) == 1
                async with make_queue(spool) as second:
                    assert len(os.listdir(spool / "tmp")) == 1, "a live write was removed"
            finally:
                # The paused writer thread cannot be cancelled: let it go.
                proceed.set()
        assert len(ids) == 1
        async with make_queue(spool) as second:
            assert [e.id for e in await second.store.scan()] == ids
    assert os.listdir(spool / "tmp") == []


async def test_operator_probe_never_makes_a_worker_miss_its_lease(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``smtp-mta queue show`` (DESIGN.md) only looks: a worker that tries to
    lease the message at the very moment another process probes it still
    gets it, instead of putting it off for ``busy_retry`` (30 s).  The probe
    is held at the instant it has its lock on the message file, and let go
    only after the worker has begun its attempt."""
    probing, let_go = threading.Event(), threading.Event()
    real_probe = smtp_queue._fsformat.probe_lock

    def held_probe(fd: int) -> bool:
        leased = real_probe(fd)  # its lock, if any, lasts until fd is closed
        probing.set()
        assert let_go.wait(30)
        return leased

    monkeypatch.setattr(smtp_queue._fs, "probe_lock", held_probe)
    seen: list[bool] = []
    try:
        async with make_queue(spool) as daemon, make_queue(spool) as operator:
            message_id = await daemon.enqueue(envelope(), message())

            async def show() -> None:
                seen.append((await operator.show(message_id)).leased)

            async with anyio.create_task_group() as tg:
                tg.start_soon(show)
                assert await anyio.to_thread.run_sync(probing.wait, 30)
                timer = threading.Timer(0.1, let_go.set)
                timer.start()
                try:
                    with anyio.fail_after(30):
                        delivery = await daemon.try_next_delivery()
                finally:
                    timer.cancel()
                    let_go.set()
            assert seen == [False]
            assert delivery is not None
            assert delivery.id == message_id
            # And a real lease is still seen as one.
            assert (await operator.show(message_id)).leased
            await delivery.release()
    finally:
        let_go.set()
