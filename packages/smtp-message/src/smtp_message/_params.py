"""ESMTP parameters of MAIL and RCPT (RFC 5321 4.1.2 and the extension RFCs)."""

from __future__ import annotations

import enum
import re
from typing import TYPE_CHECKING, TypeVar

import attrs

from ._errors import ParameterError
from ._replies import ARGUMENT_SYNTAX

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "BodyType",
    "MailParams",
    "Notify",
    "OriginalRecipient",
    "RcptParams",
    "Ret",
    "xtext_decode",
    "xtext_encode",
]

# RFC 5321 4.1.2:
#   esmtp-param   = esmtp-keyword ["=" esmtp-value]
#   esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
#   esmtp-value   = 1*(%d33-60 / %d62-126)
# RFC 6531 3.3:  esmtp-value =/ UTF8-non-ascii
# (read as in _address.py: no C1 controls, no lone surrogates)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = {
    False: re.compile(r"[\x21-\x3c\x3e-\x7e]+"),
    True: re.compile(r"[\x21-\x3c\x3e-\x7e\u00a0-\ud7ff\ue000-\U0010ffff]+"),
}

# RFC 3461 4:
#   xtext   = *( xchar / hexchar )
#   xchar   = any ASCII CHAR between "!" (33) and "~" (126) inclusive,
#             except for "+" and "=".
#   hexchar = ASCII "+" immediately followed by two upper case hexadecimal
#             digits
# Lower-case hex digits are accepted on input (be liberal) and never produced.
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")
_HEXCHAR = re.compile(r"\+([0-9A-Fa-f]{2})")
_XTEXT_SPECIAL = re.compile(r"[^\x21-\x2a\x2c-\x3c\x3e-\x7e]")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")


def xtext_decode(value: str) -> str:
    """Decode RFC 3461 xtext; raise :class:`ValueError` if malformed."""
    if not _XTEXT.fullmatch(value):
        raise ValueError(f"malformed xtext: {value!r}")
    return _HEXCHAR.sub(lambda m: chr(int(m[1], 16)), value)


def xtext_encode(value: str) -> str:
    """Encode ``value`` (ASCII) as RFC 3461 xtext."""
    if not value.isascii():
        raise ValueError(f"xtext holds ASCII only: {value!r}")
    return _XTEXT_SPECIAL.sub(lambda m: f"+{ord(m[0]):02X}", value)


class BodyType(enum.Enum):
    """``BODY=`` (RFC 6152 2, RFC 3030 3)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARY_MIME = "BINARYMIME"


class Ret(enum.Enum):
    """``RET=`` (RFC 3461 4.3): what a failure DSN returns of the message."""

    FULL = "FULL"
    HDRS = "HDRS"


class Notify(enum.Enum):
    """``NOTIFY=`` values (RFC 3461 4.1)."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


def _check_addr_type(_instance: object, _attribute: object, value: str) -> None:
    if not _KEYWORD.fullmatch(value):
        raise ValueError(f"bad ORCPT address type {value!r}")


def _check_orcpt_address(_instance: object, _attribute: object, value: str) -> None:
    _printable(value, "ORCPT")


@attrs.frozen
class OriginalRecipient:
    r"""``ORCPT=addr-type;xtext`` (RFC 3461 4.2), decoded.

    ``addr_type`` is usually ``rfc822``; ``address`` is printable ASCII.
    A ``utf-8`` address (RFC 6533 3) is kept in its ASCII form, each
    non-ASCII character written ``\x{HEX}``, also when the client sent
    it as UTF-8 in an SMTPUTF8 transaction.
    """

    addr_type: str = attrs.field(validator=_check_addr_type)
    address: str = attrs.field(validator=_check_orcpt_address)

    def to_param(self) -> str:
        """The parameter value, xtext-encoded."""
        return f"{self.addr_type};{xtext_encode(self.address)}"


def _printable(value: str | None, what: str) -> str | None:
    if value is not None and not _PRINTABLE.fullmatch(value):
        raise ValueError(f"{what} must be printable ASCII: {value!r}")
    return value


def _check_extra(
    instance: object, _attribute: object, value: tuple[tuple[str, str | None], ...]
) -> None:
    # The typed fields have their own attributes: a second copy in ``extra``
    # would serialise to a command with a repeated keyword, which no server
    # (this package's parser included) accepts.
    typed = _MAIL_KEYWORDS if isinstance(instance, MailParams) else _RCPT_KEYWORDS
    seen: set[str] = set()
    for keyword, val in value:
        if not _KEYWORD.fullmatch(keyword) or keyword != keyword.upper():
            raise ValueError(f"bad ESMTP keyword {keyword!r}")
        if keyword in typed:
            raise ValueError(f"{keyword} has a field of its own, not in extra")
        if keyword in seen:
            raise ValueError(f"ESMTP keyword {keyword} given twice")
        seen.add(keyword)
        if val is not None and not _VALUE[True].fullmatch(val):
            raise ValueError(f"bad ESMTP value {val!r}")


def _to_extra(
    value: Iterable[tuple[str, str | None]],
) -> tuple[tuple[str, str | None], ...]:
    return tuple(value)


def _check_size(_instance: object, _attribute: object, value: int | None) -> None:
    if value is not None and not (0 <= value < 10**20):
        raise ValueError(f"SIZE out of range: {value}")


def _check_envid(_instance: object, _attribute: object, value: str | None) -> None:
    # RFC 5321 4.1.2: an esmtp-value has at least one character.
    if value == "":
        raise ValueError("ENVID cannot be empty")
    _printable(value, "ENVID")


def _check_auth(_instance: object, _attribute: object, value: str | None) -> None:
    if value == "":
        raise ValueError("AUTH= cannot be empty (use '<>' for no identity)")
    _printable(value, "AUTH=")


@attrs.frozen
class MailParams:
    """The parameters of a MAIL command, typed where this package knows them.

    ``extra`` holds every other parameter as (upper-case keyword, value or
    ``None``) in the order received; a server decides what to do with them
    (RFC 5321 4.1.1.11: 555 when it does not recognise them).
    """

    #: RFC 1870: the declared message size in octets.
    size: int | None = attrs.field(default=None, validator=_check_size)
    #: RFC 6152 / RFC 3030.
    body: BodyType | None = None
    #: RFC 6531 3.4.
    smtputf8: bool = False
    #: RFC 3461 4.3.
    ret: Ret | None = None
    #: RFC 3461 4.4, xtext-decoded.
    envid: str | None = attrs.field(default=None, validator=_check_envid)
    #: RFC 4954 5, xtext-decoded; ``"<>"`` for an unknown submitter.
    auth: str | None = attrs.field(default=None, validator=_check_auth)
    #: RFC 8689 4.
    requiretls: bool = False
    extra: tuple[tuple[str, str | None], ...] = attrs.field(
        default=(), converter=_to_extra, validator=_check_extra
    )
    _keywords: frozenset[str] | None = attrs.field(
        default=None, init=False, eq=False, hash=False, repr=False
    )

    def to_strings(self) -> list[str]:
        """The parameters as they appear on a MAIL command line."""
        out = []
        if self.size is not None:
            out.append(f"SIZE={self.size}")
        if self.body is not None:
            out.append(f"BODY={self.body.value}")
        if self.smtputf8:
            out.append("SMTPUTF8")
        if self.ret is not None:
            out.append(f"RET={self.ret.value}")
        if self.envid is not None:
            out.append(f"ENVID={xtext_encode(self.envid)}")
        if self.auth is not None:
            out.append(f"AUTH={self.auth if self.auth == '<>' else xtext_encode(self.auth)}")
        if self.requiretls:
            out.append("REQUIRETLS")
        out.extend(k if v is None else f"{k}={v}" for k, v in self.extra)
        return out

    @property
    def keywords(self) -> frozenset[str]:
        """Upper-case keywords of every parameter present."""
        keywords = self._keywords
        if keywords is None:
            present = {
                "SIZE": self.size is not None,
                "BODY": self.body is not None,
                "SMTPUTF8": self.smtputf8,
                "RET": self.ret is not None,
                "ENVID": self.envid is not None,
                "AUTH": self.auth is not None,
                "REQUIRETLS": self.requiretls,
            }
            keywords = frozenset([k for k, v in present.items() if v] + [k for k, _ in self.extra])
            # Asked on every MAIL a session checks or sends: computed once.
            object.__setattr__(self, "_keywords", keywords)
        return keywords


_MAIL_KEYWORDS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "REQUIRETLS"})
_RCPT_KEYWORDS = frozenset({"NOTIFY", "ORCPT"})


def _check_notify(_instance: object, _attribute: object, value: frozenset[Notify] | None) -> None:
    # RFC 3461 4.1: NEVER, or any combination of SUCCESS, FAILURE and DELAY.
    if value is not None and (not value or (Notify.NEVER in value and len(value) > 1)):
        raise ValueError(f"NOTIFY=NEVER cannot be combined: {value}")


def _to_notify(value: object) -> frozenset[Notify] | None:
    if value is None:
        return None
    assert isinstance(value, (set, frozenset, list, tuple))
    return frozenset(value)


_NOTIFY_ORDER = (Notify.NEVER, Notify.SUCCESS, Notify.FAILURE, Notify.DELAY)


@attrs.frozen
class RcptParams:
    """The parameters of an RCPT command (see :class:`MailParams`)."""

    #: RFC 3461 4.1; ``None`` when the client did not say.
    notify: frozenset[Notify] | None = attrs.field(
        default=None, converter=_to_notify, validator=_check_notify
    )
    #: RFC 3461 4.2.
    orcpt: OriginalRecipient | None = None
    extra: tuple[tuple[str, str | None], ...] = attrs.field(
        default=(), converter=_to_extra, validator=_check_extra
    )
    _keywords: frozenset[str] | None = attrs.field(
        default=None, init=False, eq=False, hash=False, repr=False
    )

    def to_strings(self) -> list[str]:
        """The parameters as they appear on an RCPT command line."""
        out = []
        if self.notify is not None:
            values = [n.value for n in _NOTIFY_ORDER if n in self.notify]
            out.append("NOTIFY=" + ",".join(values))
        if self.orcpt is not None:
            out.append(f"ORCPT={self.orcpt.to_param()}")
        out.extend(k if v is None else f"{k}={v}" for k, v in self.extra)
        return out

    @property
    def keywords(self) -> frozenset[str]:
        """Upper-case keywords of every parameter present."""
        keywords = self._keywords
        if keywords is None:
            present = [k for k, v in (("NOTIFY", self.notify), ("ORCPT", self.orcpt)) if v]
            keywords = frozenset(present + [k for k, _ in self.extra])
            object.__setattr__(self, "_keywords", keywords)
        return keywords


def split_params(text: str, *, utf8: bool) -> list[tuple[str, str | None]]:
    """Split ``KEY=VALUE KEY ...`` into pairs; keywords upper-cased.

    Raises :class:`~smtp_message.ParameterError` (501 5.5.4) on bad syntax or
    a repeated keyword.
    """
    pairs: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    for item in text.split(" "):
        if not item:
            # RFC 5321 says single SPs; tolerate runs of them.
            continue
        keyword, eq, value = item.partition("=")
        if not _KEYWORD.fullmatch(keyword):
            raise ParameterError(ARGUMENT_SYNTAX, f"bad parameter keyword {keyword!r}")
        if eq and not _VALUE[utf8].fullmatch(value):
            raise ParameterError(ARGUMENT_SYNTAX, f"bad value for {keyword.upper()}")
        keyword = keyword.upper()
        if keyword in seen:
            raise ParameterError(ARGUMENT_SYNTAX, f"duplicate parameter {keyword}")
        seen.add(keyword)
        pairs.append((keyword, value if eq else None))
    return pairs


def _need_value(keyword: str, value: str | None) -> str:
    if value is None:
        raise ParameterError(ARGUMENT_SYNTAX, f"{keyword} needs a value")
    return value


def _no_value(keyword: str, value: str | None) -> None:
    if value is not None:
        raise ParameterError(ARGUMENT_SYNTAX, f"{keyword} takes no value")


_E = TypeVar("_E", bound=enum.Enum)


def _enum_value(cls: type[_E], keyword: str, value: str | None) -> _E:
    try:
        return cls(_need_value(keyword, value).upper())
    except ValueError:
        raise ParameterError(ARGUMENT_SYNTAX, f"bad value for {keyword}") from None


def _xtext_value(keyword: str, value: str | None) -> str:
    try:
        decoded = xtext_decode(_need_value(keyword, value))
    except ValueError:
        raise ParameterError(ARGUMENT_SYNTAX, f"bad xtext in {keyword}") from None
    if not _PRINTABLE.fullmatch(decoded):
        raise ParameterError(ARGUMENT_SYNTAX, f"control character in {keyword}")
    return decoded


def _unitext_to_xtext(addr_type: str, address: str) -> str:
    # RFC 6533 3: in an SMTPUTF8 transaction, a "utf-8" ORCPT may carry
    # UTF-8 as it is (utf-8-addr-unitext); without SMTPUTF8 it must be
    # utf-8-addr-xtext, ASCII with each other character as "\x{HEX}".  The
    # address is kept in the ASCII form, whichever arrived, so it can be
    # relayed and written into a DSN as it stands.  Other address types are
    # xtext, ASCII only (RFC 3461 4.2).
    if addr_type.lower() != "utf-8":
        raise ParameterError(ARGUMENT_SYNTAX, "non-ASCII ORCPT needs the utf-8 address type")
    return "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in address)


_NO_MAIL_PARAMS = MailParams()
_NO_RCPT_PARAMS = RcptParams()


def parse_mail_params(text: str, *, utf8: bool = True) -> MailParams:
    """Parse the parameters after a MAIL path."""
    if not text or text.isspace():
        return _NO_MAIL_PARAMS
    fields: dict[str, object] = {}
    extra: list[tuple[str, str | None]] = []
    for keyword, value in split_params(text, utf8=utf8):
        if keyword == "SIZE":
            # RFC 1870 3:  size-value ::= 1*20DIGIT
            v = _need_value(keyword, value)
            if not (v.isascii() and v.isdigit() and len(v) <= 20):
                raise ParameterError(ARGUMENT_SYNTAX, "bad value for SIZE")
            fields["size"] = int(v)
        elif keyword == "BODY":
            fields["body"] = _enum_value(BodyType, keyword, value)
        elif keyword == "SMTPUTF8":
            _no_value(keyword, value)
            fields["smtputf8"] = True
        elif keyword == "RET":
            fields["ret"] = _enum_value(Ret, keyword, value)
        elif keyword == "ENVID":
            fields["envid"] = _xtext_value(keyword, value)
        elif keyword == "AUTH":
            v = _need_value(keyword, value)
            fields["auth"] = "<>" if v == "<>" else _xtext_value(keyword, v)
        elif keyword == "REQUIRETLS":
            _no_value(keyword, value)
            fields["requiretls"] = True
        else:
            extra.append((keyword, value))
    return MailParams(extra=tuple(extra), **fields)  # type: ignore[arg-type]


def parse_rcpt_params(text: str, *, utf8: bool = True) -> RcptParams:
    """Parse the parameters after an RCPT path."""
    if not text or text.isspace():
        return _NO_RCPT_PARAMS
    notify: frozenset[Notify] | None = None
    orcpt: OriginalRecipient | None = None
    extra: list[tuple[str, str | None]] = []
    for keyword, value in split_params(text, utf8=utf8):
        if keyword == "NOTIFY":
            try:
                items = [Notify(v.upper()) for v in _need_value(keyword, value).split(",")]
            except ValueError:
                raise ParameterError(ARGUMENT_SYNTAX, "bad value for NOTIFY") from None
            notify = frozenset(items)
            if len(notify) != len(items) or (Notify.NEVER in notify and len(notify) > 1):
                raise ParameterError(ARGUMENT_SYNTAX, "bad value for NOTIFY")
        elif keyword == "ORCPT":
            # RFC 3461 4.2:  orcpt-parameter = "ORCPT=" original-recipient-address
            #   original-recipient-address = addr-type ";" xtext
            addr_type, semi, address = _need_value(keyword, value).partition(";")
            if not semi or not _KEYWORD.fullmatch(addr_type):
                raise ParameterError(ARGUMENT_SYNTAX, "bad value for ORCPT")
            if not address.isascii():
                address = _unitext_to_xtext(addr_type, address)
            orcpt = OriginalRecipient(addr_type, _xtext_value(keyword, address))
        else:
            extra.append((keyword, value))
    return RcptParams(notify=notify, orcpt=orcpt, extra=tuple(extra))
