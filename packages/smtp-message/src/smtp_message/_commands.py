"""Commands: the values, their serialisation, and the command-line parser."""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, ClassVar

import attrs

from ._address import DEFAULT_POLICY, AddressPolicy, Mailbox, parse_path, split_path
from ._errors import AddressError, CommandSyntaxError
from ._params import MailParams, RcptParams, parse_mail_params, parse_rcpt_params
from ._replies import (
    ADDRESS_SYNTAX,
    ARGUMENT_SYNTAX,
    AUTH_BAD_BASE64,
    BDAT_SIZE_UNREADABLE,
    COMMAND_UNRECOGNIZED,
    EIGHT_BIT_COMMAND,
    NO_ARGUMENTS_ALLOWED,
    NON_ASCII_ADDRESS,
    PATH_TOO_LONG,
    SENDER_PATH_TOO_LONG,
    SENDER_SYNTAX,
    SYNTAX_ERROR,
)

if TYPE_CHECKING:
    from ._reply import Reply

__all__ = [
    "Auth",
    "AuthResponse",
    "Bdat",
    "Command",
    "Data",
    "Ehlo",
    "Expn",
    "Helo",
    "Help",
    "Lhlo",
    "MailFrom",
    "Noop",
    "Quit",
    "RcptTo",
    "Rset",
    "StartTls",
    "Vrfy",
    "parse_auth_response",
    "parse_command",
]

# Printable ASCII without leading or trailing space: the free-text arguments
# of HELO/EHLO, NOOP, HELP, VRFY and EXPN.
_ARGUMENT = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
# RFC 4954 4:  sasl-mech = 1*20mech-char
#   mech-char = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
_SASL_MECH = re.compile(r"[A-Z0-9_-]{1,20}")
# RFC 5321 2.4: commands are ASCII; a control character in one is an error.
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_BDAT_SIZE = re.compile(r"[0-9]{1,20}")


def _check_argument(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _ARGUMENT.fullmatch(value):
        raise ValueError(f"{attribute.name} must be printable ASCII: {value!r}")


def _check_name(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    _check_argument(instance, attribute, value)
    if not value or " " in value:
        raise ValueError(f"{attribute.name} must be one non-empty word: {value!r}")


@attrs.frozen
class Command:
    """Base class of the commands a client sends."""

    verb: ClassVar[str] = ""

    def to_bytes(self) -> bytes:
        """Serialise as the client sends it, CRLF included."""
        args = self._arguments()
        line = f"{self.verb} {args}\r\n" if args else f"{self.verb}\r\n"
        return line.encode("utf-8")

    def _arguments(self) -> str:
        return ""


@attrs.frozen
class Helo(Command):
    """``HELO domain`` (RFC 5321 4.1.1.1)."""

    verb: ClassVar[str] = "HELO"
    domain: str = attrs.field(validator=[attrs.validators.instance_of(str), _check_name])

    def _arguments(self) -> str:
        return self.domain


@attrs.frozen
class Ehlo(Command):
    """``EHLO domain`` (RFC 5321 4.1.1.1): asks for the service extensions."""

    verb: ClassVar[str] = "EHLO"
    domain: str = attrs.field(validator=[attrs.validators.instance_of(str), _check_name])

    def _arguments(self) -> str:
        return self.domain


@attrs.frozen
class Lhlo(Command):
    """``LHLO domain`` (RFC 2033 4.1): LMTP's EHLO."""

    verb: ClassVar[str] = "LHLO"
    domain: str = attrs.field(validator=[attrs.validators.instance_of(str), _check_name])

    def _arguments(self) -> str:
        return self.domain


@attrs.frozen
class MailFrom(Command):
    """``MAIL FROM:<reverse-path> [params]`` (RFC 5321 4.1.1.2).

    ``reverse_path`` is ``None`` for the null path ``<>`` (bounces).
    """

    verb: ClassVar[str] = "MAIL"
    reverse_path: Mailbox | None
    params: MailParams = attrs.field(factory=MailParams)

    def to_bytes(self) -> bytes:
        """Serialise as the client sends it, CRLF included."""
        path = "<>" if self.reverse_path is None else self.reverse_path.to_path()
        parts = [f"MAIL FROM:{path}", *self.params.to_strings()]
        return (" ".join(parts) + "\r\n").encode("utf-8")


@attrs.frozen
class RcptTo(Command):
    """``RCPT TO:<forward-path> [params]`` (RFC 5321 4.1.1.3)."""

    verb: ClassVar[str] = "RCPT"
    forward_path: Mailbox
    params: RcptParams = attrs.field(factory=RcptParams)

    def to_bytes(self) -> bytes:
        """Serialise as the client sends it, CRLF included."""
        parts = [f"RCPT TO:{self.forward_path.to_path()}", *self.params.to_strings()]
        return (" ".join(parts) + "\r\n").encode("utf-8")


@attrs.frozen
class Data(Command):
    """``DATA`` (RFC 5321 4.1.1.4)."""

    verb: ClassVar[str] = "DATA"


def _check_bdat_size(_instance: object, _attribute: object, value: int) -> None:
    if not 0 <= value < 10**20:
        raise ValueError(f"BDAT size out of range: {value!r}")


@attrs.frozen
class Bdat(Command):
    """``BDAT size [LAST]`` (RFC 3030 2): ``size`` octets of message follow."""

    verb: ClassVar[str] = "BDAT"
    size: int = attrs.field(validator=[attrs.validators.instance_of(int), _check_bdat_size])
    last: bool = False

    def _arguments(self) -> str:
        return f"{self.size} LAST" if self.last else str(self.size)


@attrs.frozen
class Rset(Command):
    """``RSET`` (RFC 5321 4.1.1.5): abort the transaction."""

    verb: ClassVar[str] = "RSET"


@attrs.frozen
class Noop(Command):
    """``NOOP [string]`` (RFC 5321 4.1.1.9)."""

    verb: ClassVar[str] = "NOOP"
    text: str = attrs.field(
        default="", validator=[attrs.validators.instance_of(str), _check_argument]
    )

    def _arguments(self) -> str:
        return self.text


@attrs.frozen
class Quit(Command):
    """``QUIT`` (RFC 5321 4.1.1.10)."""

    verb: ClassVar[str] = "QUIT"


@attrs.frozen
class Vrfy(Command):
    """``VRFY string`` (RFC 5321 4.1.1.6)."""

    verb: ClassVar[str] = "VRFY"
    text: str = attrs.field(validator=[attrs.validators.instance_of(str), _check_argument])

    def _arguments(self) -> str:
        return self.text


@attrs.frozen
class Expn(Command):
    """``EXPN string`` (RFC 5321 4.1.1.7)."""

    verb: ClassVar[str] = "EXPN"
    text: str = attrs.field(validator=[attrs.validators.instance_of(str), _check_argument])

    def _arguments(self) -> str:
        return self.text


@attrs.frozen
class Help(Command):
    """``HELP [string]`` (RFC 5321 4.1.1.8)."""

    verb: ClassVar[str] = "HELP"
    text: str = attrs.field(
        default="", validator=[attrs.validators.instance_of(str), _check_argument]
    )

    def _arguments(self) -> str:
        return self.text


@attrs.frozen
class StartTls(Command):
    """``STARTTLS`` (RFC 3207 4)."""

    verb: ClassVar[str] = "STARTTLS"


def _redact(value: bytes | None) -> str:
    return "None" if value is None else f"<{len(value)} octets redacted>"


def _upper(value: str) -> str:
    return value.upper()


def _check_mechanism(_instance: object, _attribute: object, value: str) -> None:
    if not _SASL_MECH.fullmatch(value):
        raise ValueError(f"not a SASL mechanism name: {value!r}")


@attrs.frozen
class Auth(Command):
    """``AUTH mechanism [initial-response]`` (RFC 4954 4).

    ``initial_response`` is the decoded response (``b""`` for ``=``), or
    ``None`` when the client sent none.  It holds credentials, so it never
    appears in ``repr()``.
    """

    verb: ClassVar[str] = "AUTH"
    mechanism: str = attrs.field(converter=_upper, validator=_check_mechanism)
    initial_response: bytes | None = attrs.field(default=None, repr=_redact)

    def _arguments(self) -> str:
        if self.initial_response is None:
            return self.mechanism
        encoded = base64.b64encode(self.initial_response).decode("ascii") or "="
        return f"{self.mechanism} {encoded}"


@attrs.frozen
class AuthResponse:
    """A client's answer to a 334 challenge (RFC 4954 4).

    ``data`` is the decoded response, or ``None`` for ``*`` (the client
    cancels the exchange).  Never shown by ``repr()``.
    """

    data: bytes | None = attrs.field(repr=_redact)

    def to_bytes(self) -> bytes:
        """Serialise as the client sends it, CRLF included."""
        if self.data is None:
            return b"*\r\n"
        return base64.b64encode(self.data) + b"\r\n"


def _decode_line(line: bytes, verb: str) -> str:
    if _CONTROL.search(line):
        raise CommandSyntaxError(EIGHT_BIT_COMMAND)
    if line.isascii():
        return line.decode("ascii")
    # RFC 6531 3.3: UTF-8 may appear in the paths and parameters of MAIL and
    # RCPT; everywhere else 8-bit octets are an error (RFC 5321 2.4).
    if verb not in ("MAIL", "RCPT"):
        raise CommandSyntaxError(EIGHT_BIT_COMMAND)
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandSyntaxError(EIGHT_BIT_COMMAND) from None


def _no_arguments(cls: type[Command], args: str) -> Command:
    if args:
        raise CommandSyntaxError(NO_ARGUMENTS_ALLOWED)
    return cls()


def _path_argument(args: str, prefix: str) -> str | None:
    # RFC 5321 4.1.1.2: "MAIL FROM:" with no space before the path; a space
    # after the colon is a common deviation, accepted as Postfix does.
    if args[: len(prefix)].upper() != prefix:
        return None
    return args[len(prefix) :].lstrip(" ")


def _parse_mail(args: str, policy: AddressPolicy) -> MailFrom:
    rest = _path_argument(args, "FROM:")
    if rest is None:
        raise CommandSyntaxError(ARGUMENT_SYNTAX, "Syntax: MAIL FROM:<address>")
    try:
        path, param_text = split_path(rest)
    except AddressError:
        raise AddressError(SENDER_SYNTAX) from None
    if param_text and not param_text.startswith(" "):
        raise CommandSyntaxError(ARGUMENT_SYNTAX)
    params = parse_mail_params(param_text, utf8=True)
    utf8 = params.smtputf8
    if not utf8 and not path.isascii():
        raise AddressError(NON_ASCII_ADDRESS)
    if not utf8 and not param_text.isascii():
        raise CommandSyntaxError(EIGHT_BIT_COMMAND)
    try:
        reverse_path = parse_path(path, utf8=utf8, policy=policy, null_ok=True)
    except AddressError as exc:
        reply = SENDER_PATH_TOO_LONG if exc.reply is PATH_TOO_LONG else SENDER_SYNTAX
        raise AddressError(reply, str(exc)) from None
    return MailFrom(reverse_path, params)


def _parse_rcpt(args: str, policy: AddressPolicy, utf8: bool) -> RcptTo:
    rest = _path_argument(args, "TO:")
    if rest is None:
        raise CommandSyntaxError(ARGUMENT_SYNTAX, "Syntax: RCPT TO:<address>")
    path, param_text = split_path(rest)
    if param_text and not param_text.startswith(" "):
        raise CommandSyntaxError(ARGUMENT_SYNTAX)
    if not utf8 and not path.isascii():
        raise AddressError(NON_ASCII_ADDRESS)
    if not utf8 and not param_text.isascii():
        raise CommandSyntaxError(EIGHT_BIT_COMMAND)
    params = parse_rcpt_params(param_text, utf8=utf8)
    forward_path = parse_path(path, utf8=utf8, policy=policy, postmaster_ok=True)
    assert forward_path is not None
    return RcptTo(forward_path, params)


class ChunkSyntaxError(CommandSyntaxError):
    """A BDAT line whose chunk size parses but not the rest of it.

    Its chunk follows the line all the same (RFC 3030 2): ``size`` octets
    to skip, which must never be read as commands.
    """

    def __init__(self, reply: Reply, message: str, size: int) -> None:
        super().__init__(reply, message)
        self.size = size


def _parse_bdat(args: str) -> Bdat:
    # RFC 3030 2:  bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ] CR LF
    size, _, marker = args.partition(" ")
    if not _BDAT_SIZE.fullmatch(size):
        raise CommandSyntaxError(BDAT_SIZE_UNREADABLE)
    if marker.upper() not in ("", "LAST"):
        raise ChunkSyntaxError(ARGUMENT_SYNTAX, "Syntax: BDAT size [LAST]", int(size))
    return Bdat(int(size), bool(marker))


def _parse_auth(args: str) -> Auth:
    mechanism, _, response = args.partition(" ")
    mechanism = mechanism.upper()
    if not _SASL_MECH.fullmatch(mechanism) or " " in response:
        raise CommandSyntaxError(ARGUMENT_SYNTAX, "Syntax: AUTH mechanism [response]")
    if not response:
        return Auth(mechanism)
    return Auth(mechanism, _decode_base64(response))


def _decode_base64(text: str) -> bytes:
    # RFC 4954 4: "=" is a zero-length initial response.
    if text == "=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandSyntaxError(AUTH_BAD_BASE64) from None


def _parse_text(cls: type[Noop | Help | Vrfy | Expn], args: str, required: bool) -> Command:
    args = args.strip(" \t")
    if required and not args:
        raise CommandSyntaxError(ARGUMENT_SYNTAX, f"Syntax: {cls.verb} string")
    return cls(args)


def _parse_hello(cls: type[Helo | Ehlo | Lhlo], args: str) -> Command:
    name = args.strip(" \t")
    if not name or " " in name or "\t" in name:
        raise CommandSyntaxError(ARGUMENT_SYNTAX, f"Syntax: {cls.verb} hostname")
    return cls(name)


def parse_command(
    line: bytes,
    *,
    utf8: bool = False,
    policy: AddressPolicy = DEFAULT_POLICY,
) -> Command:
    """Parse one command line (without its CRLF).

    ``utf8`` says whether the current mail transaction was opened with
    SMTPUTF8, which lets RCPT carry UTF-8 (RFC 6531 3.4); a MAIL command
    allows UTF-8 when it carries the SMTPUTF8 parameter itself.  Verbs are
    case-insensitive (RFC 5321 2.4).

    Raises a :class:`~smtp_message.RemoteProtocolError` subclass whose
    ``reply`` is the answer: an unknown verb is ``500 5.5.1`` and is never
    echoed back.
    """
    # Nine octets: the longest verb (STARTTLS) and what follows it, so that
    # "STARTTLSX" is an unknown verb, not STARTTLS (RFC 5321 4.1.1: a verb
    # ends at SP or CRLF).
    verb = line[:9].split(b" ", 1)[0].decode("ascii", errors="replace").upper()
    text = _decode_line(line, verb)
    _, _, args = text.partition(" ")
    if verb == "MAIL":
        return _parse_mail(args, policy)
    if verb == "RCPT":
        return _parse_rcpt(args, policy, utf8)
    parser = _SIMPLE.get(verb)
    if parser is None:
        raise CommandSyntaxError(COMMAND_UNRECOGNIZED)
    return parser(args.rstrip(" \t"))


_SIMPLE = {
    "HELO": lambda a: _parse_hello(Helo, a),
    "EHLO": lambda a: _parse_hello(Ehlo, a),
    "LHLO": lambda a: _parse_hello(Lhlo, a),
    "DATA": lambda a: _no_arguments(Data, a),
    "RSET": lambda a: _no_arguments(Rset, a),
    "QUIT": lambda a: _no_arguments(Quit, a),
    "STARTTLS": lambda a: _no_arguments(StartTls, a),
    "NOOP": lambda a: _parse_text(Noop, a, required=False),
    "HELP": lambda a: _parse_text(Help, a, required=False),
    "VRFY": lambda a: _parse_text(Vrfy, a, required=True),
    "EXPN": lambda a: _parse_text(Expn, a, required=True),
    "BDAT": _parse_bdat,
    "AUTH": _parse_auth,
}


def parse_auth_response(line: bytes) -> AuthResponse:
    """Parse a client's answer to a 334 challenge (RFC 4954 4)."""
    if line == b"*":
        return AuthResponse(None)
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise CommandSyntaxError(AUTH_BAD_BASE64) from None
    return AuthResponse(_decode_base64(text) if text else b"")


# Address errors in RCPT say "recipient"; the base AddressError default.
assert ADDRESS_SYNTAX.code == 501
assert SYNTAX_ERROR.code == 501
