"""Commands and their parameters: RFC 5321 4.1, with the extension RFCs."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from msg_strategies import PRINTABLE, commands, mail_params, rcpt_params

from smtp_message import (
    AddressError,
    Auth,
    AuthResponse,
    Bdat,
    BodyType,
    Command,
    CommandSyntaxError,
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
    ParameterError,
    Quit,
    RcptParams,
    RcptTo,
    RemoteProtocolError,
    Ret,
    Rset,
    StartTls,
    Vrfy,
    parse_auth_response,
    parse_command,
    replies,
    xtext_decode,
    xtext_encode,
)
from smtp_message._commands import ChunkSyntaxError
from smtp_message._params import parse_mail_params, parse_rcpt_params

A = Mailbox("a", "b.example")


def refused(line: bytes, *, utf8: bool = False) -> RemoteProtocolError:
    """The error ``parse_command`` raises for ``line``."""
    with pytest.raises(RemoteProtocolError) as err:
        parse_command(line, utf8=utf8)
    assert err.value.reply is not None
    return err.value


# -- Every verb -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"HELO client.example", Helo("client.example")),
        (b"EHLO client.example", Ehlo("client.example")),
        (b"LHLO client.example", Lhlo("client.example")),  # RFC 2033 4.1
        (b"EHLO [192.0.2.1]", Ehlo("[192.0.2.1]")),
        (b"EHLO DESKTOP-1_A", Ehlo("DESKTOP-1_A")),  # not a domain; accepted
        (b"MAIL FROM:<a@b.example>", MailFrom(A)),
        (b"MAIL FROM:<>", MailFrom(None)),
        (b"RCPT TO:<a@b.example>", RcptTo(A)),
        (b"RCPT TO:<Postmaster>", RcptTo(Mailbox("Postmaster", None))),
        (b"DATA", Data()),
        (b"BDAT 0 LAST", Bdat(0, last=True)),  # RFC 3030 2
        (b"BDAT 1000", Bdat(1000)),
        (b"BDAT 99999999999999999999", Bdat(10**20 - 1)),  # 1*20DIGIT
        (b"RSET", Rset()),
        (b"NOOP", Noop()),
        (b"NOOP anything at all", Noop("anything at all")),
        (b"QUIT", Quit()),
        (b"VRFY Crispin", Vrfy("Crispin")),
        (b"VRFY <a@b.example>", Vrfy("<a@b.example>")),
        (b"EXPN Example-People", Expn("Example-People")),
        (b"HELP", Help()),
        (b"HELP MAIL", Help("MAIL")),
        (b"STARTTLS", StartTls()),  # RFC 3207 4
        (b"AUTH PLAIN", Auth("PLAIN")),  # RFC 4954 4
        (b"AUTH SCRAM-SHA-256", Auth("SCRAM-SHA-256")),
    ],
)
def test_parse_command_every_verb(line: bytes, command: Command) -> None:
    """RFC 5321 4.1.1: each verb parses to its command, and serialises back."""
    assert parse_command(line) == command
    assert command.to_bytes() == line + b"\r\n"


@pytest.mark.parametrize(
    ("line", "command"),
    [
        (b"helo x.example", Helo("x.example")),
        (b"Ehlo x.example", Ehlo("x.example")),
        (b"mail from:<a@b.example>", MailFrom(A)),
        (b"MaIl FrOm:<a@b.example> size=10 body=8bitmime", None),
        (b"rcpt to:<a@b.example>", RcptTo(A)),
        (b"data", Data()),
        (b"bdat 5 last", Bdat(5, last=True)),
        (b"rset", Rset()),
        (b"quit", Quit()),
        (b"starttls", StartTls()),
        (b"StartTLS", StartTls()),
        (b"auth plain", Auth("PLAIN")),
        (b"lhlo x.example", Lhlo("x.example")),
    ],
)
def test_parse_command_is_case_insensitive(line: bytes, command: Command | None) -> None:
    """RFC 5321 2.4: verbs, "FROM:"/"TO:" and keywords ignore case."""
    parsed = parse_command(line)
    if command is not None:
        assert parsed == command
    else:
        assert parsed == MailFrom(A, MailParams(size=10, body=BodyType.EIGHT_BIT_MIME))


def test_parse_command_local_part_keeps_its_case() -> None:
    """RFC 5321 2.4: "The local-part of a mailbox MUST BE treated as case sensitive"."""
    command = parse_command(b"RCPT TO:<Smith@Example.COM>")
    assert command == RcptTo(Mailbox("Smith", "Example.COM"))


def test_parse_command_space_after_colon_is_tolerated() -> None:
    """RFC 5321 3.3 forbids it; smtp_message accepts it as Postfix does."""
    assert parse_command(b"MAIL FROM: <a@b.example>") == MailFrom(A)
    assert parse_command(b"RCPT TO:  <a@b.example>") == RcptTo(A)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"HELO", replies.ARGUMENT_SYNTAX),
        (b"EHLO ", replies.ARGUMENT_SYNTAX),
        (b"EHLO two words", replies.ARGUMENT_SYNTAX),
        (b"DATA now", replies.NO_ARGUMENTS_ALLOWED),
        (b"RSET please", replies.NO_ARGUMENTS_ALLOWED),
        (b"QUIT now", replies.NO_ARGUMENTS_ALLOWED),
        (b"STARTTLS x", replies.NO_ARGUMENTS_ALLOWED),
        (b"VRFY", replies.ARGUMENT_SYNTAX),
        (b"EXPN ", replies.ARGUMENT_SYNTAX),
        # No chunk size to skip by: the session cannot go on (421).
        (b"BDAT", replies.BDAT_SIZE_UNREADABLE),
        (b"BDAT x", replies.BDAT_SIZE_UNREADABLE),
        (b"BDAT -1", replies.BDAT_SIZE_UNREADABLE),
        (b"BDAT 1.5", replies.BDAT_SIZE_UNREADABLE),
        (b"BDAT 100000000000000000000", replies.BDAT_SIZE_UNREADABLE),  # 21 digits
        (b"BDAT 10 LASTLY", replies.ARGUMENT_SYNTAX),
        (b"BDAT 10 LAST more", replies.ARGUMENT_SYNTAX),
        (b"BDAT 10  LAST", replies.ARGUMENT_SYNTAX),
        (b"MAIL", replies.ARGUMENT_SYNTAX),
        (b"MAIL TO:<a@b.example>", replies.ARGUMENT_SYNTAX),
        (b"MAIL FROM", replies.ARGUMENT_SYNTAX),
        (b"MAIL FROM:a@b.example", replies.SENDER_SYNTAX),
        (b"MAIL FROM:<a@b.example", replies.SENDER_SYNTAX),
        (b"MAIL FROM:<a@b.example>SIZE=1", replies.ARGUMENT_SYNTAX),
        (b"MAIL FROM:<a@@b.example>", replies.SENDER_SYNTAX),
        (b"RCPT", replies.ARGUMENT_SYNTAX),
        (b"RCPT FROM:<a@b.example>", replies.ARGUMENT_SYNTAX),
        (b"RCPT TO:a@b.example", replies.ADDRESS_SYNTAX),
        (b"RCPT TO:<>", replies.ADDRESS_SYNTAX),
        (b"RCPT TO:<a@b.example>x", replies.ARGUMENT_SYNTAX),
        (b"AUTH", replies.ARGUMENT_SYNTAX),
        (b"AUTH PL@IN", replies.ARGUMENT_SYNTAX),
        (b"AUTH " + b"A" * 21, replies.ARGUMENT_SYNTAX),  # 1*20mech-char
        (b"AUTH PLAIN a b", replies.ARGUMENT_SYNTAX),
    ],
)
def test_parse_command_argument_errors(line: bytes, reply: object) -> None:
    """RFC 5321 4.1.1 syntax, RFC 3030 2 and RFC 4954 4: each error's reply.

    501 with RFC 3463 X.5.4 for bad arguments, X.1.7 for a bad sender and
    X.1.3 for a bad recipient (RFC 3463 3.2).
    """
    assert refused(line).reply == reply


@pytest.mark.parametrize("line", [b"STARTTLSX", b"starttlsfoo:bar", b"STARTTLS:please", b"QUITX"])
def test_a_verb_ends_at_space_or_line_end(line: bytes) -> None:
    """RFC 5321 4.1.1 and 2.4, RFC 3207 4: a verb ends at SP or CRLF, so a
    word that only starts with STARTTLS (the longest verb) is unknown
    (500 5.5.1), not STARTTLS."""
    assert refused(line).reply == replies.COMMAND_UNRECOGNIZED


def test_bdat_syntax_error_carries_the_chunk_size() -> None:
    """RFC 3030 2: a BDAT line whose size parses still announces a chunk;
    the error says how many octets to skip."""
    for line, size in ((b"BDAT 10 LASTLY", 10), (b"BDAT 0 LAST more", 0), (b"BDAT 7  LAST", 7)):
        error = refused(line)
        assert isinstance(error, ChunkSyntaxError)
        assert error.size == size


def test_parse_command_path_too_long_replies() -> None:
    """RFC 5321 4.5.3.1.10: "501 Path too long", sender or recipient code."""
    local = "a" * 65
    assert refused(f"MAIL FROM:<{local}@b.example>".encode()).reply == (
        replies.SENDER_PATH_TOO_LONG
    )
    assert refused(f"RCPT TO:<{local}@b.example>".encode()).reply == (replies.PATH_TOO_LONG)


@pytest.mark.parametrize(
    "line",
    [b"FOO", b"FOO bar", b"MAILFROM:<a@b.example>", b"EHL0 x", b"<script>", b" "],
)
def test_parse_command_unknown_verb_is_500_without_echo(line: bytes) -> None:
    """RFC 5321 4.2.4: "500 Syntax error, command unrecognized".

    The reply is fixed text: nothing the client sent is echoed back.
    """
    error = refused(line)
    assert error.reply == replies.COMMAND_UNRECOGNIZED
    assert error.reply is not None
    assert error.reply.to_bytes() == b"500 5.5.1 Command unrecognized\r\n"
    assert isinstance(error, CommandSyntaxError)


@pytest.mark.parametrize(
    "line",
    [
        b"NOOP \x00",
        b"HELO a\rb",
        b"HELO a\nb",
        b"NOOP a\tb",
        b"NOOP \x7f",
        b"FOO\x00",
        b"MAIL FROM:<a\x00@b.example>",
        b"RCPT TO:<a@b.example> X=\x01",
        b"EHLO caf\xc3\xa9.example",  # 8-bit outside MAIL/RCPT
        b"VRFY \xff",
        b"\xff\xfe",
    ],
)
def test_parse_command_control_and_8bit_octets(line: bytes) -> None:
    """RFC 5321 2.4: commands are ASCII; "500 syntax error - invalid character"."""
    assert refused(line).reply == replies.EIGHT_BIT_COMMAND


def test_parse_command_utf8_only_with_smtputf8() -> None:
    """RFC 6531 3.4: UTF-8 in MAIL needs its SMTPUTF8 parameter, and in RCPT
    a transaction opened with it."""
    assert refused("MAIL FROM:<δ@b.example>".encode()).reply == replies.NON_ASCII_ADDRESS
    mail = parse_command("MAIL FROM:<δ@b.example> SMTPUTF8".encode())
    assert mail == MailFrom(Mailbox("δ", "b.example"), MailParams(smtputf8=True))
    assert refused("RCPT TO:<δ@b.example>".encode()).reply == replies.NON_ASCII_ADDRESS
    rcpt = parse_command("RCPT TO:<δ@bücher.example>".encode(), utf8=True)
    assert rcpt == RcptTo(Mailbox("δ", "bücher.example"))
    # Invalid UTF-8 is never an address.
    assert refused(b"MAIL FROM:<\xff@b.example> SMTPUTF8").reply == (replies.EIGHT_BIT_COMMAND)
    # Parameter values may carry UTF-8 only under SMTPUTF8 too.
    assert refused("MAIL FROM:<a@b.example> X=é".encode()).reply == (replies.EIGHT_BIT_COMMAND)
    assert parse_command("MAIL FROM:<a@b.example> X=é SMTPUTF8".encode()) == MailFrom(
        A, MailParams(smtputf8=True, extra=[("X", "é")])
    )


# -- Parameters -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("SIZE=0", MailParams(size=0)),
        ("SIZE=1000", MailParams(size=1000)),
        ("SIZE=99999999999999999999", MailParams(size=10**20 - 1)),  # RFC 1870
        ("BODY=7BIT", MailParams(body=BodyType.SEVEN_BIT)),  # RFC 6152 2
        ("BODY=8bitmime", MailParams(body=BodyType.EIGHT_BIT_MIME)),
        ("BODY=BINARYMIME", MailParams(body=BodyType.BINARY_MIME)),  # RFC 3030 3
        ("SMTPUTF8", MailParams(smtputf8=True)),  # RFC 6531 3.4
        ("RET=FULL", MailParams(ret=Ret.FULL)),  # RFC 3461 4.3
        ("ret=hdrs", MailParams(ret=Ret.HDRS)),
        ("ENVID=QQ314159", MailParams(envid="QQ314159")),  # RFC 3461 4.4
        ("ENVID=a+2Bb+3Dc+20d", MailParams(envid="a+b=c d")),
        ("ENVID=a+2bb", MailParams(envid="a+b")),  # lower-case hex accepted
        ("AUTH=<>", MailParams(auth="<>")),  # RFC 4954 5
        ("AUTH=e+3Dmc2@example.com", MailParams(auth="e=mc2@example.com")),
        ("REQUIRETLS", MailParams(requiretls=True)),  # RFC 8689 4
        (
            "SIZE=5 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<> REQUIRETLS",
            MailParams(5, BodyType.EIGHT_BIT_MIME, True, Ret.HDRS, "x", "<>", True),
        ),
        ("SIZE=5  BODY=7BIT", MailParams(size=5, body=BodyType.SEVEN_BIT)),
    ],
)
def test_mail_params_typed(text: str, params: MailParams) -> None:
    """RFC 1870, 6152, 3030, 6531, 3461, 4954 and 8689: each typed parameter."""
    assert parse_mail_params(text) == params
    line = f"MAIL FROM:<a@b.example> {text}".encode()
    assert parse_command(line) == MailFrom(A, params)


@pytest.mark.parametrize(
    "text",
    [
        "SIZE",
        "SIZE=",
        "SIZE=x",
        "SIZE=-1",
        "SIZE=1e3",
        "SIZE=100000000000000000000",  # 21 digits
        "SIZE=\uff11\uff12",  # FULLWIDTH digits: not ASCII
        "BODY",
        "BODY=8BIT",
        "BODY=",
        "SMTPUTF8=YES",
        "RET",
        "RET=ALL",
        "ENVID",
        "ENVID=a+2",
        "ENVID=a+ZZ",
        "ENVID=a+0D+0Ab",  # decodes to a control character
        "ENVID=+C3+A9",  # decodes to non-ASCII
        "AUTH",
        "AUTH=a+0Ab",
        "REQUIRETLS=1",
        "SIZE=1 SIZE=2",  # duplicates
        "size=1 SIZE=1",
        "X=1 x=2",
        "-X=1",  # esmtp-keyword starts with ALPHA / DIGIT
        "X_Y=1",
        "X=",
        "X=a=b",  # "=" is not esmtp-value
        "=1",
    ],
)
def test_mail_params_errors(text: str) -> None:
    """RFC 5321 4.1.2 esmtp-param and each extension's value grammar: 501 5.5.4."""
    with pytest.raises(ParameterError) as err:
        parse_mail_params(text)
    assert err.value.reply == replies.ARGUMENT_SYNTAX


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("NOTIFY=NEVER", RcptParams(notify={Notify.NEVER})),  # RFC 3461 4.1
        ("NOTIFY=SUCCESS", RcptParams(notify={Notify.SUCCESS})),
        (
            "notify=success,failure,delay",
            RcptParams(notify={Notify.SUCCESS, Notify.FAILURE, Notify.DELAY}),
        ),
        (
            "ORCPT=rfc822;a+2Bb@x.example",  # RFC 3461 4.2
            RcptParams(orcpt=OriginalRecipient("rfc822", "a+b@x.example")),
        ),
        (
            "ORCPT=utf-8;caf+C3+A9",  # decodes to 8-bit: refused below
            None,
        ),
        ("X-ONE=1 X-TWO", RcptParams(extra=[("X-ONE", "1"), ("X-TWO", None)])),
    ],
)
def test_rcpt_params(text: str, params: RcptParams | None) -> None:
    """RFC 3461 4.1 and 4.2: NOTIFY and ORCPT, decoded from xtext."""
    if params is None:
        with pytest.raises(ParameterError):
            parse_rcpt_params(text)
        return
    assert parse_rcpt_params(text) == params
    assert parse_command(f"RCPT TO:<a@b.example> {text}".encode()) == RcptTo(A, params)


def test_rcpt_orcpt_utf8_forms() -> None:
    """RFC 6533 3: a "utf-8" ORCPT comes as utf-8-addr-xtext (ASCII, each
    other character as \\x{HEX}) or, in an SMTPUTF8 transaction, as
    utf-8-addr-unitext (UTF-8 as it is).  Both are kept in the ASCII form,
    so the address can be relayed and put in a DSN as it stands.  Raw UTF-8
    in another address type (xtext, RFC 3461 4.2) or outside SMTPUTF8
    (RFC 6531 3.3) is 501 5.5.4."""
    xtext = OriginalRecipient("utf-8", "caf\\x{E9}@\\x{65E5}.example")
    for text, utf8 in [
        ("ORCPT=utf-8;caf\\x{E9}@\\x{65E5}.example", False),
        ("ORCPT=utf-8;café@日.example", True),
        ("ORCPT=utf-8;caf\\x{E9}@日.example", True),  # the two mixed
    ]:
        assert parse_rcpt_params(text, utf8=utf8) == RcptParams(orcpt=xtext)
    assert xtext.to_param() == "utf-8;caf\\x{E9}@\\x{65E5}.example"
    command = parse_command("RCPT TO:<b@日.example> ORCPT=UTF-8;b@日.example".encode(), utf8=True)
    assert isinstance(command, RcptTo)
    assert command.params.orcpt == OriginalRecipient("UTF-8", "b@\\x{65E5}.example")
    for text, utf8 in [("ORCPT=rfc822;café@x.example", True), ("ORCPT=utf-8;café@x", False)]:
        with pytest.raises(ParameterError) as err:
            parse_rcpt_params(text, utf8=utf8)
        assert err.value.reply == replies.ARGUMENT_SYNTAX
    with pytest.raises(RemoteProtocolError):
        parse_command("RCPT TO:<b@x.example> ORCPT=utf-8;é@x.example".encode())


@pytest.mark.parametrize(
    "text",
    [
        "NOTIFY",
        "NOTIFY=",
        "NOTIFY=NEVER,SUCCESS",  # NEVER stands alone
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY=SUCCESS,,FAILURE",
        "NOTIFY=ALWAYS",
        "ORCPT",
        "ORCPT=a@b.example",  # addr-type ";" xtext
        "ORCPT=;a@b.example",
        "ORCPT=rfc 822;a",
        "ORCPT=rfc822;a+0D",
        "NOTIFY=NEVER NOTIFY=NEVER",
    ],
)
def test_rcpt_params_errors(text: str) -> None:
    """RFC 3461 4.1 and 4.2: malformed DSN parameters are 501 5.5.4."""
    with pytest.raises(ParameterError) as err:
        parse_rcpt_params(text)
    assert err.value.reply == replies.ARGUMENT_SYNTAX


def test_params_unknown_ones_reach_the_caller_in_order() -> None:
    """RFC 5321 4.1.1.11: unknown parameters are the server's to judge (555)."""
    mail = parse_command(b"MAIL FROM:<a@b.example> SIZE=10 x-later=v1 FLAG XYZ=v+2B")
    assert isinstance(mail, MailFrom)
    assert mail.params.size == 10
    assert mail.params.extra == (("X-LATER", "v1"), ("FLAG", None), ("XYZ", "v+2B"))
    assert mail.params.keywords == {"SIZE", "X-LATER", "FLAG", "XYZ"}
    rcpt = parse_command(b"RCPT TO:<a@b.example> NOTIFY=NEVER XFOO=bar")
    assert isinstance(rcpt, RcptTo)
    assert rcpt.params.extra == (("XFOO", "bar"),)
    assert rcpt.params.keywords == {"NOTIFY", "XFOO"}


def test_params_constructor_refuses_what_cannot_round_trip() -> None:
    """RFC 5321 4.1.2: an esmtp-value has one character at least, and a
    keyword may not be given twice; values that would serialise to such a
    command cannot be built."""
    with pytest.raises(ValueError, match="empty"):
        MailParams(envid="")
    with pytest.raises(ValueError, match="empty"):
        MailParams(auth="")
    with pytest.raises(ValueError, match="field of its own"):
        MailParams(extra=[("SIZE", "10")])
    with pytest.raises(ValueError, match="twice"):
        MailParams(extra=[("X", None), ("X", "1")])
    with pytest.raises(ValueError, match="field of its own"):
        RcptParams(extra=[("NOTIFY", "NEVER")])
    with pytest.raises(ValueError, match="keyword"):
        MailParams(extra=[("lower", None)])
    with pytest.raises(ValueError, match="value"):
        MailParams(extra=[("X", "a b")])
    with pytest.raises(ValueError, match="NEVER"):
        RcptParams(notify={Notify.NEVER, Notify.DELAY})
    with pytest.raises(ValueError, match="SIZE"):
        MailParams(size=10**20)
    # RCPT has no SIZE of its own: there it is an unknown parameter.
    assert RcptParams(extra=[("SIZE", "1")]).to_strings() == ["SIZE=1"]


@pytest.mark.parametrize(
    ("decoded", "encoded"),
    [
        ("abc", "abc"),
        ("a+b", "a+2Bb"),
        ("a=b", "a+3Db"),
        ("a b", "a+20b"),
        ("~!", "~!"),
        ("\x7f", "+7F"),
        ("\x00", "+00"),
        ("", ""),
    ],
)
def test_xtext_encode_and_decode(decoded: str, encoded: str) -> None:
    """RFC 3461 4: "+" and "=" and octets outside 33-126 as "+" two upper-case hex."""
    assert xtext_encode(decoded) == encoded
    assert xtext_decode(encoded) == decoded


@pytest.mark.parametrize("bad", ["a+", "a+4", "a+G0", "a=b", "a b", "é", "\x00"])
def test_xtext_decode_malformed(bad: str) -> None:
    """RFC 3461 4: xtext = *( xchar / hexchar ); anything else is refused."""
    with pytest.raises(ValueError, match="xtext"):
        xtext_decode(bad)


def test_xtext_encode_refuses_non_ascii() -> None:
    """RFC 3461 4: xtext carries US-ASCII only."""
    with pytest.raises(ValueError, match="ASCII"):
        xtext_encode("é")


@given(st.text(st.characters(max_codepoint=0x7F)))
def test_xtext_round_trip(text: str) -> None:
    """RFC 3461 4: decode(encode(x)) == x, and the encoding is plain xchars."""
    encoded = xtext_encode(text)
    assert xtext_decode(encoded) == text
    assert all(33 <= ord(c) <= 126 and c != "=" for c in encoded)


# -- AUTH ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "response"),
    [
        (b"AUTH PLAIN =", b""),  # RFC 4954 4: "=" is an empty initial response
        (b"AUTH PLAIN AGZyZWQAdGVzdA==", b"\x00fred\x00test"),
        (b"AUTH plain AGZyZWQAdGVzdA==", b"\x00fred\x00test"),
        (b"AUTH EXTERNAL =", b""),
        (b"AUTH LOGIN", None),
    ],
)
def test_parse_auth_initial_response(line: bytes, response: bytes | None) -> None:
    """RFC 4954 4: AUTH mechanism [initial-response], base64 or "="."""
    command = parse_command(line)
    assert isinstance(command, Auth)
    assert command.initial_response == response
    assert parse_command(command.to_bytes()[:-2]) == command


@pytest.mark.parametrize(
    "line",
    [b"AUTH PLAIN AGZy*", b"AUTH PLAIN AGZyZWQ", b"AUTH PLAIN ==", b"AUTH PLAIN A==="],
)
def test_parse_auth_bad_base64(line: bytes) -> None:
    """RFC 4954 4: "501 5.5.2 Cannot Base64-decode ..." for a bad response."""
    assert refused(line).reply == replies.AUTH_BAD_BASE64


def test_parse_auth_response_lines() -> None:
    """RFC 4954 4: a response to 334 is base64, "*" to cancel, or empty."""
    assert parse_auth_response(b"*") == AuthResponse(None)
    assert parse_auth_response(b"") == AuthResponse(b"")
    assert parse_auth_response(b"dGVzdA==") == AuthResponse(b"test")
    assert AuthResponse(b"test").to_bytes() == b"dGVzdA==\r\n"
    assert AuthResponse(None).to_bytes() == b"*\r\n"
    for bad in (b"dGVzdA=", b"\xff", b"** "):
        with pytest.raises(CommandSyntaxError) as err:
            parse_auth_response(bad)
        assert err.value.reply == replies.AUTH_BAD_BASE64


def test_auth_credentials_never_in_repr() -> None:
    """RFC 4954 4 carries passwords: no repr(), str() or error shows them."""
    secret = b"\x00user\x00hunter2-secret"
    encoded = base64.b64encode(secret)
    command = parse_command(b"AUTH PLAIN " + encoded)
    assert isinstance(command, Auth)
    response = parse_auth_response(encoded)
    for text in (repr(command), str(command), repr(response), str(response)):
        assert "hunter2" not in text
        assert encoded.decode() not in text
        assert "octets redacted" in text
    # A bad response is refused without quoting it back.
    error = refused(b"AUTH PLAIN hunter2-secret*")
    assert "hunter2" not in str(error)
    assert error.reply is not None
    assert "hunter2" not in error.reply.text


# -- Properties ---------------------------------------------------------------------


@given(commands())
@example((MailFrom(None, MailParams(auth="<>", envid="+")), False))
@example((Auth("PLAIN", b""), False))
def test_command_round_trip(case: tuple[Command, bool]) -> None:
    """DESIGN contract: every command serialises to a line that parses back
    to an equal value (RFC 5321 4.1.1, with the extension RFCs)."""
    command, utf8 = case
    line = command.to_bytes()
    assert line.endswith(b"\r\n")
    assert b"\r" not in line[:-2]
    assert b"\n" not in line[:-2]
    assert parse_command(line[:-2], utf8=utf8) == command


@given(mail_params())
def test_mail_params_round_trip(params: MailParams) -> None:
    """RFC 5321 4.1.2: MAIL parameters serialise and parse back equal."""
    text = " ".join(params.to_strings())
    assert parse_mail_params(text) == params


@given(rcpt_params())
def test_rcpt_params_round_trip(params: RcptParams) -> None:
    """RFC 3461 4.1, 4.2: RCPT parameters serialise and parse back equal."""
    text = " ".join(params.to_strings())
    assert parse_rcpt_params(text, utf8=False) == params


@given(
    st.one_of(
        st.binary(max_size=100),
        st.sampled_from([b"MAIL FROM:", b"RCPT TO:", b"AUTH ", b"BDAT ", b"EHLO "]).flatmap(
            lambda verb: st.binary(max_size=60).map(lambda rest: verb + rest)
        ),
        st.text(PRINTABLE, max_size=80).map(lambda t: ("MAIL FROM:<a@b.c> " + t).encode()),
    ),
    st.booleans(),
)
def test_parse_command_raises_only_protocol_errors(line: bytes, utf8: bool) -> None:
    """Hostile input: any line parses or raises a RemoteProtocolError whose
    reply is a 5xx the server can send (never ValueError, never a crash),
    or the 421 for a BDAT line with no chunk size."""
    try:
        command = parse_command(line, utf8=utf8)
    except RemoteProtocolError as exc:
        refused_reply = exc.reply
        assert refused_reply is not None
        assert refused_reply.code in (500, 501, 553) or (
            refused_reply == replies.BDAT_SIZE_UNREADABLE and line.upper().startswith(b"BDAT")
        )
        return
    # What parses serialises without CR or LF inside.
    wire = command.to_bytes()
    assert wire.count(b"\r\n") == 1
    assert wire.endswith(b"\r\n")


def test_address_error_is_both_kinds() -> None:
    """RFC 5321 4.1.2 errors carry their 501 reply (a CommandSyntaxError)
    and are ValueErrors for callers that parse addresses outside a session."""
    error = refused(b"RCPT TO:<a@@b>")
    assert isinstance(error, AddressError)
    assert isinstance(error, ValueError)
