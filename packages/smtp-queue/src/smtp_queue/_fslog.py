"""The spool's change log: how one process learns what others changed.

Every change appends "``<writer token> <id>``" to the ``changes`` file,
without fsync: it is a hint.  A reader remembers how far it has read and
skips its own lines.  When the log passes :data:`CHANGES_LIMIT` a writer
replaces it with an empty one; readers notice the new inode and answer
"unknown" (``None``), which makes the scheduler scan the whole spool.
"""

from __future__ import annotations

import logging
import os
import secrets

import attrs

from ._errors import SpoolError
from ._fsformat import ID_PATTERN, LayoutError, MessageWriter, open_spool_file, write_all

__all__ = ["CHANGES_LIMIT", "ChangeLog"]

logger = logging.getLogger("smtp_queue")

#: The change log is started afresh past this size.
CHANGES_LIMIT = 256 * 1024


@attrs.define(eq=False)
class ChangeLog:
    """One process's end of the change log (blocking; run in threads)."""

    path: str
    #: Where the empty replacement is prepared.
    tmp_dir: str
    #: This writer's token; its own lines are not reported back to it.
    token: str = attrs.field(factory=lambda: secrets.token_hex(4))
    _fd: int = attrs.field(init=False, default=-1)
    _ino: int = attrs.field(init=False, default=-1)
    _offset: int = attrs.field(init=False, default=0)

    def open(self) -> None:
        """Start reading at the current end (a scan covers what came before)."""
        try:
            fd = open_spool_file(self.path, os.O_RDWR | os.O_CREAT)
        except LayoutError as exc:
            raise SpoolError(f"{self.path}: {exc}") from None
        st = os.fstat(fd)
        self.close()
        self._fd, self._ino, self._offset = fd, st.st_ino, st.st_size

    def close(self) -> None:
        """Stop reading."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def record(self, message_id: str) -> None:
        """Announce a change to ``message_id`` (best effort).

        A lost line only delays another process until its next full scan.
        """
        try:
            fd = open_spool_file(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                write_all(fd, f"{self.token} {message_id}\n".encode("ascii"))
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            if size > CHANGES_LIMIT:
                fresh = MessageWriter(
                    os.path.join(self.tmp_dir, f"changes.{secrets.token_hex(4)}"),
                    durable=False,
                )
                os.replace(fresh.path, self.path)
                fresh.close()
        except (OSError, LayoutError) as exc:
            logger.debug("could not log a change to %s: %s", self.path, exc)

    def poll(self) -> list[str] | None:
        """Ids other writers changed since the last poll; ``None``: unknown."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or st.st_ino != self._ino:
            self.open()
            return None
        if st.st_size < self._offset or st.st_size - self._offset > 2 * CHANGES_LIMIT:
            self._offset = st.st_size
            return None
        if st.st_size == self._offset:
            return []
        data = os.pread(self._fd, st.st_size - self._offset, self._offset)
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self._offset += len(complete)
        ids: dict[str, None] = {}
        token = self.token.encode("ascii")
        for line in complete.split(b"\n"):
            writer, _, message_id = line.partition(b" ")
            name = message_id.decode("latin-1")
            if writer != token and ID_PATTERN.fullmatch(name):
                ids[name] = None
        return list(ids)
