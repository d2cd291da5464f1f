"""The message file format and the group commit of directory fsyncs."""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtp_queue._fsformat import (
    TRAILER_LENGTH,
    DirSync,
    LayoutError,
    new_message_id,
    preamble,
    read_layout,
    trailer,
)

if TYPE_CHECKING:
    from pathlib import Path


def framed(header: bytes, body: bytes) -> bytes:
    return preamble(len(header)) + header + b"\n" + body + trailer(len(body), zlib.crc32(body))


def layout_of(path: Path, data: bytes) -> object:
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_layout(fd)
    finally:
        os.close(fd)


@given(st.binary(max_size=200), st.binary(max_size=500))
def test_layout_reads_back_header_and_body(
    tmp_path_factory: pytest.TempPathFactory, header: bytes, body: bytes
) -> None:
    """Framing round trip: any header and body bytes, including ones that
    look like the trailer."""
    path = tmp_path_factory.mktemp("f") / "m"
    data = framed(header, body + trailer(3, 0))
    layout = layout_of(path, data)
    assert layout.header == header  # type: ignore[attr-defined]
    start = layout.body_offset  # type: ignore[attr-defined]
    assert data[start : start + layout.body_length] == body + trailer(3, 0)  # type: ignore[attr-defined]


@given(st.binary(max_size=100), st.binary(max_size=300), st.data())
def test_every_truncation_is_detected(
    tmp_path_factory: pytest.TempPathFactory,
    header: bytes,
    body: bytes,
    data: st.DataObject,
) -> None:
    """A file cut short anywhere (a crash mid-write) is never a message."""
    full = framed(header, body)
    cut = data.draw(st.integers(0, len(full) - 1))
    path = tmp_path_factory.mktemp("f") / "m"
    with pytest.raises(LayoutError):
        layout_of(path, full[:cut])


@given(st.binary(min_size=1, max_size=400))
def test_random_files_are_rejected_cleanly(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    """A foreign file: LayoutError, never another exception."""
    path = tmp_path_factory.mktemp("f") / "m"
    with contextlib.suppress(LayoutError):
        layout_of(path, data)


def test_huge_declared_header_is_rejected(tmp_path: Path) -> None:
    """A preamble claiming a gigantic header is not believed (bounded reads)."""
    with pytest.raises(LayoutError, match="too large"):
        layout_of(tmp_path / "m", b"SMTPQ/1 999999999\n" + b"x" * TRAILER_LENGTH)


def test_message_ids_sort_by_arrival_and_are_unique() -> None:
    """Ids need no coordination between processes and list in arrival order."""
    ids = [new_message_id(1_700_000_000 + i / 10) for i in range(1000)]
    assert len(set(ids)) == 1000
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)


def test_dirsync_batches_concurrent_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: callers that arrive during an fsync share the next one,
    and none returns before an fsync that started after its call."""
    started = [threading.Event(), threading.Event()]
    proceed = [threading.Event(), threading.Event()]
    calls: list[int] = []
    real_fsync = os.fsync

    def fake_fsync(fd: int) -> None:
        n = len(calls)
        calls.append(fd)
        if n < 2:
            started[n].set()
            assert proceed[n].wait(30)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fake_fsync)
    sync = DirSync(str(tmp_path), durable=True)
    returned: list[str] = []

    def caller(name: str) -> None:
        sync.sync()
        returned.append(name)

    first = threading.Thread(target=caller, args=("first",))
    first.start()
    assert started[0].wait(30)
    late = [threading.Thread(target=caller, args=(f"late{i}",)) for i in range(5)]
    for thread in late:
        thread.start()
    # The late callers wait for an fsync that starts after their call.
    proceed[0].set()
    first.join(30)
    assert returned == ["first"]
    assert started[1].wait(30)
    assert returned == ["first"]
    proceed[1].set()
    for thread in late:
        thread.join(30)
    assert sorted(returned) == ["first", "late0", "late1", "late2", "late3", "late4"]
    assert len(calls) == 2  # six callers, two fsyncs
    sync.close()


def test_dirsync_error_reaches_caller_and_next_caller_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync error (EIO) is raised to the caller; the next caller syncs anew."""
    real_fsync = os.fsync
    failures = [OSError(5, "Input/output error")]

    def flaky(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky)
    sync = DirSync(str(tmp_path), durable=True)
    with pytest.raises(OSError, match="Input/output"):
        sync.sync()
    sync.sync()
    sync.close()


def test_dirsync_failed_group_fsync_fails_every_caller_it_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The durability contract (DESIGN.md; issue 4): enqueue returns only once
    the directory is fsynced.  When the one fsync shared by a group of callers
    fails (EIO), every caller of that group gets the error, not only the one
    that ran it: on Linux a second fsync after a failed one may return 0 with
    the entries lost, so none of them may be acknowledged.  A failing disk
    cannot be produced safely here: ``os.fsync`` fails on its second call."""
    started = threading.Event()
    proceed = threading.Event()
    calls: list[int] = []
    real_fsync = os.fsync

    def fake_fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            started.set()
            assert proceed.wait(30)
            real_fsync(fd)
        elif len(calls) == 2:
            raise OSError(5, "Input/output error")
        else:
            real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fake_fsync)
    sync = DirSync(str(tmp_path), durable=True)
    outcomes: dict[str, str] = {}

    def caller(name: str) -> None:
        try:
            sync.sync()
        except OSError as exc:
            outcomes[name] = f"error {exc.errno}"
        else:
            outcomes[name] = "ok"

    first = threading.Thread(target=caller, args=("first",))
    first.start()
    assert started.wait(30)
    late = [threading.Thread(target=caller, args=(f"late{i}",)) for i in range(4)]
    for thread in late:
        thread.start()
    for _ in range(3000):  # every late caller waits for the next fsync
        if sync._requested == 5:
            break
        threading.Event().wait(0.01)
    assert sync._requested == 5
    proceed.set()
    for thread in [first, *late]:
        thread.join(30)
    assert outcomes == {"first": "ok", **{f"late{i}": "error 5" for i in range(4)}}
    assert len(calls) == 2  # the failed batch was not silently synced again
    sync.sync()  # a later caller syncs anew
    assert len(calls) == 3
    sync.close()
