"""Mailboxes and paths: RFC 5321 4.1.2, 4.1.3, 4.5.3.1 and RFC 6531 3.3."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msg_strategies import local_parts, mailboxes, postmaster

from smtp_message import AddressError, AddressPolicy, Mailbox, parse_path, replies

# -- Valid forms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "local", "domain"),
    [
        ("<a@example.com>", "a", "example.com"),
        ("<first.last@sub.example.com>", "first.last", "sub.example.com"),
        # RFC 5322 3.2.3 atext, every special character.
        ("<!#$%&'*+-/=?^_`{|}~@x.example>", "!#$%&'*+-/=?^_`{|}~", "x.example"),
        ("<Smith@BAR.com>", "Smith", "BAR.com"),
        ("<a@0.example>", "a", "0.example"),
        ("<a@a-b.example>", "a", "a-b.example"),
        ("<a@localhost>", "a", "localhost"),
    ],
)
def test_path_dot_string_forms(path: str, local: str, domain: str) -> None:
    """RFC 5321 4.1.2: Dot-string local parts and Domain names."""
    assert parse_path(path) == Mailbox(local, domain)


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ('<"a b"@x.example>', "a b"),
        ('<"a\\"b"@x.example>', 'a"b'),
        ('<"a\\\\b"@x.example>', "a\\b"),
        # quoted-pairSMTP = %d92 %d32-126: any printable may be escaped.
        ('<"\\a\\b\\c"@x.example>', "abc"),
        ('<"a@b"@x.example>', "a@b"),
        ('<"a>b"@x.example>', "a>b"),
        ('<"a<b"@x.example>', "a<b"),
        ('<"a,b:c"@x.example>', "a,b:c"),
        ('<".."@x.example>', ".."),
        ('<" "@x.example>', " "),
    ],
)
def test_path_quoted_local_part(path: str, local: str) -> None:
    """RFC 5321 4.1.2: Quoted-string with quoted-pairSMTP escapes, unquoted.

    The value holds the local part's meaning, not its spelling.
    """
    assert parse_path(path) == Mailbox(local, "x.example")


def test_mailbox_quoted_and_unquoted_spellings_are_equal() -> None:
    """RFC 5321 4.1.2: ``"abc"`` and ``abc`` are the same local part."""
    assert parse_path('<"abc"@x.example>') == parse_path("<abc@x.example>")
    assert parse_path('<"a\\bc"@x.example>') == parse_path("<abc@x.example>")


@pytest.mark.parametrize(
    ("mailbox", "text"),
    [
        (Mailbox("abc", "x.example"), "abc@x.example"),
        (Mailbox("a.b", "x.example"), "a.b@x.example"),
        (Mailbox("a b", "x.example"), '"a b"@x.example'),
        (Mailbox('a"b', "x.example"), '"a\\"b"@x.example'),
        (Mailbox("a\\b", "x.example"), '"a\\\\b"@x.example'),
        (Mailbox(".a", "x.example"), '".a"@x.example'),
        (Mailbox("a..b", "x.example"), '"a..b"@x.example'),
        (Mailbox("a.", "x.example"), '"a."@x.example'),
        (Mailbox("a@b", "x.example"), '"a@b"@x.example'),
        (Mailbox("Postmaster", None), "Postmaster"),
    ],
)
def test_mailbox_serialises_in_minimal_quoted_form(mailbox: Mailbox, text: str) -> None:
    """RFC 5321 4.1.2: quote only when a Dot-string cannot carry the value."""
    assert str(mailbox) == text
    assert mailbox.to_path() == f"<{text}>"


@pytest.mark.parametrize(
    ("literal", "valid"),
    [
        ("[127.0.0.1]", True),
        ("[0.0.0.0]", True),
        ("[255.255.255.255]", True),
        ("[192.0.2.001]", True),  # Snum = 1*3DIGIT
        ("[256.0.0.1]", False),
        ("[1.2.3.999]", False),
        ("[1.2.3]", False),
        ("[1.2.3.4.5]", False),
        ("[1.2.3.4 ]", False),
        ("[1234.1.1.1]", False),
        ("[IPv6:::1]", True),
        ("[IPv6:2001:db8::1]", True),
        ("[ipv6:2001:DB8::1]", True),  # ABNF literals are case-insensitive
        ("[IPv6:2001:db8:0:0:0:0:0:1]", True),  # IPv6-full
        ("[IPv6:::ffff:192.0.2.1]", True),  # IPv6v4-comp
        ("[IPv6:0:0:0:0:0:ffff:192.0.2.1]", True),  # IPv6v4-full
        ("[IPv6:1::2::3]", False),
        ("[IPv6:12345::1]", False),
        ("[IPv6:fe80::1%eth0]", False),  # no zone identifiers in SMTP
        ("[IPv6:]", False),
        ("[IPv6:1:2:3:4:5:6:7:8:9]", False),
        ("[IPv6:::256.1.1.1]", False),
        # RFC 5321 4.1.3: "::" is at least two groups; at most 6 groups
        # beside it (4 before an IPv4 tail), whose Snum may have zeros.
        ("[IPv6:1:2:3:4:5:6:7::]", False),
        ("[IPv6:1:2:3:4:5:6::7]", False),
        ("[IPv6:1:2:3:4:5::6]", True),
        ("[IPv6:1:2:3:4:5::1.2.3.4]", False),
        ("[IPv6:1:2:3::4:1.2.3.4]", True),
        ("[IPv6:::ffff:001.2.3.4]", True),
        ("[IPv6:1.2.3.4]", False),
        ("[IPv6:::1.2.3.4::]", False),
        ("[IPv6:1.2.3.4::]", False),
        ("[IPv6:1:2:3:4:5:6:1.2.3.4]", True),
        ("[IPv6:1:2:3:4:5:1.2.3.4]", False),
        ("[IPv6:::]", True),
        ("[IPv6::1]", False),
        ("[IPv6:1:]", False),
        ("[x400:c=us;a=;p=x]", True),  # General-address-literal
        ("[tag-1:content]", True),
        ("[tag:a@b]", True),  # dcontent includes "@" ...
        ("[tag:<>]", True),  # ... and "<" and ">"
        ("[tag:a[b]", False),  # dcontent excludes "[", "\" and "]"
        ("[tag:a\\b]", False),
        ("[-tag:x]", True),  # Ldh-str may start with "-" (RFC 5321 4.1.2)
        ("[tag-:x]", False),  # ... but not end with one
        ("[tag:]", False),
        ("[:x]", False),
        ("[]", False),
        ("[127.0.0.1", False),
        ("127.0.0.1]", False),
    ],
)
def test_path_address_literal(literal: str, valid: bool) -> None:
    """RFC 5321 4.1.3: IPv4 (0-255), the IPv6 forms, and general literals."""
    path = f"<a@{literal}>"
    if valid:
        mailbox = parse_path(path)
        assert mailbox == Mailbox("a", literal)
        assert mailbox.is_address_literal
    else:
        with pytest.raises(AddressError) as err:
            parse_path(path)
        assert err.value.reply == replies.ADDRESS_SYNTAX
        with pytest.raises(ValueError, match=r"literal|domain"):
            Mailbox("a", literal)


@pytest.mark.parametrize("name", ["Postmaster", "postmaster", "POSTMASTER", "pOsTmAsTeR"])
def test_path_postmaster_without_domain(name: str) -> None:
    """RFC 5321 4.1.1.3: ``<Postmaster>`` is a recipient, case-insensitively."""
    mailbox = parse_path(f"<{name}>", postmaster_ok=True)
    assert mailbox == Mailbox(name, None)
    assert mailbox is not None
    assert mailbox.is_postmaster
    assert mailbox.to_path() == f"<{name}>"
    # Only RCPT takes it: as a reverse-path it is an address without domain.
    with pytest.raises(AddressError):
        parse_path(f"<{name}>")


def test_path_postmaster_with_domain_is_an_ordinary_mailbox() -> None:
    """RFC 5321 4.1.1.3: ``<Postmaster@domain>`` is a normal address."""
    mailbox = parse_path("<Postmaster@x.example>", postmaster_ok=True)
    assert mailbox == Mailbox("Postmaster", "x.example")
    assert mailbox is not None
    assert not mailbox.is_postmaster


def test_mailbox_only_postmaster_may_lack_a_domain() -> None:
    """RFC 5321 4.1.2: every Mailbox but <Postmaster> has a domain."""
    with pytest.raises(ValueError, match="Postmaster"):
        Mailbox("someone", None)
    with pytest.raises(ValueError, match="Postmaster"):
        Mailbox("", None)


def test_mailbox_empty_quoted_local_part() -> None:
    """RFC 5321 4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE, so
    ``""`` is a local part (4.5.3.1.1 bounds it above, not below).  It
    parses, in a path and in MAIL and RCPT, and serialises back quoted;
    an unquoted empty local part is still no Dot-string."""
    from smtp_message import MailFrom, RcptTo, parse_command

    empty = Mailbox("", "b.example")
    assert parse_path('<""@b.example>') == empty
    assert Mailbox.parse('""@b.example', utf8=False) == empty
    assert str(empty) == '""@b.example'
    assert empty.to_path() == '<""@b.example>'
    assert parse_path(empty.to_path()) == empty
    assert parse_command(b'MAIL FROM:<""@b.example>') == MailFrom(empty)
    assert parse_command(b'RCPT TO:<""@b.example>') == RcptTo(empty)
    assert parse_path('<@a.example:""@b.example>') == empty
    for bad in ("<@b.example>", '<""@>', '<"""@b.example>'):
        with pytest.raises(AddressError):
            parse_path(bad)


def test_path_null_reverse_path() -> None:
    """RFC 5321 4.1.1.2: ``<>`` is the null reverse-path, for bounces only."""
    assert parse_path("<>", null_ok=True) is None
    with pytest.raises(AddressError, match="empty"):
        parse_path("<>")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("<@a.example:b@c.example>", Mailbox("b", "c.example")),
        ("<@ONE,@TWO:JOE@THREE>", Mailbox("JOE", "THREE")),  # RFC 5321 appendix C
        ("<@a.example,@b.example,@c.example:u@d.example>", Mailbox("u", "d.example")),
        ('<@a.example:"x y"@d.example>', Mailbox("x y", "d.example")),
    ],
)
def test_path_source_route_is_discarded(path: str, expected: Mailbox) -> None:
    """RFC 5321 4.1.1.3 and appendix C: the route is checked, then ignored."""
    assert parse_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "<@a.example b@c.example>",  # no colon
        "<@:b@c.example>",  # empty hop
        "<@a.example,b.example:c@d.example>",  # hop without "@"
        "<@a..example:c@d.example>",
        "<@-a.example:c@d.example>",
        "<@a.example,:c@d.example>",
    ],
)
def test_path_malformed_source_route(path: str) -> None:
    """RFC 5321 4.1.2: A-d-l = At-domain *( "," At-domain )."""
    with pytest.raises(AddressError):
        parse_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "<@[IPv6:::1],@b.example:u@c.example>",
        "<@b.example,@[IPv6:2001:db8::1]:u@c.example>",
        "<@[IPv6:::1]:u@c.example>",
        "<@[192.0.2.1]:u@c.example>",
        "<@b.example,@[192.0.2.1]:u@c.example>",
        "<@[x:y]:u@c.example>",
    ],
)
def test_path_source_route_hop_is_a_domain_not_an_address_literal(path: str) -> None:
    """RFC 5321 4.1.2: At-domain = "@" Domain; an address literal is no
    Domain.  Refused strictly and alike (501 5.1.3), IPv4 or IPv6; an IPv6
    literal's own colons are never read as the end of the route; through
    MAIL (501 5.1.7) and RCPT too."""
    from smtp_message import parse_command

    with pytest.raises(AddressError, match="not an address literal") as err:
        parse_path(path, utf8=True)
    assert err.value.reply == replies.ADDRESS_SYNTAX
    with pytest.raises(AddressError) as err:
        parse_command(f"RCPT TO:{path}".encode())
    assert err.value.reply == replies.ADDRESS_SYNTAX
    with pytest.raises(AddressError) as err:
        parse_command(f"MAIL FROM:{path}".encode())
    assert err.value.reply == replies.SENDER_SYNTAX


# -- Invalid forms --------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "a@example.com",  # brackets are required
        "<a@example.com",
        "a@example.com>",
        "<<a@example.com>>",
        "<a@example.com> ",
        "<@example.com>",
        "<a@>",
        "<a>",
        "<a@b@example.com>",
        "<.a@example.com>",  # Dot-string: no leading, trailing or double dot
        "<a.@example.com>",
        "<a..b@example.com>",
        "<a b@example.com>",
        "<a(b)@example.com>",  # not atext
        "<a[b]@example.com>",
        '<a"b@example.com>',
        '<"a"b@example.com>',  # a Quoted-string is the whole local part
        '<"a@example.com>',  # unterminated quotes
        '<"a\\"@example.com>',
        '<"a\tb"@example.com>',  # HT is not qtextSMTP
        "<a@-example.com>",  # Let-dig at both ends of a label
        "<a@example-.com>",
        "<a@exa_mple.com>",
        "<a@example..com>",
        "<a@.example.com>",
        "<a@example.com.>",
        "<a@example.com >",
        "<a@ex ample.com>",
        "<a@" + "x" * 64 + ".example>",  # RFC 1035 2.3.4: 63 octets a label
    ],
)
def test_path_invalid_forms_are_rejected(path: str) -> None:
    """RFC 5321 4.1.2: anything outside the Mailbox grammar is refused."""
    with pytest.raises(AddressError) as err:
        parse_path(path, utf8=True)
    assert err.value.reply is not None
    assert err.value.reply.code == 501


CONTROLS = ["\x00", "\r", "\n", "\t", "\x1b", "\x7f", "\x80", "\x85", "\x9b", "\x9f"]


@pytest.mark.parametrize("char", CONTROLS)
def test_mailbox_construction_rejects_control_characters(char: str) -> None:
    """RFC 5321 4.1.2 (and RFC 6531 3.3 for C1): no control character at all.

    Whatever way a Mailbox is built, it cannot carry one (a CR or LF would
    let an address forge a command line when serialised).
    """
    with pytest.raises(ValueError, match="control"):
        Mailbox(f"a{char}b", "x.example")
    with pytest.raises(ValueError, match=r"domain|label"):
        Mailbox("a", f"x{char}y.example")
    with pytest.raises(ValueError, match="literal"):
        Mailbox("a", f"[tag:x{char}y]")


@pytest.mark.parametrize("char", CONTROLS)
@pytest.mark.parametrize(
    "template", ["<a{c}b@x.example>", '<"a{c}b"@x.example>', "<a@x{c}.example>"]
)
def test_path_parse_rejects_control_characters(char: str, template: str) -> None:
    """RFC 5321 4.1.2: control characters fail parsing, even with SMTPUTF8."""
    with pytest.raises(AddressError):
        parse_path(template.format(c=char), utf8=True)
    with pytest.raises(AddressError):
        Mailbox.parse(template.format(c=char)[1:-1])


def test_mailbox_rejects_lone_surrogates() -> None:
    """RFC 6531 3.3: UTF8-non-ascii is UTF-8; a lone surrogate has no UTF-8 form.

    A Mailbox that holds one could be built but not sent (encoding it
    fails), so construction refuses it.
    """
    with pytest.raises(ValueError, match="control"):
        Mailbox("a\ud800", "x.example")
    with pytest.raises(AddressError):
        Mailbox.parse("\udcff@x.example")


# -- SMTPUTF8 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "<δοκιμή@παράδειγμα.δοκιμή>",
        "<用户@例子.广告>",
        "<Pelé@example.com>",
        "<a@bücher.example>",
        '<"ü ü"@x.example>',
        "<@bücher.example:a@x.example>",
    ],
)
def test_path_utf8_only_with_smtputf8(path: str) -> None:
    """RFC 6531 3.3: UTF-8 local parts and U-label domains need SMTPUTF8."""
    mailbox = parse_path(path, utf8=True)
    assert mailbox is not None
    with pytest.raises(AddressError, match="non-ASCII"):
        parse_path(path, utf8=False)
    assert parse_path(mailbox.to_path(), utf8=True) == mailbox


def test_mailbox_utf8_properties() -> None:
    """RFC 6531 3.3: the address needs SMTPUTF8; DNS sees the A-labels."""
    mailbox = Mailbox.parse("Pelé@bücher.Example")
    assert mailbox.needs_smtputf8
    assert mailbox.domain_key() == "xn--bcher-kva.example"
    ascii_box = Mailbox.parse("a@EXAMPLE.com")
    assert not ascii_box.needs_smtputf8
    assert ascii_box.domain_key() == "example.com"
    assert Mailbox("a", "[IPv6:2001:DB8::1]").domain_key() == "[ipv6:2001:db8::1]"


@pytest.mark.parametrize(
    "domain",
    [
        "☃.example",  # DISALLOWED in IDNA2008
        "a\u200db.example",  # ZERO WIDTH JOINER outside its context
        "xn--abc-.example",
        "\u0301a.example",  # a label cannot start with a combining mark
    ],
)
def test_path_invalid_u_label_is_rejected(domain: str) -> None:
    """RFC 6531 3.3 / RFC 5890 2.3.2.1: only valid U-labels are domains."""
    with pytest.raises(AddressError):
        parse_path(f"<a@{domain}>", utf8=True)


# -- Length limits and the policy -------------------------------------------------


def test_path_length_limits() -> None:
    """RFC 5321 4.5.3.1.1-3: local part 64, domain 255, path 256 octets."""
    assert parse_path(f"<{'a' * 64}@x.example>") is not None
    with pytest.raises(AddressError) as err:
        parse_path(f"<{'a' * 65}@x.example>")
    assert err.value.reply == replies.PATH_TOO_LONG
    # 255 octets of domain: 4 labels of 63 and the dots.
    domain = ".".join(["d" * 63] * 4)
    assert len(domain) == 255
    policy = AddressPolicy(max_path=1000)
    assert parse_path(f"<a@{domain}>", policy=policy) is not None
    with pytest.raises(AddressError) as err:
        parse_path(f"<a@{domain}x>", policy=policy)
    assert err.value.reply == replies.PATH_TOO_LONG
    # The path counts its brackets (4.5.3.1.3: "including the punctuation").
    local = "a" * 64
    domain = ".".join(["d" * 63, "d" * 63, "d" * 61])
    path = f"<{local}@{domain}>"
    assert len(path) == 256
    assert parse_path(path) is not None
    with pytest.raises(AddressError) as err:
        parse_path(f"<{local}@{domain}d>")
    assert err.value.reply == replies.PATH_TOO_LONG


def test_path_local_part_limit_counts_the_quoted_form() -> None:
    """RFC 5321 4.5.3.1.1: "The maximum total length of a user name or other
    local-part is 64 octets": the local-part of the grammar, as sent, so a
    Quoted-string counts its quotes and its backslashes."""
    for value, wire in [
        ("a" * 62, '"' + "a" * 62 + '"'),  # needs no quotes: parses all the same
        ("a b" + "c" * 59, '"a b' + "c" * 59 + '"'),
        ('"' * 31, '"' + '\\"' * 31 + '"'),
        ("abc", '"\\a\\b\\c"'),  # needless escapes count too
    ]:
        assert len(wire) == 64 or value == "abc"
        assert parse_path(f"<{wire}@x.example>") == Mailbox(value, "x.example")
    for wire in ['"a b' + "c" * 60 + '"', '"' + '\\"' * 32 + '"', '"' + "a" * 63 + '"']:
        assert len(wire) > 64
        with pytest.raises(AddressError) as err:
            parse_path(f"<{wire}@x.example>")
        assert err.value.reply == replies.PATH_TOO_LONG
    # What Mailbox serialises is what is counted: 31 quotes fit, 32 do not.
    assert len(Mailbox('"' * 31, "x.example").local_part_text()) == 64
    assert len(Mailbox('"' * 32, "x.example").local_part_text()) == 66


def test_path_length_counts_utf8_octets() -> None:
    """RFC 6531 3.3 with RFC 5321 4.5.3.1.1: limits are octets, not characters."""
    assert parse_path(f"<{'é' * 32}@x.example>", utf8=True) is not None
    with pytest.raises(AddressError) as err:
        parse_path(f"<{'é' * 33}@x.example>", utf8=True)
    assert err.value.reply == replies.PATH_TOO_LONG


def test_address_policy_relaxes_the_limits() -> None:
    """RFC 5321 4.5.3.1: servers may accept longer (VERP, SRS) addresses."""
    long_local = "srs0=" + "x" * 200
    path = f"<{long_local}@x.example>"
    with pytest.raises(AddressError):
        parse_path(path)
    policy = AddressPolicy(max_local_part=512, max_path=1024)
    assert parse_path(path, policy=policy) == Mailbox(long_local, "x.example")


# -- Properties -------------------------------------------------------------------


@given(mailboxes(utf8=False))
def test_mailbox_round_trip_ascii(mailbox: Mailbox) -> None:
    """DESIGN contract: serialise then parse gives an equal value (RFC 5321 4.1.2)."""
    assert parse_path(mailbox.to_path()) == mailbox
    assert Mailbox.parse(str(mailbox), utf8=False) == mailbox


@given(mailboxes(utf8=True) | postmaster())
def test_mailbox_round_trip_utf8(mailbox: Mailbox) -> None:
    """The same with SMTPUTF8 in force (RFC 6531 3.3), and <Postmaster>."""
    parsed = parse_path(mailbox.to_path(), utf8=True, postmaster_ok=True)
    assert parsed == mailbox
    assert parsed is not None
    assert parsed.needs_smtputf8 == (not mailbox.to_path().isascii())


@given(local_parts(utf8=True, max_octets=None), st.booleans())
def test_mailbox_local_part_limit_is_on_the_serialised_form(local: str, relaxed: bool) -> None:
    """RFC 5321 4.5.3.1.1: a Mailbox parses back from its path exactly when
    its local part, as serialised (quotes and escapes included), is within
    the limit; past it the refusal is 501 Path too long, never a syntax one."""
    mailbox = Mailbox(local, "x.example")
    limit = 100 if relaxed else 64
    policy = AddressPolicy(max_local_part=limit, max_path=1000)
    if len(mailbox.local_part_text().encode()) <= limit:
        assert parse_path(mailbox.to_path(), utf8=True, policy=policy) == mailbox
    else:
        with pytest.raises(AddressError) as err:
            parse_path(mailbox.to_path(), utf8=True, policy=policy)
        assert err.value.reply == replies.PATH_TOO_LONG


@given(st.text(max_size=80), st.booleans(), st.booleans(), st.booleans())
def test_path_parse_raises_only_address_error(
    text: str, utf8: bool, null_ok: bool, postmaster_ok: bool
) -> None:
    """Hostile input is normal input: any text parses or raises AddressError."""
    for candidate in (text, f"<{text}>"):
        try:
            result = parse_path(candidate, utf8=utf8, null_ok=null_ok, postmaster_ok=postmaster_ok)
        except AddressError as exc:
            refused = exc.reply
            assert refused is not None
            assert refused.code == 501
            continue
        # What parses serialises to ASCII unless SMTPUTF8 allowed more.
        if result is not None:
            assert utf8 or result.to_path().isascii()


def test_path_general_literal_with_at_and_angle_brackets_in_commands() -> None:
    """RFC 5321 4.1.3: dcontent (%d33-90 / %d94-126) holds "@", "<" and ">".

    Neither the search for the local part's "@" nor the search for the
    path's closing ">" may stop inside the literal.
    """
    from smtp_message import MailFrom, MailParams, RcptTo, parse_command

    assert parse_command(b"MAIL FROM:<a@[x:>]> SIZE=1") == MailFrom(
        Mailbox("a", "[x:>]"), MailParams(size=1)
    )
    assert parse_command(b"RCPT TO:<a@[x:b@c<d]>") == RcptTo(Mailbox("a", "[x:b@c<d]"))
