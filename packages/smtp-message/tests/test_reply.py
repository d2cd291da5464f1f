"""Replies: RFC 5321 4.2 and 4.5.3.1.5, RFC 3463 enhanced status codes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msg_dialogue import bytewise, split_at
from msg_strategies import replies as reply_values

from smtp_message import Reply, ReplyParser, ReplySyntaxError, SMTPError

# -- The value ------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 250, 354, 421, 452, 500, 554, 559, 211, 334])
def test_reply_accepts_reply_codes(code: int) -> None:
    """RFC 5321 4.2: Reply-code = %x32-35 %x30-35 %x30-39."""
    assert Reply(code).code == code


@pytest.mark.parametrize("code", [0, 199, 260, 299, 600, 999, 160, 2500, -250])
def test_reply_refuses_other_codes(code: int) -> None:
    """RFC 5321 4.2: first digit 2-5, second 0-5."""
    with pytest.raises(ValueError, match="reply code"):
        Reply(code)


@pytest.mark.parametrize(
    ("code", "enhanced", "valid"),
    [
        (250, "2.0.0", True),
        (250, "2.1.5", True),
        (550, "5.999.999", True),  # subject, detail = 1*3digit
        (451, "4.4.1", True),
        (250, "5.0.0", False),  # RFC 3463 2: the class matches the code
        (550, "2.0.0", False),
        (354, "3.0.0", False),  # class = "2" / "4" / "5"
        (250, "2.0", False),
        (250, "2.0.0.0", False),
        (250, "2.01.0", False),  # no leading zeros
        (250, "2.1000.0", False),
        (250, "2.a.0", False),
        (250, " 2.0.0", False),
    ],
)
def test_reply_enhanced_code_grammar(code: int, enhanced: str, valid: bool) -> None:
    """RFC 3463 2: status-code = class "." subject "." detail."""
    if valid:
        assert Reply(code, enhanced).enhanced == enhanced
    else:
        with pytest.raises(ValueError, match="enhanced"):
            Reply(code, enhanced)


@pytest.mark.parametrize(
    "char", ["\r", "\n", "\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9f", "\ud800"]
)
def test_reply_refuses_control_characters_in_text(char: str) -> None:
    """RFC 5321 4.2 textstring: a reply built from untrusted text can never
    carry a line break (reply forgery) or what UTF-8 cannot encode."""
    with pytest.raises(ValueError, match="control"):
        Reply(250, None, f"a{char}b")
    with pytest.raises(ValueError, match="control"):
        Reply(250, None, ["fine", f"a{char}b"])


def test_reply_text_allows_tab_and_utf8() -> None:
    """RFC 5321 4.2 textstring allows HT; RFC 6531 3.7.4.2 allows UTF-8."""
    reply = Reply(250, None, "a\tb é ✓")
    assert reply.to_bytes() == "250 a\tb é ✓\r\n".encode()


def test_reply_lines_must_be_strings() -> None:
    """RFC 5321 4.2 textstring is text: a bytes line is a caller's mistake,
    not text to print as b'...'."""
    with pytest.raises(TypeError, match="str"):
        Reply(250, None, [b"x"])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        (Reply(250, "2.1.0", "Sender OK"), b"250 2.1.0 Sender OK\r\n"),
        (Reply(250), b"250\r\n"),
        (Reply(250, "2.0.0"), b"250 2.0.0\r\n"),
        (Reply(220, None, "mx.example ESMTP"), b"220 mx.example ESMTP\r\n"),
        (
            Reply(250, None, ["mx.example", "PIPELINING", "SIZE 1000"]),
            b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
        ),
        (
            Reply(550, "5.1.1", ["No such user", "Try again"]),
            b"550-5.1.1 No such user\r\n550 5.1.1 Try again\r\n",
        ),
        (Reply(250, None, ["a", "", "b"]), b"250-a\r\n250-\r\n250 b\r\n"),
        (Reply(250, None, []), b"250\r\n"),
        (Reply(354, None, "Go ahead"), b"354 Go ahead\r\n"),
    ],
)
def test_reply_serialises(reply: Reply, wire: bytes) -> None:
    """RFC 5321 4.2: "code SP text", or "code-text" for all but the last line;
    RFC 2034 3: the enhanced code on every line."""
    assert reply.to_bytes() == wire


def test_reply_properties() -> None:
    """RFC 5321 4.2.1: the first digit says what happened; 421 and 221 close."""
    assert Reply(250).is_positive
    assert Reply(354).is_intermediate
    assert Reply(452).is_transient
    assert Reply(554).is_permanent
    assert Reply(421).closes_connection
    assert Reply(221).closes_connection
    assert not Reply(250).closes_connection
    reply = Reply(550, "5.1.1", ["a", "b"])
    assert reply.text == "a\nb"
    assert str(reply) == "550 5.1.1 a\nb"
    assert str(Reply(250)) == "250"


def test_reply_wraps_long_lines_at_512_octets() -> None:
    """RFC 5321 4.5.3.1.5: a reply line is 512 octets at most, CRLF included.

    A long line is wrapped at spaces into continuation lines, each with the
    code and enhanced code, and nothing of the text is lost.
    """
    words = [f"word{i:04d}" for i in range(300)]
    reply = Reply(550, "5.7.1", " ".join(words))
    wire = reply.to_bytes()
    lines = wire.split(b"\r\n")[:-1]
    assert len(lines) > 1
    assert all(len(line) + 2 <= 512 for line in lines)
    assert all(line.startswith(b"550-5.7.1 ") for line in lines[:-1])
    assert lines[-1].startswith(b"550 5.7.1 ")
    parser = ReplyParser()
    parser.feed(wire)
    parsed = parser.next_reply()
    assert parsed is not None
    assert " ".join(parsed.lines).split() == words
    assert parsed.code == 550
    assert parsed.enhanced == "5.7.1"


def test_reply_wraps_a_line_without_spaces_and_keeps_characters_whole() -> None:
    """RFC 5321 4.5.3.1.5 with RFC 6531: cut where no space is, never inside
    a UTF-8 sequence."""
    text = "é" * 700  # 1400 octets
    wire = Reply(250, None, text).to_bytes()
    lines = wire.split(b"\r\n")[:-1]
    assert all(len(line) + 2 <= 512 for line in lines)
    parser = ReplyParser()
    parser.feed(wire)
    parsed = parser.next_reply()
    assert parsed is not None
    assert "".join(parsed.lines) == text


# -- The parser -------------------------------------------------------------------


def parse_all(chunks: list[bytes], parser: ReplyParser | None = None) -> list[Reply]:
    """Feed ``chunks`` one by one, collecting every complete reply."""
    parser = parser or ReplyParser()
    out = []
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not None:
            out.append(reply)
    return out


EHLO_REPLY = (
    b"250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n"
)


def test_reply_parser_incremental_and_bytewise() -> None:
    """RFC 5321 4.2.1: a multi-line reply is complete at its "code SP" line,
    however the octets arrive (RFC 2920 pipelined replies in one read)."""
    wire = EHLO_REPLY + b"250 2.1.0 OK\r\n354 Go\r\n"
    whole = parse_all([wire])
    assert [r.code for r in whole] == [250, 250, 354]
    assert whole[0].lines == (
        "mx.example Hello",
        "PIPELINING",
        "SIZE 10240000",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
    )
    assert whole[1] == Reply(250, "2.1.0", "OK")
    assert parse_all(bytewise(wire)) == whole
    parser = ReplyParser()
    parser.feed(wire[:30])
    assert parser.next_reply() is None
    assert parser.buffered == 30 - len(b"250-mx.example Hello\r\n")


def test_reply_parser_enhanced_codes() -> None:
    """RFC 2034 / RFC 3463: the code after the reply code becomes .enhanced,
    taken off every line that repeats it; only of the reply's class."""
    [reply] = parse_all([b"550-5.1.1 No such user\r\n550 5.1.1 here\r\n"])
    assert reply == Reply(550, "5.1.1", ["No such user", "here"])
    [mismatch] = parse_all([b"550 2.1.1 odd\r\n"])
    assert mismatch == Reply(550, None, "2.1.1 odd")
    [intermediate] = parse_all([b"334 2.0.0\r\n"])  # 3xx have no enhanced codes
    assert intermediate == Reply(334, None, "2.0.0")
    [only] = parse_all([b"250 2.0.0\r\n"])
    assert only == Reply(250, "2.0.0", "")
    [off] = parse_all([b"250 2.0.0 OK\r\n"], ReplyParser(enhanced=False))
    assert off == Reply(250, None, "2.0.0 OK")
    [partial] = parse_all([b"250-2.0.0 a\r\n250 b\r\n"])
    assert partial == Reply(250, "2.0.0", ["a", "b"])


def test_reply_parser_accepts_bare_code_and_empty_continuations() -> None:
    """RFC 5321 4.2: text is optional ("250" alone, "250-" continuation)."""
    [reply] = parse_all([b"250-\r\n250\r\n"])
    assert reply == Reply(250, None, ["", ""])


@pytest.mark.parametrize(
    "wire",
    [
        b"25 OK\r\n",
        b"250OK\r\n",
        b"2500 OK\r\n",
        b"600 No\r\n",
        b"199 No\r\n",
        b"260 No\r\n",
        b"abc\r\n",
        b"\r\n",
        b" 250 OK\r\n",
        b"250_OK\r\n",
        b"250-a\r\n251 b\r\n",  # a multi-line reply keeps its code
        b"250-a\r\nxyz\r\n",
        b"\x00\x00\x00\r\n",
    ],
)
def test_reply_parser_malformed_is_reply_syntax_error(wire: bytes) -> None:
    """RFC 5321 4.2: lines that are not replies raise ReplySyntaxError,
    never another exception, whatever the chunking."""
    for chunks in ([wire], bytewise(wire)):
        with pytest.raises(ReplySyntaxError):
            parse_all(chunks)


def test_reply_parser_line_and_reply_bounds() -> None:
    """RFC 5321 4.5.3.1.5 (with a liberal read limit): an endless line or an
    endless multi-line reply is an error, not memory."""
    parser = ReplyParser(max_line=100)
    parser.feed(b"250 " + b"x" * 95 + b"\r\n")  # 101 octets
    with pytest.raises(ReplySyntaxError, match="longer than 100"):
        parser.next_reply()
    endless = ReplyParser()
    for _ in range(1000):
        endless.feed(b"x" * 1024)
        try:
            endless.next_reply()
        except ReplySyntaxError:
            break
    else:
        pytest.fail("a line without end was never refused")
    assert endless.buffered <= 1024 + endless.max_line
    many = ReplyParser(max_lines=10)
    many.feed(b"250-x\r\n" * 10 + b"250 x\r\n")
    with pytest.raises(ReplySyntaxError, match="10 lines"):
        many.next_reply()


def test_reply_parser_bare_lf_does_not_end_a_line() -> None:
    """RFC 5321 2.3.8: lines end with CRLF only; a bare LF is text, made inert."""
    [reply] = parse_all([b"250 a\nb\r\n"])
    assert reply.lines == ("a\ufffdb",)


def test_reply_parser_cleans_bad_text() -> None:
    """RFC 5321 4.2 textstring is printable: malformed text from a server
    reaches logs only as inert characters."""
    [reply] = parse_all([b"250 ok\x00\x1b[31m \xff\xfe done\r\n"])
    assert reply.code == 250
    assert "\x00" not in reply.text
    assert "\x1b" not in reply.text
    assert reply.text.endswith("done")


def test_reply_parser_take_unparsed() -> None:
    """RFC 3207 4 client side: what follows the 220 is handed over, not parsed."""
    parser = ReplyParser()
    parser.feed(b"220 Go ahead\r\n250 injected\r\n")
    assert parser.next_reply() == Reply(220, None, "Go ahead")
    assert parser.take_unparsed() == b"250 injected\r\n"
    assert parser.buffered == 0
    assert parser.next_reply() is None


# The audit's case: a malformed line in the middle of an EHLO reply.
BROKEN_EHLO = b"250-mx\r\n2x0 junk\r\n250 PIPELINING\r\n"


@pytest.mark.parametrize("split", ["whole", "bytewise"])
def test_reply_parser_syntax_error_is_final(split: str) -> None:
    """RFC 5321 4.2 (h11's ERROR state): once a reply is malformed, nothing
    after it can be trusted to start a reply.  The lines of the reply in
    progress are never spliced into a later one: every later call raises
    ReplySyntaxError, whatever arrives, and nothing more is buffered."""
    parser = ReplyParser()
    chunks = [BROKEN_EHLO] if split == "whole" else bytewise(BROKEN_EHLO)
    with pytest.raises(ReplySyntaxError, match="2x0 junk"):
        parse_all(chunks, parser)
    for more in (b"", b"250 PIPELINING\r\n", b"250 2.0.0 OK\r\n"):
        parser.feed(more)
        with pytest.raises(ReplySyntaxError, match="2x0 junk"):
            parser.next_reply()
        assert parser.buffered == 0
    assert parser.broken
    assert not ReplyParser().broken


# -- Properties -------------------------------------------------------------------


@given(reply_values())
def test_reply_round_trip(reply: Reply) -> None:
    """DESIGN contract: serialise then parse gives an equal Reply (RFC 5321 4.2)."""
    [parsed] = parse_all([reply.to_bytes()])
    assert parsed == reply


@given(st.lists(reply_values(), min_size=1, max_size=5), st.data())
def test_reply_parser_chunking_invariance(replies: list[Reply], data: st.DataObject) -> None:
    """RFC 5321 4.2.1: a reply ends at its "code SP" line whatever the reads;
    any split, one byte at a time included, gives the same replies."""
    wire = b"".join(r.to_bytes() for r in replies)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
    assert parse_all(split_at(wire, cuts)) == replies
    assert parse_all(bytewise(wire)) == replies


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from([b"\r\n", b"250-", b"250 ", b"2.0.0 ", b"\r", b"\n", b"550"]),
        ),
        max_size=30,
    )
)
def test_reply_parser_never_crashes_and_stays_bounded(chunks: list[bytes]) -> None:
    """Hostile input: only ReplySyntaxError (an SMTPError), and after each
    None the buffer is below the line limit."""
    parser = ReplyParser(max_line=64, max_lines=8)
    # ReplySyntaxError is the one exception allowed to escape.
    with contextlib.suppress(ReplySyntaxError):
        for chunk in chunks:
            parser.feed(chunk)
            while (reply := parser.next_reply()) is not None:
                assert isinstance(reply, Reply)
            assert parser.buffered < 64


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.sampled_from(
                [b"\r\n", b"250-", b"250 ", b"2x0 ", b"\r", b"\n", b"550", b"250 ok\r\n"]
            ),
        ),
        max_size=30,
    )
)
def test_reply_parser_gives_no_reply_after_an_error(chunks: list[bytes]) -> None:
    """RFC 5321 4.2: after the first ReplySyntaxError no reply ever comes
    out; every call raises again; the replies before it are the ones a
    parser reading everything at once gives before its error."""
    parser = ReplyParser(max_line=64, max_lines=8)
    got: list[Reply] = []
    failed = False
    for chunk in chunks:
        parser.feed(chunk)
        for _ in range(3):
            try:
                reply = parser.next_reply()
            except ReplySyntaxError:
                failed = True
                continue
            assert not failed
            if reply is None:
                break
            got.append(reply)
    assert parser.broken == failed
    whole = ReplyParser(max_line=64, max_lines=8)
    whole.feed(b"".join(chunks))
    before: list[Reply] = []
    with contextlib.suppress(ReplySyntaxError):
        while (reply := whole.next_reply()) is not None:
            before.append(reply)
    assert got == before[: len(got)]
    if failed:
        assert whole.broken
        assert got == before


def test_reply_syntax_error_is_the_packages_error() -> None:
    """RFC 5321 4.2: a malformed reply is the server's fault, so its error
    has no reply to send; callers catch it as an SMTPError."""
    error = ReplySyntaxError("bad")
    assert isinstance(error, SMTPError)
    assert error.reply is None
