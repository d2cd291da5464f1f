"""SMTP smuggling: no bare CR or LF ever ends a DATA body.

SEC Consult (December 2023) showed that receivers which accept ``<LF>.<LF>``
(and its variants) as the end of DATA let a sender smuggle a second message
past the first one's checks; aiosmtpd had it as CVE-2024-27305.  RFC 5321
4.1.1.4 and 2.3.8: the end is ``<CRLF>.<CRLF>`` and nothing else.

Each vector is followed by a second, forged transaction; none may end the
message, under any bare-line-ending policy, in the DataReader or in a
ServerConnection, whatever the chunking.
"""

from __future__ import annotations

import re

import pytest
from msg_dialogue import bytewise, drive, split_at

from smtp_message import (
    BareLineEndings,
    BodyChunk,
    DataReader,
    DotStuffer,
    EndOfData,
    MailFrom,
    Noop,
    RcptTo,
    ReceiveBuffer,
    ServerSettings,
    replies,
)

VECTORS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"]
FORGED = (
    b"MAIL FROM:<ceo@bank.example>\r\n"
    b"RCPT TO:<victim@d.example>\r\n"
    b"DATA\r\n"
    b"From: ceo@bank.example\r\n\r\nPay now.\r\n"
)
ENVELOPE = (
    b"EHLO attacker.example\r\nMAIL FROM:<a@attacker.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
)


def normalised(data: bytes) -> bytes:
    """Every bare CR and bare LF made CRLF (RFC 5321 2.3.8)."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", data)


def smuggling_body(vector: bytes) -> bytes:
    """A body carrying the vector and a forged transaction, then the real end."""
    return b"Subject: hello\r\n\r\nharmless" + vector + FORGED + b".\r\n"


def chunkings(data: bytes) -> list[list[bytes]]:
    """Whole, one byte at a time, and cut around every CR, LF and dot."""
    around = [i for i, c in enumerate(data) if c in b"\r\n."]
    return [
        [data],
        bytewise(data),
        split_at(data, around),
        split_at(data, [i + 1 for i in around]),
    ]


@pytest.mark.parametrize("policy", list(BareLineEndings))
@pytest.mark.parametrize("vector", VECTORS, ids=repr)
def test_smuggling_vectors_never_end_data_reader(vector: bytes, policy: BareLineEndings) -> None:
    """SEC Consult 2023 / CVE-2024-27305: the DataReader ends only at the real
    CRLF . CRLF, after the forged transaction, under every policy."""
    wire = smuggling_body(vector) + b"NOOP\r\n"
    for chunks in chunkings(wire):
        reader = DataReader(policy)
        buffer = ReceiveBuffer()
        out = bytearray()
        ends = []
        for i, chunk in enumerate(chunks):
            buffer.feed(chunk)
            data, finished = reader.read(buffer)
            out += data
            if finished:
                ends.append(bytes(buffer.data) + b"".join(chunks[i + 1 :]))
                break
        # One end, and what follows it is what followed the real terminator.
        assert ends == [b"NOOP\r\n"]
        # The octets are data; a dot after a CRLF is unstuffed as any
        # line's first dot is (RFC 5321 4.5.2).
        kept = (b"harmless" + vector + FORGED).replace(b"\r\n.", b"\r\n")
        if policy is BareLineEndings.KEEP:
            assert reader.violation is None
            assert bytes(out) == b"Subject: hello\r\n\r\n" + kept
        elif policy is BareLineEndings.NORMALIZE:
            # The same data with CRLF line endings: the forged lines are
            # message text after a "." line, not a second transaction.
            assert reader.violation is None
            assert bytes(out) == b"Subject: hello\r\n\r\n" + normalised(kept)
            assert normalised(FORGED) in out
        else:
            # RFC 5321 2.3.8: refused whole, never split into two messages.
            assert reader.violation == replies.BARE_LINE_ENDING
            assert bytes(out) == b"" or b"MAIL FROM:<ceo" not in out


@pytest.mark.parametrize("policy", list(BareLineEndings))
@pytest.mark.parametrize("vector", VECTORS, ids=repr)
def test_smuggling_vectors_through_server_connection(
    vector: bytes, policy: BareLineEndings
) -> None:
    """SEC Consult 2023: through a whole server session the forged MAIL FROM
    never surfaces as a command.  REJECT (the default) refuses the message
    whole with 554 5.6.0; KEEP accepts one message that contains it, and
    NORMALIZE one that contains it with CRLF line endings (RFC 5321 2.3.8)."""
    settings = ServerSettings(hostname="mx.example", bare_line_endings=policy)
    wire = ENVELOPE + smuggling_body(vector) + b"NOOP\r\n"
    for chunks in chunkings(wire):
        _, run = drive(chunks, settings)
        mails = [e for e in run.events if isinstance(e, MailFrom)]
        assert mails == [MailFrom(mails[0].reverse_path)]
        assert str(mails[0].reverse_path) == "a@attacker.example"
        assert not [
            e for e in run.events if isinstance(e, RcptTo) and e.forward_path.local_part == "victim"
        ]
        # The session is in step after the message: NOOP is the next command.
        assert run.events[-1] == Noop()
        refusals = [e[1] for e in run.events if isinstance(e, tuple)]
        if policy is not BareLineEndings.REJECT:
            assert refusals == []
            body = b"".join(e.data for e in run.events if isinstance(e, BodyChunk))
            assert FORGED in body
            if policy is BareLineEndings.NORMALIZE:
                assert body == normalised(body)
            assert sum(isinstance(e, EndOfData) for e in run.events) == 1
            assert b"250 2.0.0 Message accepted\r\n" in run.output
        else:
            assert refusals == [replies.BARE_LINE_ENDING]
            assert not any(isinstance(e, EndOfData) for e in run.events)
            assert b"554 5.6.0 Message contains bare CR or LF\r\n" in run.output
            assert b"Message accepted" not in run.output


@pytest.mark.parametrize("vector", VECTORS, ids=repr)
def test_smuggling_vectors_are_defused_by_the_sender(vector: bytes) -> None:
    """RFC 5321 2.3.8 and 4.5.2: a sender given such a body normalises the
    bare endings to CRLF and stuffs the dot, so what it sends ends once, at
    its own terminator, and the forged lines arrive as text."""
    body = b"harmless" + vector + FORGED
    stuffer = DotStuffer()
    wire = stuffer.feed(body) + stuffer.end()
    reader = DataReader()
    buffer = ReceiveBuffer()
    buffer.feed(wire + b"NOOP\r\n")
    data, finished = reader.read(buffer)
    assert finished
    assert reader.violation is None
    assert bytes(buffer.data) == b"NOOP\r\n"
    assert FORGED in data
    assert b"\r\n.\r\n" in data  # the dot line is data, unstuffed
