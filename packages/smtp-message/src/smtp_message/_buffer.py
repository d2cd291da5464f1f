"""The receive buffer every reader works on."""

from __future__ import annotations

import enum
from typing import Final, Literal

__all__ = ["ReceiveBuffer"]


class _TooLong(enum.Enum):
    TOO_LONG = "TOO_LONG"


class ReceiveBuffer:
    """Bytes received and not yet parsed, cut into lines at CRLF only.

    RFC 5321 2.3.8: lines end with CRLF, never a bare CR or LF; a line
    longer than its limit (RFC 5321 4.5.3.1) is reported, never buffered
    whole.  A ``bytearray`` consumed from the front (which CPython does in constant
    time), with the position where the last search for a line end stopped,
    so feeding a long line in many small pieces costs linear time, not
    quadratic.
    """

    __slots__ = ("_data", "_scanned")

    TOO_LONG: Final = _TooLong.TOO_LONG

    def __init__(self) -> None:
        self._data = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> None:
        """Append ``data``."""
        self._data += data

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        return bool(self._data)

    @property
    def data(self) -> bytearray:
        """The buffered bytes (readers scan them in place)."""
        return self._data

    def take_line(self, limit: int) -> bytes | Literal[_TooLong.TOO_LONG] | None:
        """Remove and return the next CRLF-terminated line, without the CRLF.

        Returns ``None`` when no complete line is buffered yet, and
        :attr:`TOO_LONG` (consuming nothing) when the line, CRLF included,
        is longer than ``limit`` octets, whether or not its end has arrived.
        A bare CR or LF does not end a line.
        """
        data = self._data
        start = max(self._scanned - 1, 0)
        end = data.find(b"\r\n", start, limit)
        if end == -1:
            if len(data) >= limit:
                return self.TOO_LONG
            self._scanned = len(data)
            return None
        line = bytes(data[:end])
        del data[: end + 2]
        self._scanned = 0
        return line

    def skip_line(self) -> bool:
        """Drop bytes up to and including the next CRLF.

        Returns ``True`` if the CRLF was found.  Otherwise drops everything
        but a final CR (which may be the first half of the CRLF) and returns
        ``False``; nothing of the skipped line is ever kept.
        """
        data = self._data
        end = data.find(b"\r\n")
        self._scanned = 0
        if end != -1:
            del data[: end + 2]
            return True
        keep = 1 if data.endswith(b"\r") else 0
        del data[: len(data) - keep]
        return False

    def take(self, count: int) -> bytes:
        """Remove and return up to ``count`` bytes from the front."""
        data = self._data
        self._scanned = 0
        if count >= len(data):
            chunk = bytes(data)
            data.clear()
            return chunk
        chunk = bytes(data[:count])
        del data[:count]
        return chunk

    def take_all(self) -> bytes:
        """Remove and return everything buffered."""
        return self.take(len(self._data))

    def consume(self, count: int) -> None:
        """Drop ``count`` bytes from the front."""
        del self._data[:count]
        self._scanned = 0
