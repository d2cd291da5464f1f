"""Service extensions as listed in an EHLO reply (RFC 5321 4.1.1.1)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._reply import Reply

__all__ = ["Extensions"]

# RFC 5321 4.1.1.1:
#   ehlo-line    = ehlo-keyword *( SP ehlo-param )
#   ehlo-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
#   ehlo-param   = 1*(%d33-126)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_PARAM = re.compile(r"[\x21-\x7e]+")


def _to_entries(
    value: Iterable[tuple[str, Iterable[str]]],
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((keyword.upper(), tuple(params)) for keyword, params in value)


def _check_entries(
    _instance: object,
    _attribute: object,
    value: tuple[tuple[str, tuple[str, ...]], ...],
) -> None:
    seen = set()
    for keyword, params in value:
        if not _KEYWORD.fullmatch(keyword):
            raise ValueError(f"bad EHLO keyword {keyword!r}")
        if keyword in seen:
            raise ValueError(f"EHLO keyword {keyword} listed twice")
        seen.add(keyword)
        for param in params:
            if not _PARAM.fullmatch(param):
                raise ValueError(f"bad EHLO parameter {param!r}")


@attrs.frozen
class Extensions:
    """The extensions a server advertises: keyword -> parameters, in order.

    Read from the lines after the first of an EHLO reply (RFC 5321 4.1.1.1:
    ``ehlo-line = ehlo-keyword *( SP ehlo-param )``).

    >>> ext = Extensions([("SIZE", ["1000"]), ("PIPELINING", [])])
    >>> ext.size, ext.pipelining, ext.chunking
    (1000, True, False)
    """

    entries: tuple[tuple[str, tuple[str, ...]], ...] = attrs.field(
        default=(), converter=_to_entries, validator=_check_entries
    )
    _index: dict[str, tuple[str, ...]] = attrs.field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Looked up on every command a session checks: a dict, not a scan.
        object.__setattr__(self, "_index", dict(self.entries))

    @classmethod
    def from_reply(cls, reply: Reply) -> Extensions:
        """Read the extensions from an EHLO (or LHLO) reply.

        The first line is the greeting; each further line is one extension.
        Lines that do not parse are ignored (a client is liberal in what it
        accepts), as is a second mention of a keyword.
        """
        entries: dict[str, tuple[str, ...]] = {}
        for line in reply.lines[1:]:
            words = line.split()
            if not words:
                continue
            keyword, *params = words
            if not _KEYWORD.fullmatch(keyword):
                continue
            good = tuple(p for p in params if _PARAM.fullmatch(p))
            entries.setdefault(keyword.upper(), good)
        return cls(entries.items())

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self._index

    def params(self, keyword: str) -> tuple[str, ...] | None:
        """The parameters of ``keyword``, or ``None`` if it is not listed."""
        return self._index.get(keyword.upper())

    def lines(self) -> list[str]:
        """One reply line per extension, as a server lists them."""
        return [" ".join((k, *params)) for k, params in self.entries]

    @property
    def pipelining(self) -> bool:
        """RFC 2920."""
        return "PIPELINING" in self

    @property
    def size(self) -> int | None:
        """RFC 1870: the fixed maximum size, 0 for none; ``None`` if unlisted."""
        params = self.params("SIZE")
        if params is None:
            return None
        if params and params[0].isdigit():
            return int(params[0])
        return 0

    @property
    def eightbitmime(self) -> bool:
        """RFC 6152."""
        return "8BITMIME" in self

    @property
    def smtputf8(self) -> bool:
        """RFC 6531."""
        return "SMTPUTF8" in self

    @property
    def chunking(self) -> bool:
        """RFC 3030 (BDAT)."""
        return "CHUNKING" in self

    @property
    def binarymime(self) -> bool:
        """RFC 3030 (BODY=BINARYMIME)."""
        return "BINARYMIME" in self

    @property
    def dsn(self) -> bool:
        """RFC 3461."""
        return "DSN" in self

    @property
    def starttls(self) -> bool:
        """RFC 3207."""
        return "STARTTLS" in self

    @property
    def enhancedstatuscodes(self) -> bool:
        """RFC 2034."""
        return "ENHANCEDSTATUSCODES" in self

    @property
    def requiretls(self) -> bool:
        """RFC 8689."""
        return "REQUIRETLS" in self

    @property
    def auth(self) -> frozenset[str]:
        """RFC 4954: the SASL mechanisms offered (upper case)."""
        return frozenset(p.upper() for p in self.params("AUTH") or ())
