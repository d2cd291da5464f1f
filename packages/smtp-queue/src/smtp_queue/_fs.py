"""The filesystem store: one directory, nothing else to run.

Layout of the spool directory::

    smtp-queue.json   marks the directory as a spool, with its format version
    tmp/              files being written, each flock-ed by its writer
    msg/<id>          a message: header, body, trailer; written once
    state/<id>        its state as JSON, replaced whole by rename; absent or
                      empty until the first change.  Its mtime is the next
                      attempt time and its owner-execute bit means "held":
                      hints that let a scan schedule 100,000 messages from
                      stat() alone, without reading them
    quarantine/       files that could not be used, with the reason
    changes           a log of ids other processes changed (hints only)

The durability argument is in ``docs/design/smtp-queue.md``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import stat
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import attrs

from ._codec import CodecError, decode_header, decode_state, encode_header, encode_state
from ._errors import (
    CorruptMessageError,
    MessageNotFoundError,
    MessageTooLargeError,
    SpoolError,
)
from ._fsbody import BodyReader
from ._fsformat import (
    ID_PATTERN,
    MAX_HEADER,
    DirSync,
    LayoutError,
    MessageLayout,
    MessageWriter,
    fsync_directory,
    lock_exclusive,
    lock_lease,
    new_message_id,
    open_spool_file,
    preamble,
    probe_lock,
    read_layout,
    replace_file,
    trailer,
)
from ._fslog import ChangeLog
from ._model import MessageState
from ._store import QuarantineEntry, ScanEntry, StoredMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Iterator

    from ._model import Envelope
    from ._store import Lease

__all__ = ["FilesystemStore"]

logger = logging.getLogger("smtp_queue")

_MARKER = "smtp-queue.json"
_FORMAT = "smtp-queue spool"
_VERSION = 1
_SUBDIRS = ("tmp", "msg", "state", "quarantine")
_CHANGES = "changes"
_ROOT_NAMES = frozenset({_MARKER, _CHANGES, *_SUBDIRS})
# What may be found in tmp/: partial message files, partial states, and the
# spool's own small files being replaced.
_TMP_NAME = re.compile(
    r"[0-9a-f]{28}\.msg|[0-9a-f]{28}\.[0-9a-f]{8}\.state"
    r"|(?:changes|marker|reason)\.[0-9a-f]{8}"
)
#: Body bytes gathered in memory before a write: a small message is written in
#: one go, a large one in pieces of about this size (bounded memory).
WRITE_BUFFER = 256 * 1024
_HELD_MODE = 0o700
_PLAIN_MODE = 0o600
#: A file in ``tmp/`` changed less than this long ago is never removed as a
#: dead writer's: its writer may have created it and not locked it yet.
TMP_GRACE = 3600.0


def _ns(timestamp: float) -> int:
    return round(timestamp * 1e9)


@attrs.define(eq=False)
class _FsLease:
    message_id: str
    fd: int


@attrs.define(eq=False)
class FilesystemStore:
    """The default :class:`~smtp_queue.Store`: a spool directory.

    Any number of processes may open the same directory: leases are ``flock``
    locks on the message files, state changes are serialised by a lock on the
    state file, so an operator's command runs while the MTA delivers.  The
    directory must be on a local filesystem with working ``flock`` and
    ``rename`` (not NFS).

    ``durable=False`` skips every fsync: for tests and throw-away spools only,
    since it voids the guarantee that an acknowledged message survives a crash.

    ``tmp_grace`` is how long (seconds) a partial file in ``tmp/`` is left
    alone after its last change even when no writer holds its lock: a writer
    creates a file and only then locks it, so a younger one may be live.
    Older, unlocked ones were left by a writer that died; they are removed
    when a store opens and at every :meth:`scan`.
    """

    directory: Path = attrs.field(converter=Path)
    durable: bool = True
    tmp_grace: float = TMP_GRACE
    _token: str = attrs.field(init=False, factory=lambda: secrets.token_hex(4))
    _syncs: dict[str, DirSync] = attrs.field(init=False, factory=dict)
    _leases: dict[int, _FsLease] = attrs.field(init=False, factory=dict)
    _changes: ChangeLog | None = attrs.field(init=False, default=None)
    _opened: bool = attrs.field(init=False, default=False)

    # -- paths -------------------------------------------------------------

    def _path(self, sub: str, name: str) -> str:
        return os.path.join(self.directory, sub, name)

    def _check_id(self, message_id: str) -> None:
        if not ID_PATTERN.fullmatch(message_id):
            raise MessageNotFoundError(message_id)

    def _check_open(self) -> None:
        if not self._opened:
            raise RuntimeError("the store is not open")

    # -- opening and recovery ------------------------------------------------

    async def open(self) -> None:
        """Create or check the spool, and clean up after a crash."""
        await anyio.to_thread.run_sync(self._open_sync)

    def _open_sync(self) -> None:
        root = self.directory
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        marker = root / _MARKER
        if marker.exists():
            self._check_marker(marker)
        else:
            strangers = sorted(set(os.listdir(root)) - _ROOT_NAMES)
            if strangers:
                raise SpoolError(
                    f"{root} is not an smtp-queue spool and not empty "
                    f"(it holds {', '.join(strangers[:5])})"
                )
        for sub in _SUBDIRS:
            (root / sub).mkdir(mode=0o700, exist_ok=True)
        if not marker.exists():
            content = json.dumps({"format": _FORMAT, "version": _VERSION}).encode()
            replace_file(
                self._path("tmp", f"marker.{secrets.token_hex(4)}"),
                str(marker),
                content + b"\n",
                durable=self.durable,
            )
        if self.durable:
            fsync_directory(str(root))
        for sub in ("msg", "state", "quarantine"):
            self._syncs[sub] = DirSync(self._path(sub, ""), durable=self.durable)
        self._changes = ChangeLog(
            os.path.join(self.directory, _CHANGES), self._path("tmp", ""), self._token
        )
        self._changes.open()
        self._opened = True
        self._recover()

    def _check_marker(self, marker: Path) -> None:
        try:
            fd = open_spool_file(str(marker))
            with open(fd, "rb") as f:
                info = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise SpoolError(f"unreadable spool marker {marker}: {exc}") from None
        if not isinstance(info, dict) or info.get("format") != _FORMAT:
            raise SpoolError(f"{marker} does not mark an smtp-queue spool")
        if info.get("version") != _VERSION:
            raise SpoolError(
                f"spool format version {info.get('version')!r} is not "
                f"{_VERSION}, the one this version of smtp-queue reads"
            )

    def _recover(self) -> None:
        root = self.directory
        for name in sorted(set(os.listdir(root)) - _ROOT_NAMES):
            self._quarantine([("", name)], "not part of a spool")
        self._clean_tmp()
        # Listings are streamed, not gathered: a large spool costs no memory
        # here.  Quarantining waits until a listing is finished.
        strangers = [
            name
            for name, regular in _listing(self._path("msg", ""))
            if not (regular and ID_PATTERN.fullmatch(name))
        ]
        for name in strangers:
            self._quarantine([("msg", name)], "not a message file name")
        orphans = []
        strangers = []
        for name, regular in _listing(self._path("state", "")):
            if not (regular and ID_PATTERN.fullmatch(name)):
                strangers.append(name)
            elif not os.path.exists(self._path("msg", name)):
                orphans.append(name)
        for name in strangers:
            self._quarantine([("state", name)], "not a state file name")
        for name in orphans:
            self._remove_orphan_state(name)

    def _clean_tmp(self) -> None:
        # The ctime, not the mtime: writers set the mtime to scheduling
        # hints (arrival, next attempt), while the ctime is when the file
        # last changed, which nobody can set.
        young = time.time() - self.tmp_grace
        for entry in _scandir(self._path("tmp", "")):
            path = entry.path
            if not (_TMP_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
                self._quarantine([("tmp", entry.name)], "not a temporary file name")
                continue
            try:
                if entry.stat(follow_symlinks=False).st_ctime > young:
                    continue
                fd = open_spool_file(path)
            except FileNotFoundError:
                continue
            except LayoutError:  # replaced since it was listed
                self._quarantine([("tmp", entry.name)], "not a regular file")
                continue
            try:
                # A live writer holds its lock; a dead one's partial file is
                # free, and was never acknowledged: it goes.
                if lock_exclusive(fd, wait=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    logger.info("removed a partial write: %s", path)
            finally:
                os.close(fd)

    def _remove_orphan_state(self, message_id: str) -> None:
        # A state whose message is gone: left by a crash during removal, or
        # during a quarantine, which moves the message file first.
        home = self._quarantined_without_state(message_id)
        if home is not None:
            # The state joins its message, so whoever restores the message
            # knows who already has it.  No lock: nobody can lease a message
            # that is in the quarantine.
            with contextlib.suppress(FileNotFoundError):
                os.rename(
                    self._path("state", message_id), os.path.join(home, f"state-{message_id}")
                )
                if self.durable:
                    fsync_directory(home)
                logger.warning("quarantined state/%s beside its message", message_id)
            return
        try:
            fd = self._lock_state_file(message_id)
        except CorruptMessageError:
            return  # replaced by something else since the listing: quarantined
        if fd is None:
            return  # removed, as _lock_state_file does for a state without message
        try:
            if not os.path.exists(self._path("msg", message_id)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path("state", message_id))
        finally:
            os.close(fd)

    def _quarantined_without_state(self, message_id: str) -> str | None:
        """The quarantine entry holding ``msg/<id>`` but not its state, if any."""
        for entry in _scandir(self._path("quarantine", "")):
            folder = entry.path
            if os.path.exists(os.path.join(folder, f"msg-{message_id}")) and not os.path.exists(
                os.path.join(folder, f"state-{message_id}")
            ):
                return folder
        return None

    async def close(self) -> None:
        """Release every lease and file this instance holds."""
        for lease in list(self._leases.values()):
            await self.release(lease)
        for sync in self._syncs.values():
            sync.close()
        self._syncs.clear()
        if self._changes is not None:
            self._changes.close()
        self._opened = False

    def _abandon(self) -> None:
        """Close every descriptor, writing nothing.

        What the kernel does for a killed process; for crash tests.
        """
        for lease in self._leases.values():
            os.close(lease.fd)
        self._leases.clear()
        for sync in self._syncs.values():
            sync.close()
        self._syncs.clear()
        if self._changes is not None:
            self._changes.close()
        self._opened = False

    # -- adding --------------------------------------------------------------

    async def add(
        self,
        envelope: Envelope,
        body: AsyncIterable[bytes],
        *,
        arrival: float,
        max_size: int | None,
    ) -> str:
        """Write a message durably; see :meth:`Store.add`."""
        self._check_open()
        message_id = new_message_id(arrival)
        header = encode_header(message_id, arrival, envelope)
        if len(header) > MAX_HEADER:
            # read_layout refuses such a header: stored, the message would
            # be quarantined at its first lease, accepted and never sent.
            raise MessageTooLargeError(MAX_HEADER, "envelope")
        buffer = bytearray(preamble(len(header)) + header + b"\n")
        writer: MessageWriter | None = None
        size = 0
        crc = 0
        try:
            async for chunk in body:
                size += len(chunk)
                if max_size is not None and size > max_size:
                    raise MessageTooLargeError(max_size)
                crc = zlib.crc32(chunk, crc)
                buffer += chunk
                if len(buffer) >= WRITE_BUFFER:
                    data = bytes(buffer)
                    buffer.clear()
                    if writer is None:
                        writer = await anyio.to_thread.run_sync(self._begin, message_id)
                    await anyio.to_thread.run_sync(writer.write, data)
            buffer += trailer(size, crc)
            data = bytes(buffer)
            del buffer
            # Once the body is complete, finish the commit even if cancelled:
            # a half-done commit would only be cleaned up later.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._commit, message_id, writer, data, arrival)
        except BaseException:
            if writer is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(writer.abort)
            raise
        return message_id

    def _begin(self, message_id: str) -> MessageWriter:
        return MessageWriter(self._path("tmp", f"{message_id}.msg"), self.durable)

    def _commit(
        self, message_id: str, writer: MessageWriter | None, data: bytes, arrival: float
    ) -> None:
        if writer is None:
            writer = self._begin(message_id)
        path = self._path("msg", message_id)
        try:
            writer.write(data)
            writer.finish(_ns(arrival))
            os.rename(writer.path, path)
        except BaseException:
            writer.abort()
            raise
        try:
            self._syncs["msg"].sync()
        except BaseException:
            # Not durable, so not acknowledged: the caller answers 4xx and the
            # client sends the message again, so take this copy back (best
            # effort) or it would be delivered twice.  It is still locked:
            # nobody has leased it.
            with contextlib.suppress(OSError):
                os.unlink(path)
                self._syncs["msg"].sync()
            raise
        finally:
            # Closing unlocks: until the rename is durable, nobody can lease it.
            writer.close()
        self._hint(message_id)

    # -- scanning ------------------------------------------------------------

    async def scan(self) -> list[ScanEntry]:
        """Every message, from directory listings and stat() alone."""
        self._check_open()
        return await anyio.to_thread.run_sync(self._scan_sync)

    def _scan_sync(self) -> list[ScanEntry]:
        # A partial file of a writer that died after this store opened is
        # old enough to go by a later scan (the scheduler rescans regularly).
        self._clean_tmp()
        # Only three numbers per state file are kept, and each is dropped as
        # its message is reached: the scan's own memory stays small.
        states: dict[str, tuple[int, int, int]] = {}
        with os.scandir(self._path("state", "")) as listing:
            for entry in listing:
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    states[entry.name] = (st.st_mtime_ns, st.st_size, st.st_mode)
        out = []
        strangers = []
        with os.scandir(self._path("msg", "")) as listing:
            for entry in listing:
                name = entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not (stat.S_ISREG(st.st_mode) and ID_PATTERN.fullmatch(name)):
                    strangers.append(name)
                    continue
                state = states.pop(name, None)
                out.append(_scan_entry(name, st.st_mtime_ns, st.st_size, state))
        for name in strangers:
            self._quarantine([("msg", name)], "not a message file")
        return out

    async def locate(self, message_id: str) -> ScanEntry | None:
        """One message's scan entry."""
        self._check_open()
        return await anyio.to_thread.run_sync(self._locate_sync, message_id)

    def _locate_sync(self, message_id: str) -> ScanEntry | None:
        if not ID_PATTERN.fullmatch(message_id):
            return None
        try:
            st = os.stat(self._path("msg", message_id))
        except FileNotFoundError:
            return None
        try:
            state_st = os.stat(self._path("state", message_id))
        except FileNotFoundError:
            return _scan_entry(message_id, st.st_mtime_ns, st.st_size, None)
        state = (state_st.st_mtime_ns, state_st.st_size, state_st.st_mode)
        return _scan_entry(message_id, st.st_mtime_ns, st.st_size, state)

    # -- the change log --------------------------------------------------------

    def _hint(self, message_id: str) -> None:
        if self._changes is not None:
            self._changes.record(message_id)

    async def poll_changes(self) -> list[str] | None:
        """Ids other processes changed since the last poll."""
        self._check_open()
        assert self._changes is not None
        return await anyio.to_thread.run_sync(self._changes.poll)

    # -- leases --------------------------------------------------------------

    async def lease(self, message_id: str) -> Lease | None:
        """Take the flock on the message file."""
        self._check_open()
        self._check_id(message_id)
        lease = await anyio.to_thread.run_sync(self._lease_sync, message_id)
        if lease is not None:
            self._leases[lease.fd] = lease
        return lease

    def _lease_sync(self, message_id: str) -> _FsLease | None:
        fd = self._open_message(message_id)
        try:
            if not lock_lease(fd):
                os.close(fd)
                return None
            if os.fstat(fd).st_nlink == 0:
                raise MessageNotFoundError(message_id)
        except BaseException:
            os.close(fd)
            raise
        return _FsLease(message_id, fd)

    async def release(self, lease: Lease) -> None:
        """Close the leased file, which drops its flock."""
        assert isinstance(lease, _FsLease)
        if self._leases.pop(lease.fd, None) is lease:
            os.close(lease.fd)
            lease.fd = -1
            if self._opened:
                await anyio.to_thread.run_sync(self._hint, lease.message_id)

    async def is_leased(self, message_id: str) -> bool:
        """Whether a lease (an exclusive flock) is held on the message file.

        Only looks (:func:`probe_lock`): a worker leasing the message at the
        same moment still gets it.
        """
        self._check_open()
        self._check_id(message_id)
        return await anyio.to_thread.run_sync(self._is_leased_sync, message_id)

    def _is_leased_sync(self, message_id: str) -> bool:
        fd = self._open_message(message_id)
        try:
            return probe_lock(fd)
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------

    async def load(self, message_id: str) -> StoredMessage:
        """Read the header and the state."""
        self._check_open()
        self._check_id(message_id)
        return await anyio.to_thread.run_sync(self._load_sync, message_id)

    def _load_sync(self, message_id: str) -> StoredMessage:
        arrival, envelope, layout = self._read_message(message_id)
        state = self._read_state(message_id, len(envelope.recipients), arrival)
        return StoredMessage(message_id, arrival, envelope, state, layout.body_length)

    def _open_message(self, message_id: str) -> int:
        """Open ``msg/<id>``; quarantined if it is not a regular file."""
        try:
            return open_spool_file(self._path("msg", message_id))
        except FileNotFoundError:
            raise MessageNotFoundError(message_id) from None
        except LayoutError as exc:
            raise self._corrupt(message_id, str(exc)) from None

    def _read_message(self, message_id: str) -> tuple[float, Envelope, MessageLayout]:
        fd = self._open_message(message_id)
        try:
            layout = read_layout(fd)
            stored_id, arrival, envelope = decode_header(layout.header)
            if stored_id != message_id:
                raise CodecError(f"the file holds message {stored_id!r}")
        except (LayoutError, CodecError) as exc:
            raise self._corrupt(message_id, str(exc)) from None
        finally:
            os.close(fd)
        return arrival, envelope, layout

    def _read_state(self, message_id: str, recipients: int, arrival: float) -> MessageState:
        try:
            with open(open_spool_file(self._path("state", message_id)), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        except LayoutError as exc:
            raise self._corrupt(message_id, f"state: {exc}") from None
        if not data:
            # No change was ever saved (an empty file is a lock placeholder).
            return MessageState.initial(recipients, arrival)
        try:
            return decode_state(data, recipients)
        except CodecError as exc:
            raise self._corrupt(message_id, f"bad state: {exc}") from None

    def body(self, message_id: str) -> BodyReader:
        """Stream the body, checking its length and CRC."""
        self._check_open()
        self._check_id(message_id)
        return BodyReader(
            self._path("msg", message_id),
            message_id,
            lambda reason: self._quarantine_message(message_id, reason),
        )

    # -- updating ------------------------------------------------------------

    async def update(
        self,
        message_id: str,
        change: Callable[[MessageState], MessageState | None],
    ) -> MessageState | None:
        """Read, change and durably replace the state under its lock."""
        self._check_open()
        self._check_id(message_id)
        return await anyio.to_thread.run_sync(self._update_sync, message_id, change)

    def _lock_state_file(self, message_id: str) -> int | None:
        """Lock the current ``state/<id>``, creating an empty one if needed.

        The state file is replaced by rename, so a lock taken on a file that
        has since been replaced protects nothing: after locking, check that
        the path still names the locked file, and start again if not.
        Returns ``None`` if the message is gone.
        """
        path = self._path("state", message_id)
        while True:
            try:
                fd = open_spool_file(path, os.O_RDWR | os.O_CREAT, _PLAIN_MODE)
            except FileNotFoundError:
                return None  # the state directory itself is gone
            except LayoutError as exc:
                raise self._corrupt(message_id, f"state: {exc}") from None
            try:
                lock_exclusive(fd, wait=True)
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    os.close(fd)
                    continue
                mine = os.fstat(fd)
                if (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
                    os.close(fd)
                    continue
                if not os.path.exists(self._path("msg", message_id)):
                    # Deleted; do not leave the placeholder behind.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    os.close(fd)
                    return None
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            return fd

    def _update_sync(
        self,
        message_id: str,
        change: Callable[[MessageState], MessageState | None],
    ) -> MessageState | None:
        fd = self._lock_state_file(message_id)
        if fd is None:
            raise MessageNotFoundError(message_id)
        try:
            arrival, envelope, _ = self._read_message(message_id)
            state = self._read_state(message_id, len(envelope.recipients), arrival)
            new = change(state)
            if new is None:
                self._remove(message_id)
            else:
                if len(new.recipients) != len(envelope.recipients):
                    raise ValueError("a state must keep one entry per recipient")
                replace_file(
                    self._path("tmp", f"{message_id}.{secrets.token_hex(4)}.state"),
                    self._path("state", message_id),
                    encode_state(new),
                    durable=self.durable,
                    mode=_HELD_MODE if new.held else _PLAIN_MODE,
                    mtime_ns=_ns(new.next_attempt),
                )
                self._syncs["state"].sync()
        finally:
            os.close(fd)
        self._hint(message_id)
        return new

    def _remove(self, message_id: str) -> None:
        # The message goes first, durably: a state without its message is an
        # orphan that recovery removes, while a message without its state
        # would look new and be delivered again to every recipient.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path("msg", message_id))
        self._syncs["msg"].sync()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path("state", message_id))

    # -- quarantine ------------------------------------------------------------

    def _quarantine_message(self, message_id: str, reason: str) -> None:
        self._quarantine([("msg", message_id), ("state", message_id)], reason)

    def _corrupt(self, message_id: str, reason: str) -> CorruptMessageError:
        """Quarantine the message's files; return the error that says so."""
        self._quarantine_message(message_id, reason)
        return CorruptMessageError(message_id, reason)

    def _quarantine(self, sources: list[tuple[str, str]], reason: str) -> None:
        """Move files aside, with a note saying why; never delete them."""
        stem = f"{int(time.time() * 1000):012x}-{secrets.token_hex(4)}"
        target = self._path("quarantine", stem)
        os.mkdir(target, 0o700)
        moved = []
        try:
            for sub, name in sources:
                source = os.path.join(self.directory, sub, name)
                with contextlib.suppress(FileNotFoundError):
                    os.rename(source, os.path.join(target, _quarantine_name(sub, name)))
                    moved.append(os.path.join(sub, name))
        finally:
            if not moved:
                os.rmdir(target)
        if not moved:
            return
        note = {"sources": moved, "reason": reason, "time": time.time()}
        replace_file(
            self._path("tmp", f"reason.{secrets.token_hex(4)}"),
            os.path.join(target, "reason.json"),
            json.dumps(note).encode("utf-8"),
            durable=self.durable,
        )
        self._syncs["quarantine"].sync()
        logger.warning("quarantined %s: %s", ", ".join(moved), reason)

    async def quarantined(self) -> list[QuarantineEntry]:
        """The quarantine's entries, oldest first."""
        self._check_open()
        return await anyio.to_thread.run_sync(self._quarantined_sync)

    def _quarantined_sync(self) -> list[QuarantineEntry]:
        out = []
        for entry in sorted(_scandir(self._path("quarantine", "")), key=lambda e: e.name):
            try:
                with open(os.path.join(entry.path, "reason.json"), "rb") as f:
                    note = json.loads(f.read())
                sources = ", ".join(str(s) for s in note["sources"])
                reason, when = str(note["reason"]), float(note["time"])
            except (OSError, ValueError, KeyError, TypeError):
                sources, reason = "?", "no readable reason (interrupted quarantine)"
                when = entry.stat().st_mtime
            out.append(QuarantineEntry(entry.path, sources, reason, when))
        return out


#: The longest file name most file systems take (NAME_MAX), in octets.
_NAME_MAX = 255


def _quarantine_name(sub: str, name: str) -> str:
    """``<sub>-<name>``, shortened (with a digest) where it would be too long.

    A foreign file's name may be as long as the file system allows; with
    the prefix it would not be, and the rename failing would stop every
    scan.  reason.json keeps the name in full.
    """
    full = f"{sub or 'root'}-{name}"
    if len(os.fsencode(full)) <= _NAME_MAX:
        return full
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f"{sub or 'root'}-{digest}"


def _scandir(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return list(it)


def _listing(path: str) -> Iterator[tuple[str, bool]]:
    """Names in a directory and whether each is a regular file (no stat)."""
    with os.scandir(path) as it:
        for entry in it:
            yield entry.name, entry.is_file(follow_symlinks=False)


def _scan_entry(
    message_id: str,
    mtime_ns: int,
    size: int,
    state: tuple[int, int, int] | None,
) -> ScanEntry:
    arrival = mtime_ns / 1e9
    if state is not None and state[1] > 0:
        state_mtime_ns, state_size, state_mode = state
        due = None if state_mode & stat.S_IXUSR else state_mtime_ns / 1e9
        return ScanEntry(message_id, arrival, due, size + state_size, True)
    return ScanEntry(message_id, arrival, arrival, size, False)
