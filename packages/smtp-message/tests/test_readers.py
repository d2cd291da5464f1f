"""The incremental readers: command lines, DATA bodies, BDAT chunks, and the
dot-stuffer that is the DATA reader's inverse."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msg_dialogue import Run, bytewise, drive, split_at

from smtp_message import (
    NEED_DATA,
    BareLineEndingError,
    BareLineEndings,
    BodyChunk,
    DataReader,
    DotStuffer,
    Ehlo,
    EndOfData,
    LineEndingNormalizer,
    LineTooLongError,
    LocalProtocolError,
    MailFrom,
    Noop,
    Quit,
    ReceiveBuffer,
    RemoteProtocolError,
    ServerConnection,
    ServerSettings,
    replies,
)
from smtp_message._limits import (
    MAIL_LINE_ALLOWANCE,
    MAX_AUTH_LINE,
    RCPT_LINE_ALLOWANCE,
)

HELLO = b"EHLO c.example\r\n"
ENVELOPE = HELLO + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
MIB = 1024 * 1024


def errors(run: Run) -> list[object]:
    """The replies of the refused commands, in order."""
    return [e[1] for e in run.events if isinstance(e, tuple)]


def commands(run: Run) -> list[object]:
    """The events that are not body data or refusals."""
    return [e for e in run.events if not isinstance(e, (tuple, BodyChunk))]


# -- Command lines ------------------------------------------------------------------


def test_command_line_limit_is_512_octets_with_crlf() -> None:
    """RFC 5321 4.5.3.1.4: "The maximum total length of a command line
    including the command word and the <CRLF> is 512 octets"."""
    fits = b"NOOP " + b"x" * 505 + b"\r\n"
    assert len(fits) == 512
    _, run = drive([HELLO + fits])
    assert commands(run)[-1] == Noop("x" * 505)
    assert errors(run) == []
    over = b"NOOP " + b"x" * 506 + b"\r\n"
    _, run = drive([HELLO + over + b"NOOP\r\n"])
    assert errors(run) == [replies.LINE_TOO_LONG]
    assert commands(run)[-1] == Noop()


def test_command_line_too_long_reported_once_and_never_buffered() -> None:
    """RFC 5321 4.5.3.1.10 "500 Line too long", once, as soon as the limit is
    passed; the excess is dropped as it arrives (4 MiB fed in 64 KiB reads
    never raise the buffer above the limit), and the reader resynchronises
    at the next CRLF."""
    conn = ServerConnection(ServerSettings())
    conn.send(conn.greeting())
    conn.receive_data(HELLO)
    ehlo = conn.next_event()
    assert isinstance(ehlo, Ehlo)
    conn.send(conn.default_reply(ehlo))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"NOOP " + b"A" * 600)  # no CRLF yet
    with pytest.raises(LineTooLongError) as err:
        conn.next_event()
    assert err.value.reply == replies.LINE_TOO_LONG
    assert conn.send(err.value.reply) == b"500 5.5.6 Line too long\r\n"
    fed = 0
    while fed < 4 * MIB:
        # Octets that would be commands if the reader ever resynced early.
        conn.receive_data(b"QUIT\nRSET\r" * 6553 + b"QUIT")
        fed += 65534
        assert conn.next_event() is NEED_DATA
        assert len(conn.trailing_data) <= 1
    conn.receive_data(b"tail\r\nNOOP\r\n")
    assert conn.next_event() == Noop()
    assert conn.send(conn.default_reply(Noop())) == b"250 2.0.0 OK\r\n"
    assert conn.errors == 1


def test_command_line_too_long_with_crlf_split_across_reads() -> None:
    """RFC 5321 2.3.8: the line ends at its CRLF even when CR and LF arrive
    apart; the command after it is read normally."""
    chunks = [HELLO + b"NOOP " + b"x" * 600 + b"\r", b"\nQUIT\r\n"]
    _, run = drive(chunks)
    assert errors(run) == [replies.LINE_TOO_LONG]
    assert commands(run)[-1] == Quit()


def test_command_line_limit_allowances() -> None:
    """RFC 1870, 3461 and 4954: MAIL and RCPT lines get room for their
    parameters, AUTH lines and SASL responses 12288 octets (RFC 4954 4)."""
    settings = ServerSettings(extra_mail_parameters={"X"}, extra_rcpt_parameters={"X"})

    def mail(total: int) -> bytes:
        head = b"MAIL FROM:<a@b.example> X="
        return head + b"v" * (total - len(head) - 2) + b"\r\n"

    def rcpt(total: int) -> bytes:
        head = b"RCPT TO:<c@d.example> X="
        return head + b"v" * (total - len(head) - 2) + b"\r\n"

    limit = 512 + MAIL_LINE_ALLOWANCE
    _, run = drive([HELLO + mail(limit) + rcpt(512 + RCPT_LINE_ALLOWANCE)], settings)
    assert errors(run) == []
    assert isinstance(commands(run)[-2], MailFrom)
    _, run = drive([HELLO + mail(limit + 1)], settings)
    assert errors(run) == [replies.LINE_TOO_LONG]
    _, run = drive([ENVELOPE + rcpt(512 + RCPT_LINE_ALLOWANCE + 1)], settings)
    assert errors(run) == [replies.LINE_TOO_LONG]
    # Other verbs get no allowance.
    _, run = drive([HELLO + b"HELP " + b"x" * 600 + b"\r\n"])
    assert errors(run) == [replies.LINE_TOO_LONG]
    # An AUTH line of 12288 octets is read whole (RFC 4954 4); its
    # mechanism is then judged (not offered here: 502).
    auth = b"AUTH PLAIN123 " + b"A" * (MAX_AUTH_LINE - 16) + b"\r\n"
    assert len(auth) == MAX_AUTH_LINE
    _, run = drive([HELLO + auth])
    assert errors(run) == [replies.NOT_IMPLEMENTED]
    _, run = drive([HELLO + auth[:-2] + b"AAAA\r\n"])
    assert errors(run) == [replies.LINE_TOO_LONG]


def test_command_line_limit_is_configurable_upwards_only() -> None:
    """RFC 5321 4.5.3.1: limits may be raised, never lowered below 512."""
    with pytest.raises(ValueError, match="512"):
        ServerSettings(max_line_length=511)
    line = b"NOOP " + b"x" * 1000 + b"\r\n"
    _, run = drive([HELLO + line], ServerSettings(max_line_length=2048))
    assert errors(run) == []


def test_command_line_bare_lf_and_cr_do_not_end_a_command() -> None:
    """RFC 5321 2.3.8: "CR and LF MUST only occur together as CRLF"; a line
    with a bare one is refused whole, so nothing after it runs."""
    _, run = drive([HELLO + b"NOOP\nQUIT\r\nNOOP\rQUIT\r\n"])
    assert errors(run) == [replies.EIGHT_BIT_COMMAND, replies.EIGHT_BIT_COMMAND]
    assert Quit() not in commands(run)


@given(st.lists(st.binary(max_size=700), max_size=12), st.data())
def test_command_reader_chunking_invariance(lines: list[bytes], data: st.DataObject) -> None:
    """RFC 5321 2.3.8 (lines end at CRLF, wherever the reads cut them): any
    split of the input gives the same events and replies, one byte at a time
    included: commands, refusals, over-long lines, bodies."""
    pieces = [HELLO]
    for line in lines:
        pieces.append(line.replace(b"\r\n", b"") + b"\r\n")
    wire = b"".join(pieces)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=30))
    _, whole = drive([wire])
    _, split = drive(split_at(wire, cuts))
    _, single = drive(bytewise(wire))
    assert split.merged() == whole.merged()
    assert split.output == whole.output
    assert single.merged() == whole.merged()
    assert single.output == whole.output


COMMANDISH = st.sampled_from(
    [
        b"EHLO x\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"RCPT TO:<c@d.example>\r\n",
        b"DATA\r\n",
        b"BDAT 5\r\n",
        b"BDAT 3 LAST\r\n",
        b"RSET\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"..\r\n",
        b"\n",
        b"\r",
        b"AUTH PLAIN\r\n",
        b"STARTTLS\r\n",
        b"QUIT\r\n",
        b"x" * 600,
    ]
)


@given(st.lists(COMMANDISH | st.binary(max_size=50), max_size=25), st.data())
def test_server_reader_never_crashes_and_stays_bounded(
    pieces: list[bytes], data: st.DataObject
) -> None:
    """Hostile input: whatever arrives, next_event raises nothing but
    RemoteProtocolError (drive answers those with their reply; anything else
    fails the test), and after each NEED_DATA the buffer is under the bound
    (drive asserts it)."""
    wire = b"".join(pieces)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10))
    settings = ServerSettings(auth_mechanisms=("PLAIN",), auth_requires_tls=False, starttls=True)
    conn, _ = drive(split_at(wire, cuts), settings, eof=True)
    assert conn.state.name == "CLOSED"


# -- DATA bodies --------------------------------------------------------------------


def read_body(
    chunks: list[bytes],
    policy: BareLineEndings = BareLineEndings.REJECT,
    max_size: int | None = None,
) -> tuple[bytes, bool, DataReader, bytes]:
    """Feed ``chunks`` to a DataReader; (body, finished, reader, leftover)."""
    reader = DataReader(policy, max_size)
    buffer = ReceiveBuffer()
    out = bytearray()
    finished = False
    for i, chunk in enumerate(chunks):
        buffer.feed(chunk)
        data, finished = reader.read(buffer)
        out += data
        if finished:
            return (
                bytes(out),
                True,
                reader,
                bytes(buffer.data) + b"".join(chunks[i + 1 :]),
            )
        # Nothing more than the start of a possible terminator is held.
        assert len(buffer) <= 4
    return bytes(out), False, reader, bytes(buffer.data)


def unstuffed(wire: bytes) -> tuple[bytes, bool, bytes]:
    """The reference reader, line by line (RFC 5321 4.1.1.4 and 4.5.2).

    Without an end, the body so far: the complete lines and the partial one.
    """
    lines = wire.split(b"\r\n")
    out: list[bytes] = []
    for i, line in enumerate(lines[:-1]):
        if line == b".":
            return b"".join(out), True, b"\r\n".join(lines[i + 1 :])
        out.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
    partial = lines[-1]
    out.append(partial[1:] if partial.startswith(b".") else partial)
    return b"".join(out), False, b""


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (b".\r\n", b""),  # the empty message
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"..\r\n.\r\n", b".\r\n"),  # RFC 5321 4.5.2: the first dot goes
        (b"...\r\n.\r\n", b"..\r\n"),
        (b"..x\r\n.\r\n", b".x\r\n"),
        (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
        (b"a\r\n. \r\n.\r\n", b"a\r\n \r\n"),
        (b"a.b\r\n.\r\n", b"a.b\r\n"),  # only a line's first octet
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n"),
        (b"\r\n.\r\n", b"\r\n"),
        (b".x", None),  # no end yet
        (b"a\r\n.", None),
        (b"a\r\n.\r", None),
        (b"a\r\n.x\r\n", None),
        (b"a\r\n. \r\n", None),
    ],
)
def test_data_reader_unstuffing_and_end(wire: bytes, body: bytes | None) -> None:
    """RFC 5321 4.1.1.4: the data ends with a line containing only "."; 4.5.2:
    a leading dot is removed from any other line.  Whole or bytewise."""
    for chunks in ([wire], bytewise(wire)):
        out, finished, reader, _ = read_body(chunks)
        assert reader.violation is None
        if body is None:
            assert not finished
        else:
            assert finished
            assert out == body
            assert reader.size == len(body)


def test_data_reader_leaves_what_follows_the_end() -> None:
    """RFC 2920: commands pipelined after the body stay in the buffer."""
    out, finished, _, rest = read_body([b"hi\r\n.\r\nQUIT\r\nNOOP"])
    assert (out, finished, rest) == (b"hi\r\n", True, b"QUIT\r\nNOOP")


@pytest.mark.parametrize("vector", [b"\n", b"\r", b"\n\r", b"\r\r\n", b"\r\n\n"])
def test_data_reader_bare_line_ending_policy(vector: bytes) -> None:
    """RFC 5321 2.3.8 with the smuggling defence: REJECT (the default) reads
    to the end and reports 554 5.6.0; KEEP passes the octets through."""
    wire = b"a" + vector + b"b\r\n.\r\n"
    out, finished, reader, _ = read_body([wire])
    assert finished
    assert reader.violation == replies.BARE_LINE_ENDING
    assert out == b""
    kept, finished, reader, _ = read_body(bytewise(wire), BareLineEndings.KEEP)
    assert finished
    assert reader.violation is None
    assert kept == b"a" + vector + b"b\r\n"


def normalised(data: bytes) -> bytes:
    """Every bare CR and bare LF made CRLF (RFC 5321 2.3.8)."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


@pytest.mark.parametrize(
    ("wire", "body"),
    [
        (b"a\nb\r\n.\r\n", b"a\r\nb\r\n"),
        (b"a\rb\r\n.\r\n", b"a\r\nb\r\n"),
        (b"a\n\rb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\r\r\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\r\n\nb\r\n.\r\n", b"a\r\n\r\nb\r\n"),
        (b"\n.\r\n.\r\n", b"\r\n.\r\n"),  # the first "." follows no CRLF
        (b"a\r\r\n.\r\n", b"a\r\n\r\n"),
        (b"a\r\n.\r\r\n.\r\n", b"a\r\n\r\n\r\n"),  # ".<CR>" is unstuffed
        (b"a\n..b\r\n.\r\n", b"a\r\n..b\r\n"),  # nor is "." after a bare LF
    ],
)
def test_data_reader_normalize_policy(wire: bytes, body: bytes) -> None:
    """RFC 5321 2.3.8: NORMALIZE makes each bare CR or LF a CRLF.  The end
    (4.1.1.4) and the dot-unstuffing (4.5.2) follow CRLF only, as under
    KEEP, so a bare ending never ends the body or unstuffs a line; the size
    (RFC 1870) is the normalised body's.  Whole, bytewise, around CRs."""
    cuts = [i for i, c in enumerate(wire) if c == 0x0D]
    for chunks in ([wire], bytewise(wire), split_at(wire, cuts)):
        out, finished, reader, rest = read_body([*chunks, b"NOOP\r\n"], BareLineEndings.NORMALIZE)
        assert finished
        assert reader.violation is None
        assert out == body
        assert reader.size == len(body)
        assert rest == b"NOOP\r\n"


def test_data_reader_normalize_counts_the_normalised_size() -> None:
    """RFC 1870 6.1 with RFC 5321 2.3.8: the limit applies to the octets
    delivered, each bare LF counting as the CRLF it becomes."""
    wire = b"a\n" * 10 + b"\r\n.\r\n"  # 22 octets of body, 32 normalised
    assert read_body([wire], BareLineEndings.NORMALIZE, max_size=32)[2].violation is None
    _, finished, reader, _ = read_body([wire], BareLineEndings.NORMALIZE, max_size=31)
    assert finished
    assert reader.violation == replies.MESSAGE_TOO_BIG


def test_data_reader_size_limit() -> None:
    """RFC 1870 6.1: 552 5.3.4 past the limit; the body is read to its end
    (so the session stays in step) and counted after unstuffing."""
    body = b"..x\r\n" * 10  # 50 octets on the wire, 40 unstuffed
    out, finished, reader, _ = read_body([body + b".\r\n"], max_size=40)
    assert finished
    assert reader.violation is None
    assert reader.size == 40
    assert out == b".x\r\n" * 10
    out, finished, reader, rest = read_body([body + b".\r\nQUIT\r\n"], max_size=39)
    assert finished
    assert reader.violation == replies.MESSAGE_TOO_BIG
    assert out == b""
    assert rest == b"QUIT\r\n"


def test_data_reader_bare_line_ending_wins_over_size_whatever_the_reads() -> None:
    """RFC 5321 2.3.8 and RFC 1870 6.1: a body over the limit with a bare LF
    after the limit is reached gets 554 5.6.0, read whole or a byte at a
    time: the verdict does not depend on where the reads fell."""
    wire = b"x" * 60 + b"\r\nlate\nLF\r\n.\r\n"
    for chunks in ([wire], bytewise(wire), [wire[:62], wire[62:]]):
        _, finished, reader, _ = read_body(chunks, max_size=50)
        assert finished
        assert reader.violation == replies.BARE_LINE_ENDING
    _, _, reader, _ = read_body(bytewise(wire), BareLineEndings.NORMALIZE, max_size=50)
    assert reader.violation == replies.MESSAGE_TOO_BIG


@given(
    st.lists(
        st.sampled_from([b"\r\n", b".", b"\r", b"\n", b"a", b"\r\n.\r\n", b"xxxxxxxx"]),
        max_size=40,
    ),
    st.integers(0, 60),
    st.sampled_from(BareLineEndings),
    st.data(),
)
def test_data_reader_verdict_does_not_depend_on_the_reads(
    parts: list[bytes], max_size: int, policy: BareLineEndings, data: st.DataObject
) -> None:
    """RFC 5321 4.1.1.4, 2.3.8 and RFC 1870 6.1: for any body, size limit and
    policy, any split gives the end, the leftover and the violation one read
    gives, and without a violation the same body and size."""
    wire = b"".join(parts) + b"\r\n.\r\nNOOP\r\n"
    out, finished, reader, rest = read_body([wire], policy, max_size)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    for chunks in (split_at(wire, cuts), bytewise(wire)):
        got, got_finished, got_reader, got_rest = read_body(chunks, policy, max_size)
        assert (got_finished, got_rest) == (finished, rest)
        assert got_reader.violation == reader.violation
        if reader.violation is None:
            assert (got, got_reader.size) == (out, reader.size)


def test_data_reader_streams_and_never_accumulates() -> None:
    """DESIGN: bodies are streamed.  16 MiB in 64 KiB reads come out as they
    go in: each read gives back all but the last few octets it was fed."""
    line = b"x" * 78 + b"\r\n"
    # Each read ends between the CR and the LF of a line end.
    chunk = b"\n" + line * 818 + b".x" + b"y" * 76 + b"\r"
    reader = DataReader()
    buffer = ReceiveBuffer()
    buffer.feed(b"first\r")
    total = len(reader.read(buffer)[0])
    for _ in range(256):
        buffer.feed(chunk)
        data, finished = reader.read(buffer)
        assert not finished
        assert len(buffer) <= 4
        assert len(data) >= len(chunk) - 4
        total += len(data)
    buffer.feed(b"\n.\r\n")
    data, finished = reader.read(buffer)
    assert finished
    assert total + len(data) == reader.size
    assert reader.violation is None


@given(
    st.lists(
        st.sampled_from([b"\r\n", b".", b"..", b"\r", b"\n", b"a", b"\r\n.\r\n", b"\x00"])
        | st.binary(max_size=8),
        max_size=40,
    ),
    st.data(),
)
def test_data_reader_matches_reference_under_any_chunking(
    parts: list[bytes], data: st.DataObject
) -> None:
    """RFC 5321 4.1.1.4 and 4.5.2: any split of any input gives what a
    line-by-line reference reader gives: same body, same end, same leftover;
    a bare CR or LF in the body is a violation under REJECT, data under KEEP,
    and a CRLF under NORMALIZE (2.3.8)."""
    wire = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    body, end, rest = unstuffed(wire)
    lines = body.split(b"\r\n")
    bare = any(b"\r" in line or b"\n" in line for line in lines)
    for chunks in (split_at(wire, cuts), bytewise(wire)):
        kept, finished, reader, leftover = read_body(chunks, BareLineEndings.KEEP)
        assert finished == end
        assert reader.violation is None
        if end:
            assert kept == body
            assert leftover == rest
        else:
            # All of it but the start of a possible "CRLF . CRLF".
            assert body.startswith(kept)
            assert len(body) - len(kept) <= 4
        # NORMALIZE: what KEEP gives, each bare CR or LF made CRLF.
        fixed, finished, reader, leftover = read_body(chunks, BareLineEndings.NORMALIZE)
        assert finished == end
        assert reader.violation is None
        assert fixed == normalised(kept)
        assert reader.size == len(fixed)
        if end:
            assert leftover == rest
        out, finished, reader, leftover = read_body(chunks)
        assert finished == end
        if end:
            assert leftover == rest
            assert (reader.violation is not None) == bare
            if not bare:
                assert out == body


@given(st.binary(max_size=300), st.data())
def test_data_reader_arbitrary_bytes_never_crash(wire: bytes, data: st.DataObject) -> None:
    """Hostile input: any octets read without exception, the buffer bounded."""
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10))
    for policy in BareLineEndings:
        read_body(split_at(wire, cuts), policy, max_size=100)


# -- BDAT -----------------------------------------------------------------------------


def test_bdat_exact_counts_and_binary_safety() -> None:
    """RFC 3030 2: exactly chunk-size octets follow BDAT, whatever they are:
    a QUIT, a lone dot line, CR, LF and NUL octets are all data."""
    chunk1 = b"QUIT\r\n"
    chunk2 = bytes(range(256)) + b"\r\n.\r\nRSET\r\n"
    wire = (
        ENVELOPE
        + b"BDAT %d\r\n" % len(chunk1)
        + chunk1
        + b"BDAT %d LAST\r\n" % len(chunk2)
        + chunk2
        + b"NOOP\r\n"
    )
    for chunks in ([wire], bytewise(wire)):
        _, run = drive(chunks)
        assert errors(run) == []
        assert run.bodies() == [chunk1 + chunk2]
        assert Quit() not in commands(run)
        assert commands(run)[-1] == Noop()
        assert b"250 2.0.0 6 octets received\r\n" in run.output


def test_bdat_zero_size_last_ends_the_message() -> None:
    """RFC 3030 2: "BDAT 0 LAST" is a valid, empty, last chunk."""
    _, run = drive([ENVELOPE + b"BDAT 3\r\nabcBDAT 0 LAST\r\n"])
    assert run.bodies() == [b"abc"]
    assert isinstance(commands(run)[-1], EndOfData)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6), st.data())
def test_bdat_chunking_invariance(chunks: list[bytes], data: st.DataObject) -> None:
    """RFC 3030 2: however the octets arrive, the chunks come out whole."""
    wire = bytearray(ENVELOPE)
    for i, chunk in enumerate(chunks):
        last = b" LAST" if i == len(chunks) - 1 else b""
        wire += b"BDAT %d%s\r\n" % (len(chunk), last) + chunk
    wire += b"QUIT\r\n"
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=20))
    _, run = drive(split_at(bytes(wire), cuts))
    assert errors(run) == []
    assert run.bodies() == [b"".join(chunks)]
    assert commands(run)[-1] == Quit()


# -- Dot-stuffing (the sender's side) ----------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([b""], b".\r\n"),
        ([b"a\r\n"], b"a\r\n.\r\n"),
        ([b"a"], b"a\r\n.\r\n"),  # the terminator is a line of its own
        ([b".a\r\n"], b"..a\r\n.\r\n"),  # the first line too
        ([b"a\r\n.\r\n"], b"a\r\n..\r\n.\r\n"),
        ([b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r", b"\n.b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\r\n.", b"b"], b"a\r\n..b\r\n.\r\n"),
        ([b"a\n.b"], b"a\r\n..b\r\n.\r\n"),  # bare LF normalised first
        ([b"a\r.b\r"], b"a\r\n..b\r\n.\r\n"),  # final bare CR too
        ([b"a\r", b"", b"\r\n"], b"a\r\n\r\n.\r\n"),
    ],
)
def test_dot_stuffer(chunks: list[bytes], wire: bytes) -> None:
    """RFC 5321 4.5.2: "If it is a period, one additional period is
    inserted"; 4.1.1.4: the body ends with CRLF . CRLF; bare CR and LF
    become CRLF (the sender's default), across chunk boundaries."""
    stuffer = DotStuffer()
    out = b"".join(stuffer.feed(c) for c in chunks) + stuffer.end()
    assert out == wire
    assert stuffer.size == len(unstuffed(wire)[0])


def test_dot_stuffer_policies() -> None:
    """RFC 5321 2.3.8: a sender refuses bare CR/LF (REJECT) or fixes them;
    it never sends them as they are (KEEP cannot be chosen).  The refusal
    is the package's BareLineEndingError, a LocalProtocolError and still a
    ValueError."""
    with pytest.raises(BareLineEndingError, match="bare"):
        DotStuffer(BareLineEndings.REJECT).feed(b"a\nb")
    stuffer = DotStuffer(BareLineEndings.REJECT)
    stuffer.feed(b"a\r")
    with pytest.raises(BareLineEndingError, match="bare CR"):
        stuffer.end()
    with pytest.raises(BareLineEndingError, match="cannot keep"):
        DotStuffer(BareLineEndings.KEEP)
    with pytest.raises(BareLineEndingError, match="bare"):
        LineEndingNormalizer(reject=True).feed(b"a\rb")
    assert issubclass(BareLineEndingError, LocalProtocolError)
    assert issubclass(BareLineEndingError, ValueError)
    normalizer = LineEndingNormalizer()
    assert normalizer.feed(b"a\r") == b"a"
    assert normalizer.feed(b"\rb\n") == b"\r\n\r\nb\r\n"
    assert normalizer.feed(b"c\r") == b"c"
    assert normalizer.flush() == b"\r\n"
    assert normalizer.flush() == b""


BODY_PARTS = st.sampled_from([b"\r\n", b".", b"..", b"a", b"\r\n.", b"\r\n.\r\n", b" "])


@given(st.lists(BODY_PARTS | st.binary(max_size=6), max_size=40), st.data())
def test_dot_stuffing_then_unstuffing_is_identity(parts: list[bytes], data: st.DataObject) -> None:
    """RFC 5321 4.5.2: the receiver's unstuffing inverts the sender's
    stuffing, for any body and any chunking on either side; a body with
    bare CR or LF arrives normalised, and is never cut short."""
    body = b"".join(parts)
    send_cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    stuffer = DotStuffer()
    wire = b"".join(stuffer.feed(c) for c in split_at(body, send_cuts)) + stuffer.end()
    normalised = LineEndingNormalizer()
    expected = normalised.feed(body) + normalised.flush()
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    receive_cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8))
    out, finished, reader, rest = read_body(split_at(wire, receive_cuts))
    assert finished
    assert reader.violation is None
    assert out == expected
    assert rest == b""
    assert stuffer.size == reader.size == len(expected)


# -- The receive buffer ---------------------------------------------------------------


def test_receive_buffer_lines() -> None:
    """RFC 5321 2.3.8: only CRLF ends a line; a line over the limit is
    reported without being consumed; skipping keeps a possible CR half."""
    buffer = ReceiveBuffer()
    buffer.feed(b"ab\ncd\rx\r")
    assert buffer.take_line(100) is None
    buffer.feed(b"\nnext")
    assert buffer.take_line(100) == b"ab\ncd\rx"
    assert buffer.take_line(100) is None
    assert buffer.take_line(4) is ReceiveBuffer.TOO_LONG
    assert bytes(buffer.data) == b"next"
    assert not buffer.skip_line()
    assert len(buffer) == 0
    buffer.feed(b"zz\r")
    assert not buffer.skip_line()
    assert bytes(buffer.data) == b"\r"
    buffer.feed(b"\nok\r\n")
    assert buffer.skip_line()
    assert buffer.take_line(4) == b"ok"
    buffer.feed(b"12345")
    assert buffer.take(2) == b"12"
    assert buffer.take_all() == b"345"
    assert not buffer


def test_receive_buffer_line_of_exactly_the_limit() -> None:
    """RFC 5321 4.5.3.1.4: the limit counts the CRLF."""
    buffer = ReceiveBuffer()
    buffer.feed(b"x" * 510 + b"\r\n")
    assert buffer.take_line(512) == b"x" * 510
    buffer.feed(b"x" * 511 + b"\r\n")
    assert buffer.take_line(512) is ReceiveBuffer.TOO_LONG


def test_remote_protocol_error_carries_reply() -> None:
    """STYLE (wsproto): the server's errors carry the exact reply to send."""
    error = RemoteProtocolError(replies.BAD_SEQUENCE)
    assert error.reply == replies.BAD_SEQUENCE
    assert str(error) == "Bad sequence of commands"
