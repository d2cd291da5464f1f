"""Events that are not commands: body data, ends of bodies, sentinels."""

from __future__ import annotations

import enum

import attrs

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "BodyChunk",
    "ConnectionClosed",
    "EndOfChunk",
    "EndOfData",
]


def _short(data: bytes) -> str:
    return f"<{len(data)} octets>"


@attrs.frozen
class BodyChunk:
    """A piece of message body, in order (after dot-unstuffing for DATA)."""

    data: bytes = attrs.field(repr=_short)


@attrs.frozen
class EndOfChunk:
    """A BDAT chunk without LAST has been read in full; a reply is due."""


@attrs.frozen
class EndOfData:
    """The whole message has been read; its reply (or replies, LMTP) is due."""


@attrs.frozen
class ConnectionClosed:
    """The peer closed its side of the connection."""


class Sentinel(enum.Enum):
    """What ``next_event()`` returns when it has no event to give.

    Either more bytes are needed, or the connection is paused.
    """

    #: Feed more bytes with ``receive_data``.
    NEED_DATA = "NEED_DATA"
    #: A STARTTLS handshake is due; nothing more is parsed until it is done.
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA = Sentinel.NEED_DATA
PAUSED = Sentinel.PAUSED
