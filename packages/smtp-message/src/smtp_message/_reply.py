"""Replies: the value, its serialisation and its incremental parser."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

from ._buffer import ReceiveBuffer
from ._errors import ReplySyntaxError
from ._limits import MAX_REPLY_LINE, MAX_REPLY_LINE_READ, MAX_REPLY_LINES

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Reply", "ReplyParser"]

# RFC 5321 4.2:
#   Reply-code  = %x32-35 %x30-35 %x30-39
_CODE = re.compile(r"[2-5][0-5][0-9]")

# RFC 3463 2:
#   status-code = class "." subject "." detail
#   class       = "2"/"4"/"5"
#   subject     = 1*3digit
#   detail      = 1*3digit
# (leading zeros are not used: "0" or a number starting with 1-9)
_NUM = r"(?:0|[1-9][0-9]{0,2})"
_ENHANCED = re.compile(rf"[245]\.{_NUM}\.{_NUM}")
_ENHANCED_PREFIX = re.compile(rf"([245]\.{_NUM}\.{_NUM})(?: |$)")

# RFC 5321 4.2:  textstring = 1*(%d09 / %d32-126) ; HT, SP, Printable US-ASCII
# RFC 6531 3.7.4.2 allows UTF-8 in reply text.  What is never allowed is a
# control character (CR and LF above all: they would end the line and let
# the text forge a reply).  Lone surrogates are not characters UTF-8 can
# carry: such a value could be built but never sent.
_BAD_TEXT = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")


def _safe_line(line: str) -> bool:
    """Whether ``line`` can be one reply line as it is.

    That is: no control character, and short enough never to need wrapping
    (even at 4 UTF-8 octets a character).
    """
    return len(line) <= (MAX_REPLY_LINE - 32) // 4 and _BAD_TEXT.search(line) is None


def _to_lines(value: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    lines = tuple(value)
    return lines if lines else ("",)


@attrs.frozen
class Reply:
    r"""One SMTP reply: a code, an optional enhanced status code, text lines.

    >>> Reply(250, "2.1.0", "Sender OK").to_bytes()
    b'250 2.1.0 Sender OK\\r\\n'

    ``lines`` takes a string (one line) or an iterable of strings (a
    multi-line reply).  A line may not contain a control character: such a
    value cannot be built, so a reply assembled from untrusted text can never
    smuggle a line break to the peer.  :meth:`to_bytes` wraps a line that
    would exceed 512 octets (RFC 5321 4.5.3.1.5) into several.
    """

    code: int = attrs.field(validator=attrs.validators.instance_of(int))
    enhanced: str | None = attrs.field(default=None)
    lines: tuple[str, ...] = attrs.field(default=("",), converter=_to_lines)
    # The serialised form, computed on first use: the named replies are sent
    # over and over.
    _wire: bytes | None = attrs.field(default=None, init=False, eq=False, hash=False, repr=False)

    @code.validator
    def _check_code(self, _attribute: object, value: int) -> None:
        if not _CODE.fullmatch(str(value)):
            raise ValueError(f"not an SMTP reply code: {value!r}")

    @enhanced.validator
    def _check_enhanced(self, _attribute: object, value: str | None) -> None:
        if value is None:
            return
        if not _ENHANCED.fullmatch(value):
            raise ValueError(f"not an enhanced status code: {value!r}")
        # RFC 3463 2: the class of the enhanced code matches the reply's.
        if str(self.code)[0] != value[0]:
            raise ValueError(f"enhanced status {value} does not match reply code {self.code}")

    @lines.validator
    def _check_lines(self, _attribute: object, value: tuple[str, ...]) -> None:
        for line in value:
            if not isinstance(line, str):
                raise TypeError(f"reply lines are str, not {type(line).__name__}")
            if _BAD_TEXT.search(line):
                raise ValueError(f"control character in reply text: {line!r}")

    @property
    def text(self) -> str:
        """The text of every line, joined with newlines."""
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        """2yz: the requested action was completed."""
        return 200 <= self.code < 300

    @property
    def is_intermediate(self) -> bool:
        """3yz: the command was accepted; more input is expected."""
        return 300 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        """4yz: the action was not taken; trying again later may work."""
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        """5yz: the action was not taken; repeating it will not help."""
        return self.code >= 500

    @property
    def closes_connection(self) -> bool:
        """421 (RFC 5321 3.8) and 221 end the session."""
        return self.code in (221, 421)

    def to_bytes(self) -> bytes:
        """Serialise as the server sends it.

        Every line carries the enhanced code (RFC 2034 3).  A line whose
        serialised form would exceed 512 octets is wrapped at spaces (or cut,
        if it has none) into several lines.
        """
        wire = self._wire
        if wire is None:
            wire = self._serialise()
            object.__setattr__(self, "_wire", wire)
        return wire

    @classmethod
    def _trusted(
        cls, code: int, enhanced: str | None, lines: tuple[str, ...], wire: bytes
    ) -> Reply:
        """A reply built from parts already checked, with its wire form.

        Internal: for replies made per session from cached parts (the EHLO
        reply), which the validators and :meth:`_serialise` would check and
        build again each time.  The caller vouches for every invariant.
        """
        reply = object.__new__(cls)
        object.__setattr__(reply, "code", code)
        object.__setattr__(reply, "enhanced", enhanced)
        object.__setattr__(reply, "lines", lines)
        object.__setattr__(reply, "_wire", wire)
        return reply

    def _serialise(self) -> bytes:
        code = str(self.code)
        lead = f"{self.enhanced} " if self.enhanced else ""
        room = MAX_REPLY_LINE - len(code) - 1 - len(lead) - 2
        lines = [piece for line in self.lines for piece in _wrap(line, room)]
        out = []
        last = len(lines) - 1
        for i, line in enumerate(lines):
            sep = " " if i == last else "-"
            body = (lead + line).rstrip(" ") if not line else lead + line
            if body or sep == "-" or self.code == 334:
                # RFC 4954 4: continue-req = "334" SP [base64] CRLF
                out.append(f"{code}{sep}{body}\r\n")
            else:
                out.append(f"{code}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        head = f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)
        return f"{head} {self.text}" if self.text else head


# One reply line: the code, then "-" (more follows), " " or nothing (last).
_LINE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?", re.DOTALL)


def _clean_text(raw: bytes) -> str:
    # Malformed text is the server's problem, not ours: decode leniently and
    # replace control characters, so what reaches a log or a DSN is inert.
    text = raw.decode("utf-8", errors="replace")
    return _BAD_TEXT.sub("\ufffd", text)


@attrs.define(eq=False)
class ReplyParser:
    """Incremental parser of server replies (the client's reader), RFC 5321 4.2.

    Feed bytes as they arrive with :meth:`feed`; :meth:`next_reply` returns
    a complete :class:`Reply` or ``None`` when more input is needed.  Lines
    longer than ``max_line`` octets (RFC 5321 4.5.3.1.5, read liberally),
    replies of more than ``max_lines`` lines, lines that do not start with a
    reply code, and multi-line replies whose lines disagree on the code
    (RFC 5321 4.2.1) raise :class:`ReplySyntaxError`.

    That error is final, as a protocol error is for h11's ``Connection``:
    once one reply is malformed, nothing after it can be trusted to be
    where a reply starts (RFC 5321 4.2), so every later :meth:`next_reply`
    raises :class:`ReplySyntaxError` again, and received bytes are dropped,
    never parsed or buffered.

    With ``enhanced`` true, an RFC 3463 code at the start of the first line's
    text (of the same class as the reply code) becomes :attr:`Reply.enhanced`
    and is removed from every line that repeats it.
    """

    max_line: int = MAX_REPLY_LINE_READ
    max_lines: int = MAX_REPLY_LINES
    enhanced: bool = True
    _buffer: ReceiveBuffer = attrs.field(factory=ReceiveBuffer, init=False)
    _pending: list[tuple[int, bytes]] = attrs.field(factory=list, init=False)
    # The message of the first ReplySyntaxError: set, the parser is broken.
    _error: str | None = attrs.field(default=None, init=False)

    def feed(self, data: bytes) -> None:
        """Add received bytes (dropped once the parser is :attr:`broken`)."""
        if self._error is None:
            self._buffer.feed(data)

    @property
    def broken(self) -> bool:
        """Whether a :class:`ReplySyntaxError` was raised: the parser is done."""
        return self._error is not None

    @property
    def buffered(self) -> int:
        """How many received bytes are not yet parsed."""
        return len(self._buffer)

    def take_unparsed(self) -> bytes:
        """Remove and return every byte not yet parsed."""
        return self._buffer.take_all()

    def next_reply(self) -> Reply | None:
        """Return the next complete reply, or ``None`` if more input is needed.

        Raises :class:`ReplySyntaxError` for a malformed reply, and on every
        call after that.
        """
        if self._error is not None:
            raise ReplySyntaxError(self._error)
        try:
            return self._next_reply()
        except ReplySyntaxError as exc:
            # The lines of the reply in progress are not a reply: dropped
            # with everything after them, never spliced into a later one.
            self._error = str(exc)
            self._pending = []
            self._buffer.take_all()
            raise

    def _next_reply(self) -> Reply | None:
        while True:
            line = self._buffer.take_line(self.max_line)
            if line is None:
                return None
            if line is ReceiveBuffer.TOO_LONG:
                raise ReplySyntaxError(f"reply line longer than {self.max_line} octets")
            assert isinstance(line, bytes)
            match = _LINE.fullmatch(line)
            if match is None:
                raise ReplySyntaxError(f"malformed reply line: {line[:80]!r}")
            code = int(match[1])
            if self._pending and self._pending[0][0] != code:
                raise ReplySyntaxError(
                    f"multi-line reply changes code from {self._pending[0][0]} to {code}"
                )
            self._pending.append((code, match[3] or b""))
            if len(self._pending) > self.max_lines:
                raise ReplySyntaxError(f"reply longer than {self.max_lines} lines")
            if match[2] != b"-":
                lines, self._pending = self._pending, []
                return self._build(code, [text for _, text in lines])

    def _build(self, code: int, raw_lines: list[bytes]) -> Reply:
        texts = [_clean_text(raw) for raw in raw_lines]
        enhanced = None
        if self.enhanced and code // 100 != 3:
            m = _ENHANCED_PREFIX.match(texts[0])
            if m and m[1][0] == str(code)[0]:
                enhanced = m[1]
                texts = [_strip_enhanced(t, enhanced) for t in texts]
        # The code matched the grammar, the enhanced code (if any) matched
        # its pattern and class, and _clean_text left no control character
        # or lone surrogate: what Reply's validators check is checked.
        reply = object.__new__(Reply)
        object.__setattr__(reply, "code", code)
        object.__setattr__(reply, "enhanced", enhanced)
        object.__setattr__(reply, "lines", tuple(texts))
        object.__setattr__(reply, "_wire", None)
        return reply


def _wrap(line: str, room: int) -> list[str]:
    """Split ``line`` into pieces of at most ``room`` UTF-8 octets."""
    if len(line.encode("utf-8")) <= room:
        return [line]
    pieces: list[str] = []
    rest = line
    while len(rest.encode("utf-8")) > room:
        cut = len(rest.encode("utf-8")[:room].decode("utf-8", errors="ignore"))
        space = rest.rfind(" ", 1, cut + 1)
        if space > 0:
            pieces.append(rest[:space])
            rest = rest[space + 1 :]
        else:
            pieces.append(rest[:cut])
            rest = rest[cut:]
    pieces.append(rest)
    return pieces


def _strip_enhanced(text: str, enhanced: str) -> str:
    if text == enhanced:
        return ""
    if text.startswith(enhanced + " "):
        return text[len(enhanced) + 1 :]
    return text
