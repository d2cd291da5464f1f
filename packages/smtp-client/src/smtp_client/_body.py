"""Message bodies as the client takes them: bytes, a stream, or a stream factory."""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable
from typing import TYPE_CHECKING, TypeAlias

import attrs

from smtp_message import BareLineEndings, LineEndingNormalizer, Reply

from ._errors import MessageRefused

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

__all__ = ["Body", "BodySource"]

#: What :meth:`Client.send <smtp_client.Client.send>` accepts as a body: the
#: whole message, an async iterable of its pieces (read once), or a function
#: returning a fresh such iterable each time it is called (read as often as
#: needed: one transaction per 100 recipients, RFC 5321 4.5.3.1.8).
BodySource: TypeAlias = bytes | AsyncIterable[bytes] | Callable[[], AsyncIterable[bytes]]

BARE_LINE_ENDING = Reply(554, "5.6.0", "message has a bare CR or LF (refused by policy)")


def _normalizer(policy: BareLineEndings) -> LineEndingNormalizer:
    if policy is BareLineEndings.KEEP:
        # Sent as is, a bare LF could let a lenient peer see an end of data
        # the caller did not mean (SMTP smuggling): never an option here.
        raise ValueError("a sender cannot keep bare line endings")
    return LineEndingNormalizer(reject=policy is BareLineEndings.REJECT)


def _refused() -> MessageRefused:
    return MessageRefused("message has a bare CR or LF", reply=BARE_LINE_ENDING)


@attrs.define(eq=False)
class Body:
    """A message body ready to send: every line ending CRLF, the last included.

    Given as bytes, it is normalised once, here, so its exact size and
    whether it holds 8-bit octets are known before anything is sent (SIZE
    and 8BITMIME can be decided up front).  Given as a stream, both are
    found while it is sent.
    """

    data: bytes | None
    policy: BareLineEndings = BareLineEndings.NORMALIZE
    _source: AsyncIterable[bytes] | Callable[[], AsyncIterable[bytes]] | None = None
    _used: bool = False

    @classmethod
    def prepare(
        cls, source: BodySource, policy: BareLineEndings = BareLineEndings.NORMALIZE
    ) -> Body:
        """Wrap ``source``; bytes are normalised now.

        Raises :class:`~smtp_client.MessageRefused` for a bare CR or LF under
        ``REJECT``, :class:`ValueError` for ``KEEP``.
        """
        normalizer = _normalizer(policy)
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            try:
                data = normalizer.feed(data) + normalizer.flush()
            except ValueError:
                raise _refused() from None
            if data and not data.endswith(b"\r\n"):
                # RFC 5321 4.1.1.4: the body's last line ends with CRLF.
                data += b"\r\n"
            return cls(data, policy)
        return cls(None, policy, source)

    @property
    def size(self) -> int | None:
        """The size in octets (RFC 1870), if known before sending."""
        return None if self.data is None else len(self.data)

    @property
    def eight_bit(self) -> bool | None:
        """Whether the body has octets above 127, if known before sending."""
        return None if self.data is None else not self.data.isascii()

    @property
    def utf8_headers(self) -> bool:
        """Whether the header section holds UTF-8 beyond ASCII (RFC 6532).

        Known only for a body given whole; ``False`` for 8-bit octets that
        are not UTF-8 (a legacy charset, which SMTPUTF8 would misname).
        """
        if self.data is None:
            return False
        end = self.data.find(b"\r\n\r\n")
        header = self.data if end < 0 else self.data[: end + 2]
        if header.isascii():
            return False
        try:
            header.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True

    @property
    def replayable(self) -> bool:
        """Whether the body can be read more than once."""
        return self.data is not None or (
            self._source is not None and not isinstance(self._source, AsyncIterable)
        )

    async def pieces(self) -> AsyncGenerator[bytes, None]:
        """The body's pieces, line endings normalised, ending with CRLF.

        Raises :class:`~smtp_client.MessageRefused` on a bare CR or LF under
        ``REJECT``, and :class:`RuntimeError` if a one-shot stream is read
        twice.
        """
        if self.data is not None:
            if self.data:
                yield self.data
            return
        source = self._source
        assert source is not None
        if isinstance(source, AsyncIterable):
            if self._used:
                raise RuntimeError("a body stream can only be read once")
            self._used = True
            stream = source
        else:
            stream = source()
        normalizer = _normalizer(self.policy)
        last = b""
        try:
            async for piece in stream:
                out = normalizer.feed(bytes(piece))
                if out:
                    last = out[-2:] if len(out) >= 2 else last[-1:] + out
                    yield out
            out = normalizer.flush()
        except ValueError:
            raise _refused() from None
        finally:
            # A sender that stops early (a refusal, a lost connection) closes
            # the caller's generator now, not whenever it is collected.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if out:
            last = out[-2:] if len(out) >= 2 else last[-1:] + out
            yield out
        if last and not last.endswith(b"\r\n"):
            yield b"\r\n"
