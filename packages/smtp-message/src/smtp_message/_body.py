"""Message bodies: the DATA reader (receiver) and the dot-stuffer (sender).

Both work a buffer at a time with ``bytes.find``/``count``/``replace``, never
a Python loop per byte or per line, and neither ever holds more than a few
bytes of a body beyond what it was given.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

import attrs

from ._errors import BareLineEndingError
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
    #: is exactly the line structure the caller meant).  A receiver does so
    #: after finding the end and unstuffing, which follow CRLF only: the
    #: body is what ``KEEP`` gives with each bare CR or LF made CRLF.
    NORMALIZE = "normalize"


# Tested on every piece of a body: module names, because on Python 3.11 an
# Enum member looked up on its class goes through EnumType.__getattr__.
_KEEP: Final = BareLineEndings.KEEP
_REJECT: Final = BareLineEndings.REJECT


def _has_bare(data: bytes | bytearray) -> bool:
    # Without CR or LF there is nothing to check (memchr-fast); otherwise a
    # bare one is whatever is left once every CRLF pair is taken out.
    if b"\r" not in data and b"\n" not in data:
        return False
    rest = b"".join(data.split(b"\r\n"))
    return b"\r" in rest or b"\n" in rest


def _normalize(data: bytes) -> bytes:
    # RFC 5321 2.3.8: a bare CR or LF becomes CRLF, a CRLF stays one.  Three
    # passes of bytes.replace (in C) beat one regex substitution by far.
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


# What the buffer may end with that could be the start of a "\r\n." line
# or of the terminator "\r\n.\r\n": held back until more arrives, longest
# first.
_HELD_TAILS = (b"\r\n.\r", b"\r\n.", b"\r\n", b"\r")


@attrs.define(eq=False)
class DataReader:
    """Reads a DATA body: dot-unstuffing, and the end at ``CRLF . CRLF`` only.

    RFC 5321 4.1.1.4 (the end of the mail data), 4.5.2 (transparency) and
    2.3.8 (bare CR and LF, handled as ``bare_line_endings`` says; never an
    end of line, so never an end of data: no SMTP smuggling).

    Call :meth:`read` with the receive buffer whenever bytes arrive.  The
    body comes out in chunks as it arrives, never accumulated.  When the
    body breaks the size limit or the bare line ending policy, the reader
    stops giving out data, keeps reading (and discarding) up to the end of
    the body, and then reports the violation as :attr:`violation`, so the
    session is back in step for the next command.  A bare CR or LF refused
    by the policy wins over the size limit, wherever each is found.

    ``size`` counts the message octets after unstuffing (and normalising),
    which is what RFC 1870 compares with the SIZE limit.

    Each call works on the whole buffer with ``bytes.find``/``split``/
    ``join``: its cost does not depend on how many lines start with a dot.
    """

    bare_line_endings: BareLineEndings = BareLineEndings.REJECT
    max_size: int | None = None
    size: int = attrs.field(default=0, init=False)
    violation: Reply | None = attrs.field(default=None, init=False)
    # True until the first octet of the body has been looked at: the body
    # starts a line, so a "." there is a dot-stuffed first line or the end.
    # Everywhere else a line start is the octet after a CRLF, and "\r\n"
    # stays in the buffer until what follows it is known.
    _body_start: bool = attrs.field(default=True, init=False)

    def read(self, buffer: ReceiveBuffer) -> tuple[bytes, bool]:
        """Consume what ``buffer`` holds; return ``(data, finished)``.

        ``data`` is the next piece of the unstuffed body (possibly empty);
        ``finished`` is true once the terminating ``.`` line has been read,
        and the buffer then holds whatever followed it.  At most four
        octets (the start of a possible ``CRLF . CRLF``) are left in the
        buffer when ``finished`` is false.
        """
        data = buffer.data
        start = 0
        if self._body_start:
            if not data:
                return b"", False
            if data[0] == 0x2E:  # "."
                head = bytes(data[:3])
                if head == b".\r\n":
                    # An empty message: "DATA", then the terminator at once.
                    buffer.consume(3)
                    return b"", True
                if head in (b".", b".\r"):
                    return b"", False  # too early to tell: wait for more
                start = 1  # a dot-stuffed first line
            self._body_start = False
        # RFC 5321 4.1.1.4: the mail data ends with a line containing only
        # ".", i.e. "CRLF . CRLF"; a bare CR or LF never ends a line here.
        first_dot = data.find(b"\r\n.", start)
        end = -1 if first_dot == -1 else data.find(b"\r\n.\r\n", first_dot)
        finished = end != -1
        if finished:
            stop = end + 2  # the CRLF ends the last line of the body
            consumed = end + 5
        else:
            stop = len(data)
            for tail in _HELD_TAILS:
                if data.endswith(tail):
                    stop -= len(tail)
                    break
            stop = consumed = max(stop, start)
        out: bytes = b""
        if stop > start:
            if first_dot == -1 or first_dot >= stop:
                out = bytes(data[start:stop])
            else:
                # RFC 5321 4.5.2: "If the first character is a period and
                # there are other characters on the line, the first
                # character is deleted."  Every line start but the body's
                # first follows a CRLF.
                out = b"\r\n".join(data[start:stop].split(b"\r\n."))
        buffer.consume(consumed)
        if out and self.violation is not BARE_LINE_ENDING:
            policy = self.bare_line_endings
            if policy is not _KEEP and _has_bare(out):
                if policy is _REJECT:
                    # Even past the size limit: which refusal a body gets
                    # must not depend on where the reads fell.
                    self.violation = BARE_LINE_ENDING
                elif self.violation is None:
                    # ``out`` never ends with a CR whose LF is still to
                    # come (a final CR is held back with the tails above),
                    # so each read can be normalised on its own.
                    out = _normalize(out)
            if self.violation is None:
                self.size += len(out)
                if self.max_size is not None and self.size > self.max_size:
                    self.violation = MESSAGE_TOO_BIG
        if self.violation is not None:
            return b"", finished
        return out, finished


@attrs.define(eq=False)
class LineEndingNormalizer:
    """Turns every bare CR and bare LF of a chunked body into CRLF.

    RFC 5321 2.3.8.  A CR at the end of a chunk is held back until the next
    chunk shows whether an LF follows it.  With ``reject`` set, a bare CR or
    LF raises :class:`~smtp_message.BareLineEndingError` instead.
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
                raise BareLineEndingError("message body has a bare CR or LF")
            chunk = _normalize(chunk)
        return chunk

    def flush(self) -> bytes:
        """The end of the body: a held CR becomes CRLF."""
        if self._held_cr:
            self._held_cr = False
            if self.reject:
                raise BareLineEndingError("message body ends with a bare CR")
            return b"\r\n"
        return b""


@attrs.define(eq=False)
class DotStuffer:
    r"""Encodes an outgoing DATA body: line endings, dot-stuffing, terminator.

    >>> s = DotStuffer()
    >>> s.feed(b"Subject: hi\\r\\n\\r\\n.dot\\r\\n") + s.end()
    b'Subject: hi\\r\\n\\r\\n..dot\\r\\n.\\r\\n'

    RFC 5321 4.5.2 (transparency), 4.1.1.4 (the terminator) and 2.3.8
    (line endings).  ``bare_line_endings`` decides what a bare CR or LF in
    the body becomes: ``NORMALIZE`` (default) turns it into CRLF, ``REJECT``
    raises :class:`~smtp_message.BareLineEndingError` (a ``ValueError``).
    ``KEEP`` is refused with the same error: sent as is, a bare line ending
    could let a lenient peer see an end of data the caller did not mean.
    ``size`` counts the message octets (after normalising, before
    stuffing), the figure RFC 1870's SIZE parameter declares.
    """

    bare_line_endings: BareLineEndings = BareLineEndings.NORMALIZE
    size: int = attrs.field(default=0, init=False)
    _normalizer: LineEndingNormalizer = attrs.field(init=False)
    _line_start: bool = attrs.field(default=True, init=False)

    def __attrs_post_init__(self) -> None:
        if self.bare_line_endings is BareLineEndings.KEEP:
            raise BareLineEndingError("a sender cannot keep bare line endings")
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
