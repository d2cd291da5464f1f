"""Mailboxes and paths: RFC 5321 4.1.2 and 4.1.3, with RFC 6531 3.3."""

from __future__ import annotations

import re

import attrs
import idna

from ._errors import AddressError
from ._limits import MAX_DOMAIN, MAX_LABEL, MAX_LOCAL_PART, MAX_PATH
from ._replies import ADDRESS_SYNTAX, PATH_TOO_LONG

__all__ = ["AddressPolicy", "Mailbox", "parse_path"]

# RFC 5322 3.2.3 (as used by RFC 5321 4.1.2):
#   atext = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" /
#           "-" / "/" / "=" / "?" / "^" / "_" / "`" / "{" / "|" / "}" / "~"
# RFC 6531 3.3:  atext =/ UTF8-non-ascii
# UTF8-non-ascii is read here as any non-ASCII character except the C1
# controls (U+0080-U+009F): a control character never reaches a hook.
# Lone surrogates (U+D800-U+DFFF) are not characters and have no UTF-8 form.
_ATEXT_ASCII = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_NON_ASCII = r"\u00a0-\ud7ff\ue000-\U0010ffff"
# RFC 5321 4.1.2:
#   Dot-string = Atom *("."  Atom)
#   Atom       = 1*atext
_DOT_STRING = {
    False: re.compile(rf"[{_ATEXT_ASCII}]+(?:\.[{_ATEXT_ASCII}]+)*"),
    True: re.compile(rf"[{_ATEXT_ASCII}{_NON_ASCII}]+(?:\.[{_ATEXT_ASCII}{_NON_ASCII}]+)*"),
}
# RFC 5321 4.1.2:
#   Quoted-string   = DQUOTE *QcontentSMTP DQUOTE
#   QcontentSMTP    = qtextSMTP / quoted-pairSMTP
#   quoted-pairSMTP = %d92 %d32-126
#   qtextSMTP       = %d32-33 / %d35-91 / %d93-126
# RFC 6531 3.3:  qtextSMTP =/ UTF8-non-ascii
_QUOTED = {
    False: re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*)"'),
    True: re.compile(rf'"((?:[\x20\x21\x23-\x5b\x5d-\x7e{_NON_ASCII}]|\\[\x20-\x7e])*)"'),
}
# What a local part may contain at all, once unquoted.
_LOCAL_CHARS = {
    False: re.compile(r"[\x20-\x7e]*"),
    True: re.compile(rf"[\x20-\x7e{_NON_ASCII}]*"),
}
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPE = re.compile(r'(["\\])')

# RFC 5321 4.1.2:
#   Domain     = sub-domain *("." sub-domain)
#   sub-domain = Let-dig [Ldh-str]
#   Let-dig    = ALPHA / DIGIT
#   Ldh-str    = *( ALPHA / DIGIT / "-" ) Let-dig
_LDH_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_ASCII = re.compile(r"[\x00-\x7f]*")

# RFC 5321 4.1.3:
#   IPv4-address-literal    = Snum 3("."  Snum)
#   IPv6-address-literal    = "IPv6:" IPv6-addr
#   General-address-literal = Standardized-tag ":" 1*dcontent
#   Standardized-tag        = Ldh-str
#   dcontent                = %d33-90 / %d94-126
#   Snum                    = 1*3DIGIT  ; 0 through 255
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
_IPV6_CHARS = re.compile(r"[0-9A-Fa-f:.]+")
_IPV6_HEX = re.compile(r"[0-9A-Fa-f]{1,4}")
_GENERAL = re.compile(r"([A-Za-z0-9-]*[A-Za-z0-9]):([\x21-\x5a\x5e-\x7e]+)")


@attrs.frozen
class AddressPolicy:
    """Length limits for addresses (RFC 5321 4.5.3.1).

    The RFC's figures are the defaults.  Real mail sometimes exceeds the
    local-part limit (long VERP or SRS addresses), so a receiver may relax
    them; the RFC itself asks servers to accept what they can (4.5.3.1).
    """

    max_local_part: int = MAX_LOCAL_PART
    max_domain: int = MAX_DOMAIN
    max_path: int = MAX_PATH


DEFAULT_POLICY = AddressPolicy()


def _is_ascii(text: str) -> bool:
    return text.isascii()


def check_domain(domain: str, *, utf8: bool) -> None:
    """Raise :class:`ValueError` unless ``domain`` is a Domain or address-literal."""
    if domain.startswith("["):
        _check_address_literal(domain)
        return
    if not domain:
        raise ValueError("empty domain")
    labels = domain.split(".")
    non_ascii = not domain.isascii()
    if non_ascii and not utf8:
        raise ValueError(f"non-ASCII domain without SMTPUTF8: {domain!r}")
    for label in labels:
        if label.isascii():
            if not _LDH_LABEL.fullmatch(label) or len(label) > MAX_LABEL:
                raise ValueError(f"invalid domain label {label!r} in {domain!r}")
        else:
            # RFC 6531 3.3:  sub-domain =/ U-label  (RFC 5890 2.3.2.1)
            try:
                alabel = idna.alabel(label)
            except (idna.IDNAError, UnicodeError) as exc:
                raise ValueError(f"invalid U-label {label!r}: {exc}") from None
            if len(alabel) > MAX_LABEL:
                raise ValueError(f"domain label too long: {label!r}")


def _is_ipv4_literal(text: str) -> bool:
    m = _IPV4.fullmatch(text)
    return m is not None and all(int(part) <= 255 for part in m.groups())


def _is_ipv6_addr(text: str) -> bool:
    """RFC 5321 4.1.3 ``IPv6-addr``, exactly.

    Stricter than RFC 4291 text forms in two ways the SMTP grammar states:
    "::" stands for at least two groups (no more than 6 groups beside it,
    4 before an IPv4 tail), and an IPv4 tail is ``Snum`` (leading zeros
    allowed, as in an IPv4 literal).
    """
    if text.count("::") > 1:
        return False
    compressed = "::" in text
    left, right = text.split("::") if compressed else (text, "")
    groups = (left.split(":") if left else []) + (right.split(":") if right else [])
    ipv4 = bool(groups) and "." in groups[-1]
    # The IPv4 tail comes last: after "::" when there is one.
    tail_ok = bool(right) if compressed else True
    if ipv4 and not (tail_ok and _is_ipv4_literal(groups.pop())):
        return False
    if not all(_IPV6_HEX.fullmatch(group) for group in groups):
        return False
    if compressed:
        return len(groups) <= (4 if ipv4 else 6)
    return len(groups) == (6 if ipv4 else 8)


def _check_address_literal(literal: str) -> None:
    if not (literal.startswith("[") and literal.endswith("]")) or len(literal) < 3:
        raise ValueError(f"malformed address literal {literal!r}")
    inner = literal[1:-1]
    if _IPV4.fullmatch(inner):
        if not _is_ipv4_literal(inner):
            raise ValueError(f"IPv4 literal out of range: {literal!r}")
        return
    tag, colon, rest = inner.partition(":")
    if not colon:
        raise ValueError(f"malformed address literal {literal!r}")
    if tag.lower() == "ipv6":
        if not (_IPV6_CHARS.fullmatch(rest) and _is_ipv6_addr(rest)):
            raise ValueError(f"malformed IPv6 literal {literal!r}")
        return
    if not _GENERAL.fullmatch(inner):
        raise ValueError(f"malformed address literal {literal!r}")


def _check_local_part(_instance: object, _attribute: object, value: str) -> None:
    if not _LOCAL_CHARS[True].fullmatch(value):
        raise ValueError(f"control character in local part: {value!r}")


@attrs.frozen
class Mailbox:
    r"""An address: ``local_part@domain`` (RFC 5321 4.1.2 ``Mailbox``).

    ``local_part`` holds the unquoted value: ``"a b"@example.com`` parses to
    ``Mailbox("a b", "example.com")`` and serialises back with the quotes.
    It may be empty: ``""@example.com`` is a Quoted-string with no
    QcontentSMTP (RFC 5321 4.1.2), and serialises with its quotes.
    ``domain`` is a domain name or an address literal with its brackets
    (``"[192.0.2.1]"``, ``"[IPv6:2001:db8::1]"``); it is ``None`` only for
    the special recipient ``<Postmaster>`` (RFC 5321 4.1.1.3).

    Construction checks the grammar, so a ``Mailbox`` never holds a control
    character: ``Mailbox("a\\rb", "example.com")`` raises ``ValueError``.
    Comparison is exact; domains compare case-sensitively here, use
    :meth:`domain_key` to compare them as DNS does.
    """

    local_part: str = attrs.field(validator=_check_local_part)
    domain: str | None

    def __attrs_post_init__(self) -> None:
        if self.domain is None:
            if self.local_part.lower() != "postmaster":
                raise ValueError("only Postmaster may have no domain")
            return
        check_domain(self.domain, utf8=True)

    @classmethod
    def _trusted(cls, local_part: str, domain: str | None) -> Mailbox:
        """Build from parts the parser has already checked (no second check)."""
        mailbox = object.__new__(cls)
        object.__setattr__(mailbox, "local_part", local_part)
        object.__setattr__(mailbox, "domain", domain)
        return mailbox

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        utf8: bool = True,
        policy: AddressPolicy = DEFAULT_POLICY,
    ) -> Mailbox:
        """Parse ``local-part@domain`` (no angle brackets).

        With ``utf8`` false, only ASCII is accepted (a session without
        SMTPUTF8).  Raises :class:`~smtp_message.AddressError`.
        """
        return _parse_mailbox(text, utf8=utf8, policy=policy, postmaster=False)

    @property
    def is_postmaster(self) -> bool:
        """True for ``<Postmaster>`` without a domain."""
        return self.domain is None

    @property
    def needs_smtputf8(self) -> bool:
        """True if the address has non-ASCII characters (RFC 6531)."""
        return not (self.local_part.isascii() and (self.domain or "").isascii())

    @property
    def is_address_literal(self) -> bool:
        """True if the domain is an address literal such as ``[192.0.2.1]``."""
        return self.domain is not None and self.domain.startswith("[")

    def domain_key(self) -> str:
        """The domain as DNS compares it: lower case, A-labels for U-labels."""
        if self.domain is None or self.is_address_literal:
            return (self.domain or "").lower()
        if self.domain.isascii():
            return self.domain.lower()
        return idna.encode(self.domain, uts46=True).decode("ascii")

    def local_part_text(self) -> str:
        """The local part as it appears in a path: quoted when it must be."""
        utf8 = not self.local_part.isascii()
        if _DOT_STRING[utf8].fullmatch(self.local_part):
            return self.local_part
        return '"' + _ESCAPE.sub(r"\\\1", self.local_part) + '"'

    def __str__(self) -> str:
        if self.domain is None:
            return self.local_part
        return f"{self.local_part_text()}@{self.domain}"

    def to_path(self) -> str:
        """The address in angle brackets, as in MAIL and RCPT commands."""
        return f"<{self}>"


def _parse_mailbox(text: str, *, utf8: bool, policy: AddressPolicy, postmaster: bool) -> Mailbox:
    if not utf8 and not _is_ascii(text):
        raise AddressError(ADDRESS_SYNTAX, f"non-ASCII address: {text!r}")
    if postmaster and text.lower() == "postmaster":
        return Mailbox._trusted(text, None)
    if text.startswith('"'):
        # RFC 5321 4.1.2:  Quoted-string = DQUOTE *QcontentSMTP DQUOTE
        # (so '""' is a local part: an empty one).
        m = _QUOTED[utf8].match(text)
        if m is None:
            raise AddressError(ADDRESS_SYNTAX, f"malformed quoted local part: {text!r}")
        local = _UNESCAPE.sub(r"\1", m[1])
        wire_end = m.end()
    else:
        # A Dot-string has no "@"; the domain may (a general address
        # literal's dcontent includes it), so the first "@" is the one.
        wire_end = text.find("@")
        if wire_end <= 0:
            raise AddressError(ADDRESS_SYNTAX, f"no local part or domain: {text!r}")
        local = text[:wire_end]
        if not _DOT_STRING[utf8].fullmatch(local):
            raise AddressError(ADDRESS_SYNTAX, f"malformed local part: {text!r}")
    rest = text[wire_end:]
    if not rest.startswith("@") or len(rest) < 2:
        raise AddressError(ADDRESS_SYNTAX, f"missing domain: {text!r}")
    domain = rest[1:]
    # RFC 5321 4.5.3.1.1: the limit is on the local-part of the grammar,
    # i.e. as sent: a Quoted-string counts its quotes and backslashes.
    if len(text[:wire_end].encode("utf-8")) > policy.max_local_part:
        raise AddressError(PATH_TOO_LONG, f"local part too long: {text!r}")
    if len(domain.encode("utf-8")) > policy.max_domain:
        raise AddressError(PATH_TOO_LONG, f"domain too long: {text!r}")
    try:
        check_domain(domain, utf8=utf8)
    except ValueError as exc:
        raise AddressError(ADDRESS_SYNTAX, str(exc)) from None
    # All Mailbox.__init__ would check is checked above: the local part
    # matched the Dot-string or Quoted-string grammar (no control character,
    # no lone surrogate), and the domain is valid.
    return Mailbox._trusted(local, domain)


def split_path(argument: str) -> tuple[str, str]:
    """Split ``<path> params`` into the path (with brackets) and the rest.

    A quoted local part may contain ``>``, and so may an address literal
    (RFC 5321 4.1.3: dcontent is %d33-90 / %d94-126), so the end of the path
    is found by scanning, not by searching.
    """
    if not argument.startswith("<"):
        raise AddressError(ADDRESS_SYNTAX, "the address must be in angle brackets")
    if '"' not in argument and "[" not in argument:
        # Neither a quoted local part nor an address literal: the first ">"
        # ends the path (the common case, without the scan below).
        end = argument.find(">")
        if end != -1 and "<" not in argument[1:end]:
            return argument[: end + 1], argument[end + 1 :]
        raise AddressError(ADDRESS_SYNTAX, "unterminated path")
    in_quotes = in_literal = False
    i = 1
    n = len(argument)
    while i < n:
        c = argument[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif in_literal:
            # dcontent excludes "[", "\" and "]": nothing nests or escapes.
            in_literal = c != "]"
        elif c == '"':
            in_quotes = True
        elif c == "[":
            in_literal = True
        elif c == ">":
            return argument[: i + 1], argument[i + 1 :]
        elif c == "<":
            break
        i += 1
    raise AddressError(ADDRESS_SYNTAX, "unterminated path")


def parse_path(
    path: str,
    *,
    utf8: bool = False,
    policy: AddressPolicy = DEFAULT_POLICY,
    null_ok: bool = False,
    postmaster_ok: bool = False,
) -> Mailbox | None:
    """Parse a path with its angle brackets, e.g. ``<a@example.com>``.

    Returns ``None`` for the null path ``<>`` when ``null_ok`` (a
    reverse-path).  A source route (``<@a.example,@b.example:c@d.example>``)
    is checked and discarded (RFC 5321 4.1.1.3 and appendix C).  The check
    is strict: a hop is an At-domain, ``"@" Domain`` (RFC 5321 4.1.2), so a
    hop that is an address literal (``<@[192.0.2.1]:c@d.example>``,
    ``<@[IPv6:::1]:c@d.example>``) is refused with 501 like any other
    malformed route.
    ``<Postmaster>`` without a domain is accepted when ``postmaster_ok``.
    Raises :class:`~smtp_message.AddressError`.
    """
    if len(path.encode("utf-8")) > policy.max_path:
        raise AddressError(PATH_TOO_LONG, "path too long")
    if len(path) < 2 or path[0] != "<" or path[-1] != ">":
        raise AddressError(ADDRESS_SYNTAX, "the address must be in angle brackets")
    inner = path[1:-1]
    if not inner:
        if null_ok:
            return None
        raise AddressError(ADDRESS_SYNTAX, "empty address")
    if inner.startswith("@"):
        # RFC 5321 4.1.2:  A-d-l = At-domain *( "," At-domain )
        #                  At-domain = "@" Domain
        # "SMTP servers MUST ... ignore the route information" (4.1.1.3 and C)
        route, colon, inner = inner.partition(":")
        if not colon:
            raise AddressError(ADDRESS_SYNTAX, "malformed source route")
        for hop in route.split(","):
            if not hop.startswith("@"):
                raise AddressError(ADDRESS_SYNTAX, "malformed source route")
            if hop.startswith("@["):
                # Not a Domain.  Checked before anything else: an IPv6
                # literal's own ":" has already cut the route short.
                raise AddressError(
                    ADDRESS_SYNTAX, "a source route hop is a domain, not an address literal"
                )
            try:
                check_domain(hop[1:], utf8=utf8)
            except ValueError as exc:
                raise AddressError(ADDRESS_SYNTAX, str(exc)) from None
    return _parse_mailbox(inner, utf8=utf8, policy=policy, postmaster=postmaster_ok)
