r"""The filesystem spool's file formats and its blocking primitives.

Everything here blocks (disk I/O, fsync, flock) and runs in worker threads.

A message file, written once and never changed::

    SMTPQ/1 <header length>\\n
    <header: JSON, the id, arrival time and envelope>\\n
    <body, as received>
    \\nSMTPQ/1 END <body length: 16 hex digits> <CRC-32 of the body: 8 hex>\\n

The trailer is written last, so a file whose size does not add up, or whose
trailer is missing, was never completed; the CRC catches damage later.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import stat
import threading
import time

import attrs

__all__ = [
    "MAX_HEADER",
    "PROBE_PATIENCE",
    "TRAILER_LENGTH",
    "DirSync",
    "MessageLayout",
    "MessageWriter",
    "lock_exclusive",
    "lock_lease",
    "new_message_id",
    "open_spool_file",
    "probe_lock",
    "read_layout",
    "trailer",
]

#: Ids: 12 hex digits of milliseconds since the epoch (sorting by id sorts by
#: arrival), then 64 random bits (unique without coordination between
#: processes).
ID_PATTERN = re.compile(r"[0-9a-f]{28}")

#: A header larger than this is not one this package wrote (a 16 MiB envelope
#: would have some 100,000 recipients).
MAX_HEADER = 16 * 1024 * 1024

_PREAMBLE = re.compile(rb"SMTPQ/1 (0|[1-9][0-9]{0,8})\n")
_PREAMBLE_MAX = len(b"SMTPQ/1 ") + 9 + 1
_TRAILER = re.compile(rb"\nSMTPQ/1 END ([0-9a-f]{16}) ([0-9a-f]{8})\n")
TRAILER_LENGTH = len(b"\nSMTPQ/1 END ") + 16 + 1 + 8 + 1

#: How long a lease attempt keeps trying while only a probe (a shared lock,
#: :func:`probe_lock`) is in its way.  A probe holds its lock for two system
#: calls; this is a bound for a prober descheduled in between, not a wait.
PROBE_PATIENCE = 1.0
_PROBE_PAUSE = 0.001


def _datasync(fd: int) -> None:
    # fdatasync is enough: what must survive is the data and the size; the
    # mtime and mode bits carry only scheduling hints (the JSON state is
    # authoritative).  Looked up at each call, so a test can watch it.
    getattr(os, "fdatasync", os.fsync)(fd)


def new_message_id(arrival: float) -> str:
    """A fresh message id for a message arriving at ``arrival``."""
    millis = min(int(arrival * 1000), 16**12 - 1)
    return f"{millis:012x}{secrets.token_hex(8)}"


def preamble(header_length: int) -> bytes:
    """The first line of a message file."""
    return b"SMTPQ/1 %d\n" % header_length


def trailer(body_length: int, crc: int) -> bytes:
    """The last line of a message file."""
    return b"\nSMTPQ/1 END %016x %08x\n" % (body_length, crc)


@attrs.frozen
class MessageLayout:
    """Where the parts of a message file are."""

    header: bytes
    body_offset: int
    body_length: int
    crc: int


class LayoutError(ValueError):
    """The file is not a complete message file."""


def _pread_exact(fd: int, length: int, offset: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = os.pread(fd, length - len(data), offset + len(data))
        if not chunk:
            raise LayoutError(f"file ends at {offset + len(data)}, expected more")
        data += chunk
    return data


def read_layout(fd: int) -> MessageLayout:
    """Check a message file's framing and return its header and body position."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, _PREAMBLE_MAX, 0)
    match = _PREAMBLE.match(head)
    if match is None:
        raise LayoutError("no SMTPQ/1 preamble: not a message file")
    header_length = int(match[1])
    if header_length > MAX_HEADER:
        raise LayoutError(f"header of {header_length} octets is too large")
    header_offset = match.end()
    body_offset = header_offset + header_length + 1
    if size < body_offset + TRAILER_LENGTH:
        raise LayoutError(f"truncated: {size} octets")
    tail = _pread_exact(fd, TRAILER_LENGTH, size - TRAILER_LENGTH)
    end = _TRAILER.fullmatch(tail)
    if end is None:
        raise LayoutError("no trailer: the file was never completed")
    body_length = int(end[1], 16)
    if body_offset + body_length + TRAILER_LENGTH != size:
        raise LayoutError(f"size {size} does not match header {header_length} + body {body_length}")
    header = _pread_exact(fd, header_length + 1, header_offset)
    if header[-1:] != b"\n":
        raise LayoutError("header not terminated")
    return MessageLayout(header[:-1], body_offset, body_length, int(end[2], 16))


#: Added to every open of an existing spool file.  The spool is the queue's
#: own directory, but what a listing found may be replaced before it is
#: opened: a symlink is refused (ELOOP), not followed to a file elsewhere,
#: and a FIFO or device in a file's place neither blocks the open (a worker
#: thread would wait forever for a writer) nor becomes a terminal.
_OPEN_SAFELY = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def open_spool_file(path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open a file of the spool, which must be a regular file.

    Raises :class:`FileNotFoundError` if it is gone, and
    :class:`LayoutError` if something else is in its place (a symlink, a
    FIFO, a socket, a directory, a device): the caller quarantines it.
    """
    try:
        fd = os.open(path, flags | _OPEN_SAFELY, mode)
    except OSError as exc:
        # ELOOP: a symlink; ENXIO: a socket, or a FIFO opened for writing;
        # EISDIR: a directory opened for writing.
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise LayoutError(f"not a regular file ({errno.errorcode[exc.errno]})") from None
        raise
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind != stat.S_IFREG:
            raise LayoutError(f"not a regular file (mode {kind:o})")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def lock_exclusive(fd: int, *, wait: bool) -> bool:
    """``flock`` the file exclusively; ``False`` if someone else holds it.

    flock locks belong to the open file description, so two opens of one file
    exclude each other within a process too, and the kernel drops them when
    the process dies: a SIGKILLed worker's lease ends by itself.
    """
    if not wait:
        return _try_flock(fd, fcntl.LOCK_EX)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return True


def _try_flock(fd: int, operation: int) -> bool:
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def probe_lock(fd: int) -> bool:
    """Whether another open file description holds an exclusive ``flock``.

    It only looks: it asks for a *shared* lock, which it holds, if nobody has
    the exclusive one, until ``fd`` is closed.  No portable call reports an
    ``flock`` without taking one (``fcntl``'s ``F_GETLK`` sees only POSIX
    record locks), so instead :func:`lock_lease` knows a shared holder for a
    probe and waits it out.
    """
    return not _try_flock(fd, fcntl.LOCK_SH)


def lock_lease(fd: int, *, patience: float = PROBE_PATIENCE) -> bool:
    """Take the exclusive ``flock`` of a lease, without waiting for a holder.

    ``False`` if another lease (an exclusive lock) holds the file.  A lease
    is never exclusive-locked by anything else, so when only a shared lock is
    in the way it is a :func:`probe_lock` that is about to let go: try again
    for up to ``patience`` seconds rather than give up on the message.
    """
    deadline = time.monotonic() + patience
    while not lock_exclusive(fd, wait=False):
        if not _try_flock(fd, fcntl.LOCK_SH):
            return False  # an exclusive lock: somebody's lease
        fcntl.flock(fd, fcntl.LOCK_UN)
        if time.monotonic() >= deadline:
            return False
        time.sleep(_PROBE_PAUSE)
    return True


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until everything is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@attrs.define(eq=False)
class MessageWriter:
    """Writes one message file under ``tmp/``, locked so cleanup leaves it alone."""

    path: str
    durable: bool
    fd: int = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        # The file is new and its name unique: only a cleaner that took it
        # for a dead writer's could hold the lock, and it removes the file.
        # Cleaners leave young files alone (``tmp_grace``), so this is a
        # guard, not a path that is expected to run.
        if not lock_exclusive(self.fd, wait=False):
            os.close(self.fd)
            self.fd = -1
            raise BlockingIOError(
                errno.EAGAIN, "a temporary file was taken by a cleaner", self.path
            )

    def write(self, data: bytes | memoryview) -> None:
        """Append to the file."""
        write_all(self.fd, data)

    def finish(self, mtime_ns: int | None = None) -> None:
        """Set the modification time and make the contents durable."""
        if mtime_ns is not None:
            os.utime(self.fd, ns=(mtime_ns, mtime_ns))
        if self.durable:
            _datasync(self.fd)

    def close(self) -> None:
        """Close (and so unlock) the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        """Remove the partial file."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        finally:
            self.close()


def fsync_directory(path: str) -> None:
    """Fsync a directory once (its entries become durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Failed group fsyncs remembered (their waiters wake at once to read them).
MAX_SYNC_FAILURES = 64


class DirSync:
    """Group commit of a directory's fsync.

    After a rename into the directory, :meth:`sync` returns once an fsync of
    the directory that started after the rename has completed.  Callers that
    arrive while an fsync runs share the next one, so N concurrent enqueues
    cost far fewer than N directory fsyncs, and each still returns only once
    its own rename is durable.
    """

    def __init__(self, path: str, *, durable: bool) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        self._durable = durable
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._running = False
        #: Recent failed fsyncs: (first ticket, last ticket, error).  Every
        #: caller of such a batch is told, not only the one that ran it: on
        #: Linux a second fsync after a failed one may well succeed without
        #: the lost entries ever reaching the disk.
        self._failures: list[tuple[int, int, OSError]] = []

    def _failure(self, ticket: int) -> OSError | None:
        for first, last, error in self._failures:
            if first <= ticket <= last:
                return error
        return None

    def sync(self) -> None:
        """Make every rename and unlink done so far in the directory durable.

        Raises :class:`OSError` if the fsync that covered this caller's
        changes failed, whoever ran it.
        """
        if not self._durable:
            return
        with self._cond:
            self._requested += 1
            ticket = self._requested
            while self._completed < ticket:
                if self._failure(ticket) is not None:
                    break
                if self._running:
                    self._cond.wait()
                    continue
                # Become the one who syncs, for everybody who asked so far.
                self._running = True
                first, target = self._completed + 1, self._requested
                self._cond.release()
                try:
                    os.fsync(self._fd)
                except BaseException as exc:
                    self._cond.acquire()
                    self._running = False
                    if isinstance(exc, OSError):
                        self._failures.append((first, target, exc))
                        del self._failures[:-MAX_SYNC_FAILURES]
                    self._cond.notify_all()
                    raise
                self._cond.acquire()
                self._running = False
                self._completed = max(self._completed, target)
                self._cond.notify_all()
            if (error := self._failure(ticket)) is not None:
                raise OSError(error.errno, f"directory fsync failed: {error.strerror}") from error

    def close(self) -> None:
        """Close the directory."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def replace_file(
    tmp_path: str,
    path: str,
    data: bytes,
    *,
    durable: bool,
    mode: int = 0o600,
    mtime_ns: int | None = None,
) -> None:
    """Write ``data`` to ``tmp_path`` durably, then rename it over ``path``.

    The caller makes the rename durable (a :class:`DirSync` of the directory).
    """
    writer = MessageWriter(tmp_path, durable)
    try:
        writer.write(data)
        if mode != 0o600:
            os.fchmod(writer.fd, mode)
        writer.finish(mtime_ns)
        os.replace(tmp_path, path)
    except BaseException:
        writer.abort()
        raise
    writer.close()
