"""Hypothesis strategies for the values of smtp_message.

Each strategy draws values the grammar allows (RFC 5321 4.1.2 and 4.1.3,
RFC 6531 3.3, RFC 3461 4, RFC 3463 2), so that a property can say
"serialise then parse gives an equal value" without exceptions.
"""

from __future__ import annotations

import re
import string

from hypothesis import strategies as st

from smtp_message import (
    Auth,
    Bdat,
    BodyType,
    Command,
    Data,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mailbox,
    MailFrom,
    MailParams,
    Noop,
    Notify,
    OriginalRecipient,
    Quit,
    RcptParams,
    RcptTo,
    Reply,
    Ret,
    Rset,
    StartTls,
    Vrfy,
)

# RFC 5322 3.2.3 atext.
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
# Non-ASCII characters a UTF-8 address may hold: no C1 controls, no
# surrogates (RFC 6531 3.3 UTF8-non-ascii, as smtp_message reads it).
NON_ASCII = st.characters(min_codepoint=0xA0, codec="utf-8")

LDH_LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
# Valid IDNA2008 U-labels (RFC 5890 2.3.2.1); random Unicode is rarely one.
U_LABELS = ("bücher", "пример", "例え", "δοκιμή", "müller", "日本語", "कॉम")


@st.composite
def ascii_domains(draw: st.DrawFn) -> str:
    """RFC 5321 4.1.2 Domain."""
    labels = draw(st.lists(LDH_LABEL, min_size=1, max_size=4))
    return ".".join(labels)


@st.composite
def utf8_domains(draw: st.DrawFn) -> str:
    """RFC 6531 3.3: a domain with at least one U-label."""
    labels = draw(st.lists(LDH_LABEL, min_size=0, max_size=2))
    labels.insert(draw(st.integers(0, len(labels))), draw(st.sampled_from(U_LABELS)))
    return ".".join(labels)


@st.composite
def address_literals(draw: st.DrawFn) -> str:
    """RFC 5321 4.1.3 address literals: IPv4, IPv6 and general."""
    kind = draw(st.sampled_from(["v4", "v6", "general"]))
    if kind == "v4":
        return f"[{draw(st.ip_addresses(v=4))}]"
    if kind == "v6":
        return f"[IPv6:{draw(st.ip_addresses(v=6))}]"
    tag = draw(st.from_regex(r"[A-Za-z0-9-]{0,5}[A-Za-z0-9]", fullmatch=True))
    if tag.lower() == "ipv6":
        tag = "X" + tag
    # dcontent = %d33-90 / %d94-126
    dcontent = "".join(chr(c) for c in [*range(33, 91), *range(94, 127)])
    return f"[{tag}:{draw(st.text(dcontent, min_size=1, max_size=12))}]"


def dot_strings(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """RFC 5321 4.1.2 Dot-string over ``alphabet``."""
    atom = st.text(alphabet, min_size=1, max_size=8)
    return st.lists(atom, min_size=1, max_size=3).map(".".join)


def _wire_octets(local: str) -> int:
    # RFC 5321 4.5.3.1.1 counts the local part as sent: quoted if it must be.
    return len(Mailbox(local, "x.example").local_part_text().encode())


def local_parts(*, utf8: bool, max_octets: int | None = 64) -> st.SearchStrategy[str]:
    """Dot-strings and anything a Quoted-string can carry (``""`` included).

    At most ``max_octets`` once serialised (RFC 5321 4.5.3.1.1), unless None.
    """
    ascii_parts = st.one_of(
        dot_strings(st.sampled_from(ATEXT)),
        st.text(PRINTABLE, max_size=20),
        # Mostly characters that must be quoted or escaped: near the limit.
        st.text(st.sampled_from('"\\ a'), max_size=40),
    )
    parts = ascii_parts
    if utf8:
        mixed = st.one_of(st.sampled_from(ATEXT), NON_ASCII)
        parts = st.one_of(
            ascii_parts,
            dot_strings(mixed),
            st.text(st.one_of(st.sampled_from(PRINTABLE), NON_ASCII), max_size=12),
        )
    if max_octets is None:
        return parts
    limit = max_octets
    return parts.filter(lambda s: _wire_octets(s) <= limit)


@st.composite
def mailboxes(draw: st.DrawFn, *, utf8: bool = False) -> Mailbox:
    """A Mailbox within the RFC 5321 4.5.3.1 limits."""
    local = draw(local_parts(utf8=utf8))
    domains = [ascii_domains(), address_literals()]
    if utf8:
        domains.append(utf8_domains())
    domain = draw(st.one_of(domains))
    return Mailbox(local, domain)


def postmaster() -> st.SearchStrategy[Mailbox]:
    """RFC 5321 4.1.1.3 <Postmaster> in any case."""
    return st.sampled_from(["Postmaster", "postmaster", "POSTMASTER", "PostMaster"]).map(
        lambda name: Mailbox(name, None)
    )


ESMTP_KEYWORD = st.from_regex(r"X[A-Z0-9][A-Z0-9-]{0,8}", fullmatch=True)
ESMTP_VALUE = st.text(
    "".join(chr(c) for c in [*range(0x21, 0x3D), *range(0x3E, 0x7F)]),
    min_size=1,
    max_size=12,
)
XTEXT_SOURCE = st.text(PRINTABLE, min_size=1, max_size=20)


@st.composite
def extras(draw: st.DrawFn) -> tuple[tuple[str, str | None], ...]:
    """Unknown parameters: distinct upper-case keywords, optional values."""
    keywords = draw(st.lists(ESMTP_KEYWORD, max_size=3, unique=True))
    return tuple((k, draw(st.none() | ESMTP_VALUE)) for k in keywords)


@st.composite
def mail_params(draw: st.DrawFn, *, smtputf8: bool | None = None) -> MailParams:
    """RFC 1870, 6152, 3030, 6531, 3461, 4954 and 8689 MAIL parameters."""
    auth = draw(st.none() | st.just("<>") | XTEXT_SOURCE)
    return MailParams(
        size=draw(st.none() | st.integers(0, 10**20 - 1)),
        body=draw(st.none() | st.sampled_from(BodyType)),
        smtputf8=draw(st.booleans()) if smtputf8 is None else smtputf8,
        ret=draw(st.none() | st.sampled_from(Ret)),
        envid=draw(st.none() | XTEXT_SOURCE),
        auth=auth,
        requiretls=draw(st.booleans()),
        extra=draw(extras()),
    )


NOTIFY_SETS = st.one_of(
    st.just(frozenset({Notify.NEVER})),
    st.sets(st.sampled_from([Notify.SUCCESS, Notify.FAILURE, Notify.DELAY]), min_size=1).map(
        frozenset
    ),
)


@st.composite
def rcpt_params(draw: st.DrawFn) -> RcptParams:
    """RFC 3461 NOTIFY and ORCPT, plus unknown parameters."""
    orcpt = draw(
        st.none()
        | st.builds(
            OriginalRecipient,
            st.sampled_from(["rfc822", "RFC822", "utf-8", "x400"]),
            st.text(PRINTABLE, max_size=20),
        )
    )
    return RcptParams(notify=draw(st.none() | NOTIFY_SETS), orcpt=orcpt, extra=draw(extras()))


# Printable ASCII words and phrases (HELO names, NOOP/HELP/VRFY/EXPN text).
WORD = st.text(string.ascii_letters + string.digits + "-._[]:", min_size=1, max_size=20)
PHRASE = st.from_regex(r"[\x21-\x7e](?:[\x20-\x7e]{0,20}[\x21-\x7e])?", fullmatch=True)


@st.composite
def commands(draw: st.DrawFn) -> tuple[Command, bool]:
    """A command and whether parsing it needs SMTPUTF8 in force (RCPT)."""
    kind = draw(st.sampled_from(range(15)))
    if kind == 0:
        return Helo(draw(WORD)), False
    if kind == 1:
        return Ehlo(draw(WORD)), False
    if kind == 2:
        return Lhlo(draw(WORD)), False
    if kind == 3:
        utf8 = draw(st.booleans())
        path = draw(st.none() | mailboxes(utf8=utf8))
        return MailFrom(path, draw(mail_params(smtputf8=True if utf8 else None))), False
    if kind == 4:
        utf8 = draw(st.booleans())
        path = draw(mailboxes(utf8=utf8) | postmaster())
        return RcptTo(path, draw(rcpt_params())), utf8
    if kind == 5:
        return Data(), False
    if kind == 6:
        return Bdat(draw(st.integers(0, 10**20 - 1)), draw(st.booleans())), False
    if kind == 7:
        return Rset(), False
    if kind == 8:
        return Noop(draw(st.just("") | PHRASE)), False
    if kind == 9:
        return Quit(), False
    if kind == 10:
        return Vrfy(draw(PHRASE)), False
    if kind == 11:
        return Expn(draw(PHRASE)), False
    if kind == 12:
        return Help(draw(st.just("") | PHRASE)), False
    if kind == 13:
        return StartTls(), False
    mechanism = draw(st.from_regex(r"[A-Z0-9_-]{1,20}", fullmatch=True))
    return Auth(mechanism, draw(st.none() | st.binary(max_size=40))), False


ENHANCED_NUM = st.integers(0, 999).map(str)
# RFC 3463 2 as the reply parser reads it: at the start of the first line.
_LOOKS_ENHANCED = re.compile(r"[245]\.(?:0|[1-9][0-9]{0,2})\.(?:0|[1-9][0-9]{0,2})(?: |$)")
REPLY_TEXT = st.text(
    st.one_of(
        st.sampled_from(PRINTABLE + "\t"),
        st.characters(min_codepoint=0xA0, codec="utf-8"),
    ),
    max_size=30,
)


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    """RFC 5321 4.2 replies with RFC 3463 codes, short enough not to wrap.

    Without an enhanced code, the first line may not start with something
    that reads as one: the parser cannot tell such text from a code.
    """
    # Reply-code = %x32-35 %x30-35 %x30-39
    code = 100 * draw(st.integers(2, 5)) + 10 * draw(st.integers(0, 5))
    code += draw(st.integers(0, 9))
    enhanced = None
    if code // 100 != 3 and draw(st.booleans()):
        enhanced = f"{code // 100}.{draw(ENHANCED_NUM)}.{draw(ENHANCED_NUM)}"
    lines = draw(st.lists(REPLY_TEXT, min_size=1, max_size=4))
    if enhanced is None and _LOOKS_ENHANCED.match(lines[0]):
        lines[0] = "x" + lines[0]
    return Reply(code, enhanced, lines)
