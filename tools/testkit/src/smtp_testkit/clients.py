"""Clients for tests: a hand-driven SMTP client, and helpers for real ones.

- :class:`RawClient` speaks SMTP over a real anyio socket byte by byte, so
  tests can send what no well-behaved client would (pipelined injections,
  bare line endings, control characters, over-long lines) and see every
  reply line exactly as the server wrote it.
- :func:`run_asyncio` runs an asyncio-only client (``aiosmtplib``) from a
  test on either anyio backend.
- :func:`run_swaks` runs the ``swaks`` program.

Nothing here imports the toolkit's packages: any package's tests can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from typing import TYPE_CHECKING, Self, TypeVar

import anyio
import anyio.abc
import sniffio
from anyio.streams.tls import TLSStream

from .plugin import require_program

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Coroutine, Sequence
    from typing import Any

__all__ = ["RawClient", "RawReply", "SwaksResult", "run_asyncio", "run_swaks"]

_T = TypeVar("_T")

#: RFC 5321 4.2:  Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#:                Reply-code [ SP textstring ] CRLF
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|$)(.*)", re.DOTALL)
#: How long a test waits for a reply before it fails (generous: the machine
#: is shared and slow; a server that answers at all answers long before).
DEFAULT_WAIT = 30.0
#: A reply line longer than this is a server bug worth failing on.
MAX_READ_LINE = 65536


@dataclasses.dataclass(frozen=True)
class RawReply:
    """One reply, as received: the code and every line (without CRLF)."""

    code: int
    lines: tuple[bytes, ...]

    @property
    def text(self) -> str:
        """The text after the code of every line, joined with newlines."""
        return "\n".join(line[4:].decode("utf-8", "replace") for line in self.lines)

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code of the last line, if it has one."""
        m = re.match(rb"[245]\.[0-9]{1,3}\.[0-9]{1,3}(?= |$)", self.lines[-1][4:])
        return m[0].decode("ascii") if m else None

    def __str__(self) -> str:
        return " | ".join(line.decode("utf-8", "replace") for line in self.lines)


class RawClient:
    """An SMTP client driven by hand over an anyio byte stream.

    It sends exactly the bytes it is given and parses replies strictly
    (RFC 5321 4.2), so that a malformed reply fails the test.
    """

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._eof = False

    @classmethod
    async def connect(cls, host: str, port: int, *, source: str | None = None) -> RawClient:
        """Open a TCP connection to ``host``:``port``."""
        stream = await anyio.connect_tcp(host, port, local_host=source)
        return cls(stream)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (ignoring a peer that already did)."""
        with contextlib.suppress(anyio.BrokenResourceError, OSError):
            await self.stream.aclose()

    async def send(self, data: bytes | str) -> None:
        """Send ``data`` in one write (``str`` is encoded as UTF-8)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        await self.stream.send(data)

    async def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = await self.stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            self._eof = True
            return False
        self._buffer += data
        return True

    async def read_line(self, *, wait: float = DEFAULT_WAIT) -> bytes | None:
        """The next CRLF-terminated line without its CRLF; ``None`` at EOF."""
        with anyio.fail_after(wait):
            while True:
                end = self._buffer.find(b"\r\n")
                if end != -1:
                    line = bytes(self._buffer[:end])
                    del self._buffer[: end + 2]
                    return line
                if len(self._buffer) > MAX_READ_LINE:
                    raise AssertionError("reply line too long")
                if not await self._fill():
                    if self._buffer:
                        raise AssertionError(f"connection closed mid-line: {bytes(self._buffer)!r}")
                    return None

    async def read_reply(self, *, wait: float = DEFAULT_WAIT) -> RawReply:
        """The next complete reply; :class:`EOFError` if the connection ends."""
        lines: list[bytes] = []
        code: bytes | None = None
        while True:
            line = await self.read_line(wait=wait)
            if line is None:
                raise EOFError(f"connection closed; reply so far: {lines!r}")
            m = _REPLY_LINE.fullmatch(line)
            if m is None:
                raise AssertionError(f"malformed reply line {line!r}")
            if code is not None and m[1] != code:
                raise AssertionError(f"reply code changed mid-reply: {line!r}")
            code = m[1]
            lines.append(line)
            if m[2] != b"-":
                return RawReply(int(code), tuple(lines))

    async def read_replies(self, count: int, *, wait: float = DEFAULT_WAIT) -> list[RawReply]:
        """The next ``count`` replies."""
        return [await self.read_reply(wait=wait) for _ in range(count)]

    async def command(self, line: bytes | str, *, wait: float = DEFAULT_WAIT) -> RawReply:
        """Send ``line`` plus CRLF and return the reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        await self.send(line + b"\r\n")
        return await self.read_reply(wait=wait)

    async def read_until_closed(self, *, wait: float = DEFAULT_WAIT) -> bytes:
        """Everything the server sends until it closes the connection."""
        with anyio.fail_after(wait):
            while await self._fill():
                pass
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    async def start_tls(self, context: ssl.SSLContext, hostname: str | None = "localhost") -> None:
        """Do the client side of a TLS handshake on the connection.

        Anything the server sent before, and the client has not read, is
        an error: it would be plaintext the TLS layer cannot see.
        """
        if self._buffer:
            raise AssertionError(f"unread plaintext before TLS: {self._buffer!r}")
        with anyio.fail_after(DEFAULT_WAIT):
            self.stream = await TLSStream.wrap(
                self.stream,
                server_side=False,
                hostname=hostname,
                ssl_context=context,
                standard_compatible=False,
            )


async def run_asyncio(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine ``factory()`` makes on asyncio, from any backend.

    Under asyncio it is awaited directly; under trio it runs in a worker
    thread with an event loop of its own (for asyncio-only clients such as
    aiosmtplib).
    """
    if sniffio.current_async_library() == "asyncio":
        return await factory()
    return await anyio.to_thread.run_sync(lambda: asyncio.run(factory()))


@dataclasses.dataclass(frozen=True)
class SwaksResult:
    """What a swaks run did: its exit status and its transcript."""

    returncode: int
    stdout: str
    stderr: str

    def server_lines(self) -> list[str]:
        """The lines swaks received (``<-`` and ``<**`` in its transcript)."""
        out = []
        for line in self.stdout.splitlines():
            if line.startswith(("<-  ", "<** ", "<~  ", "<~* ")):
                out.append(line[4:])
        return out


async def run_swaks(*args: str, stdin: bytes | None = None) -> SwaksResult:
    """Run ``swaks`` with ``args`` (fails under CI if it is not installed)."""
    swaks = require_program("swaks")
    command: Sequence[str] = [swaks, *args]
    with anyio.fail_after(DEFAULT_WAIT * 2):
        result = await anyio.run_process(command, input=stdin, check=False)
    return SwaksResult(
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )
