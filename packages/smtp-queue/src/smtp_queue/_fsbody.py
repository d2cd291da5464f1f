"""Streaming a message body out of its file, checked against its trailer."""

from __future__ import annotations

import os
import zlib
from typing import TYPE_CHECKING, NoReturn, Self

import anyio.to_thread
import attrs

from ._errors import CorruptMessageError, MessageNotFoundError
from ._fsformat import LayoutError, open_spool_file, read_layout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["READ_CHUNK", "BodyReader"]

#: Body bytes read per chunk when streaming a message out.
READ_CHUNK = 64 * 1024


@attrs.define(eq=False)
class BodyReader:
    """The body of ``msg/<id>`` in chunks, each read in a worker thread.

    The length and CRC of the trailer are checked before the last chunk is
    handed out, so a damaged message fails before a client could send its
    end-of-data; ``quarantine(reason)`` is called first.
    """

    _path: str
    _id: str
    _quarantine: Callable[[str], None]
    _fd: int = attrs.field(init=False, default=-1)
    _offset: int = attrs.field(init=False, default=0)
    _remaining: int = attrs.field(init=False, default=-1)
    _expected: int = attrs.field(init=False, default=0)
    _crc: int = attrs.field(init=False, default=0)
    _done: bool = attrs.field(init=False, default=False)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        chunk = await anyio.to_thread.run_sync(self._read)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Stop reading and close the file."""
        self._done = True
        self._close_fd()

    def _open(self) -> None:
        try:
            self._fd = open_spool_file(self._path)
        except FileNotFoundError:
            raise MessageNotFoundError(self._id) from None
        except LayoutError as exc:
            self._corrupt(str(exc))
        try:
            layout = read_layout(self._fd)
        except LayoutError as exc:
            self._corrupt(str(exc))
        except BaseException:
            self._close_fd()  # a read error (EIO): the descriptor is not leaked
            raise
        self._offset = layout.body_offset
        self._remaining = layout.body_length
        self._expected = layout.crc

    def _read(self) -> bytes:
        if self._fd < 0:
            self._open()
        if self._remaining == 0:
            self._finish()
            return b""
        chunk = os.pread(self._fd, min(READ_CHUNK, self._remaining), self._offset)
        if not chunk:
            self._corrupt("the body is shorter than recorded")
        self._offset += len(chunk)
        self._remaining -= len(chunk)
        self._crc = zlib.crc32(chunk, self._crc)
        if self._remaining == 0:
            self._finish()
        return chunk

    def _finish(self) -> None:
        self._done = True
        self._close_fd()
        if self._crc != self._expected:
            self._corrupt(f"body CRC {self._crc:08x}, recorded {self._expected:08x}")

    def _corrupt(self, reason: str) -> NoReturn:
        self._close_fd()
        self._done = True
        self._quarantine(reason)
        raise CorruptMessageError(self._id, reason) from None

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
