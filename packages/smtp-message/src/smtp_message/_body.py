"""Message bodies: the DATA reader (receiver) and the dot-stuffer (sender).

Both work a buffer at a time with ``bytes.find``/``count``/``replace``, never
a Python loop per byte or per line, and neither ever holds more than a few
bytes of a body beyond what it was given.
"""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING

import attrs

from ._replies import BARE_LINE_ENDING, MESSAGE_TOO_BIG

if TYPE_CHECKING:
    from ._buffer import ReceiveBuffer
    from ._reply import Reply

__all__ = ["BareLineEndings", "DataReader", "DotStuffer", "LineEndingNormalizer"]


class BareLineEndings(enum.Enum):
    """What to do with a CR or LF that is not part of a CRLF pair.

    RFC 5321 2.3.8: "CR and LF MUST only occur together as CRLF".  Whatever
    the policy, a bare CR or LF never ends a line for the purpose of finding
    the end of DATA, so ``<LF>.<LF>`` and its variants can never end a message
    early (SMTP smuggling, SEC Consult, December 2023).
    """

    #: Refuse the whole message (the receiver's default).
    REJECT = "reject"
    #: Keep the octets as they are, as message data.
    KEEP = "keep"
    #: Turn each into CRLF (the sender's default, so that what a peer reads
    #: is exactly the line structure the caller meant).
    NORMALIZE = "normalize"


def _has_bare(data: bytes | bytearray) -> bool:
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


_TERMINATOR_PREFIXES = (b".", b".\r")


@attrs.define(eq=False)
class DataReader:
    """Reads a DATA body: dot-unstuffing, and the end at ``CRLF . CRLF`` only.

    Call :meth:`read` with the receive buffer whenever bytes arrive.  The
    body comes out in chunks as it arrives, never accumulated.  When the
    body breaks the size limit or the bare line ending policy, the reader
    stops giving out data, keeps reading (and discarding) up to the end of
    the body, and then reports the violation as :attr:`violation`, so the
    session is back in step for the next command.

    ``size`` counts the message octets after unstuffing, which is what RFC
    1870 compares with the SIZE limit.
    """

    bare_line_endings: BareLineEndings = BareLineEndings.REJECT
    max_size: int | None = None
    size: int = attrs.field(default=0, init=False)
    violation: Reply | None = attrs.field(default=None, init=False)
    # The first octet in the buffer starts a line (the body itself starts a
    # line: the octet after "DATA" CRLF).
    _line_start: bool = attrs.field(default=True, init=False)

    def read(self, buffer: ReceiveBuffer) -> tuple[bytes, bool]:
        """Consume what ``buffer`` holds; return ``(data, finished)``.

        ``data`` is the next piece of the unstuffed body (possibly empty);
        ``finished`` is true once the terminating ``.`` line has been read,
        and the buffer then holds whatever followed it.
        """
        data = buffer.data
        n = len(data)
        pieces: list[bytearray] = []
        pos = 0
        finished = False
        line_start = self._line_start
        while True:
            if line_start:
                if pos >= n:
                    break
                if data[pos] == 0x2E:  # "."
                    head = bytes(data[pos : pos + 3])
                    if head == b".\r\n":
                        # RFC 5321 4.1.1.4: the mail data ends with a line
                        # containing only ".".
                        pos += 3
                        finished = True
                        break
                    if head in _TERMINATOR_PREFIXES:
                        break  # too early to tell: wait for more
                    # RFC 5321 4.5.2: "If the first character is a period and
                    # there are other characters on the line, the first
                    # character is deleted."
                    pos += 1
                line_start = False
            found = data.find(b"\r\n.", pos)
            if found != -1:
                pieces.append(data[pos : found + 2])
                pos = found + 2
                line_start = True
                continue
            # No line starting with "." in what we have.  Give out all of
            # it except a final CR, which may be the start of a CRLF.
            if n - pos >= 2 and data.endswith(b"\r\n"):
                end, line_start = n, True
            elif n > pos and data[n - 1] == 0x0D:
                end = n - 1
            else:
                end = n
            if end > pos:
                pieces.append(data[pos:end])
            pos = end
            break
        self._line_start = line_start
        buffer.consume(pos)
        out = pieces[0] if len(pieces) == 1 else b"".join(pieces) if pieces else b""
        if self.violation is None and out:
            if self.bare_line_endings is not BareLineEndings.KEEP and _has_bare(out):
                self.violation = BARE_LINE_ENDING
            else:
                self.size += len(out)
                if self.max_size is not None and self.size > self.max_size:
                    self.violation = MESSAGE_TOO_BIG
        if self.violation is not None:
            return b"", finished
        return bytes(out), finished


_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")


@attrs.define(eq=False)
class LineEndingNormalizer:
    """Turns every bare CR and bare LF of a chunked body into CRLF.

    A CR at the end of a chunk is held back until the next chunk shows
    whether an LF follows it.  With ``reject`` set, a bare CR or LF raises
    :class:`ValueError` instead.
    """

    reject: bool = False
    _held_cr: bool = attrs.field(default=False, init=False)

    def feed(self, chunk: bytes) -> bytes:
        """Return ``chunk`` normalised (possibly minus a final held CR)."""
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            self._held_cr = True
            chunk = chunk[:-1]
        if _has_bare(chunk):
            if self.reject:
                raise ValueError("message body has a bare CR or LF")
            chunk = _LINE_ENDINGS.sub(b"\r\n", chunk)
        return chunk

    def flush(self) -> bytes:
        """The end of the body: a held CR becomes CRLF."""
        if self._held_cr:
            self._held_cr = False
            if self.reject:
                raise ValueError("message body ends with a bare CR")
            return b"\r\n"
        return b""


@attrs.define(eq=False)
class DotStuffer:
    r"""Encodes an outgoing DATA body: line endings, dot-stuffing, terminator.

    >>> s = DotStuffer()
    >>> s.feed(b"Subject: hi\\r\\n\\r\\n.dot\\r\\n") + s.end()
    b'Subject: hi\\r\\n\\r\\n..dot\\r\\n.\\r\\n'

    ``bare_line_endings`` decides what a bare CR or LF in the body becomes:
    ``NORMALIZE`` (default) turns it into CRLF, ``REJECT`` raises
    :class:`ValueError`.  ``KEEP`` is refused: sent as is, a bare line
    ending could let a lenient peer see an end of data the caller did not
    mean.  ``size`` counts the message octets (after normalising, before
    stuffing), the figure RFC 1870's SIZE parameter declares.
    """

    bare_line_endings: BareLineEndings = BareLineEndings.NORMALIZE
    size: int = attrs.field(default=0, init=False)
    _normalizer: LineEndingNormalizer = attrs.field(init=False)
    _line_start: bool = attrs.field(default=True, init=False)

    def __attrs_post_init__(self) -> None:
        if self.bare_line_endings is BareLineEndings.KEEP:
            raise ValueError("a sender cannot keep bare line endings")
        reject = self.bare_line_endings is BareLineEndings.REJECT
        self._normalizer = LineEndingNormalizer(reject=reject)

    def feed(self, chunk: bytes) -> bytes:
        """Return the wire form of the next piece of the body."""
        return self._stuff(self._normalizer.feed(chunk))

    def _stuff(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        self.size += len(chunk)
        # RFC 5321 4.5.2: "Before sending a line of mail text, the SMTP
        # client checks the first character of the line.  If it is a
        # period, one additional period is inserted at the beginning".
        out = chunk.replace(b"\r\n.", b"\r\n..")
        if self._line_start and out.startswith(b"."):
            out = b"." + out
        self._line_start = out.endswith(b"\r\n")
        return out

    def end(self) -> bytes:
        """The rest of the body and the terminator ``CRLF . CRLF``.

        A body that does not end with CRLF gets one (RFC 5321 4.1.1.4: the
        terminator is a line of its own).
        """
        out = self._stuff(self._normalizer.flush())
        if not self._line_start:
            out += b"\r\n"
            self.size += 2
            self._line_start = True
        return out + b".\r\n"
