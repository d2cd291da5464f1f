"""What the client sends: bodies, line endings, extensions and parameters.

Against the scripted server (a test double that records the wire), so each
test can check exactly which commands and octets went out, or that none did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtp_client import (
    Client,
    Envelope,
    Recipient,
    SendResult,
    SmartHost,
    Status,
    Timeouts,
    TLSPolicy,
)
from smtp_client._connection import BDAT_CHUNK
from smtp_message import (
    BareLineEndings,
    LineEndingNormalizer,
    Mailbox,
    MailParams,
    Notify,
    OriginalRecipient,
    RcptParams,
    Ret,
)

from .conftest import Dialogue, Scripted, scripted_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

FAST = Timeouts(
    connect=5,
    greeting=5,
    command=5,
    mail=5,
    rcpt=5,
    data_init=5,
    data_block=5,
    data_end=5,
)
CHUNKING = ["PIPELINING", "CHUNKING", "8BITMIME", "ENHANCEDSTATUSCODES"]


async def send(
    dialogue: Dialogue,
    body: Any,
    env: Envelope | None = None,
    **client: Any,
) -> tuple[SendResult, Scripted]:
    env = env or Envelope.build("sender@client.test", ["a@x.test"])
    client.setdefault("timeouts", FAST)
    async with (
        scripted_server(dialogue) as server,
        Client(helo="client.test", **client) as c,
    ):
        result = await c.send(
            SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none()),
            env,
            body,
        )
    return result, server


def mail_line(server: Scripted) -> bytes:
    lines = server.peers[0].lines
    return next(line for line in lines if line.startswith(b"MAIL"))


async def test_body_bare_lf_smuggling_attempt_is_normalised() -> None:
    """SMTP smuggling (SEC Consult, Dec 2023) / RFC 5321 2.3.8 and 4.5.2.

    A body carrying ``<LF>.<LF>MAIL FROM:...`` must reach the server as
    ordinary, dot-stuffed lines of one message: the server sees exactly one
    message, and no second MAIL command.
    """
    body = b"Subject: x\n\nhello\n.\nMAIL FROM:<evil@x.test>\nRCPT TO:<v@x.test>\nDATA\n\rX\r.\r\n"
    dialogue = Dialogue()
    result, server = await send(dialogue, body)
    assert result.recipients[0].status is Status.DELIVERED
    (received,) = dialogue.bodies
    assert received == (
        b"Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<evil@x.test>\r\n"
        b"RCPT TO:<v@x.test>\r\nDATA\r\n\r\nX\r\n.\r\n"
    )
    mails = [line for line in server.peers[0].lines if line.startswith(b"MAIL")]
    assert len(mails) == 1  # the payload's MAIL stayed message text
    wire = bytes(server.peers[0].received)
    assert b"\n.\n" not in wire.replace(b"\r\n", b"")
    assert b"\r\n..\r\nMAIL FROM:<evil" in wire


async def test_body_bare_line_ending_refused_by_policy_sends_nothing() -> None:
    """RFC 5321 2.3.8 under the REJECT policy: permanent 5.6.0, nothing written."""
    dialogue = Dialogue()
    result, server = await send(dialogue, b"a\nb\r\n", bare_line_endings=BareLineEndings.REJECT)
    (r,) = result.recipients
    assert r.status is Status.PERMANENT
    assert r.reply.enhanced == "5.6.0"
    assert not r.remote
    assert server.peers == []  # refused before connecting


async def test_body_streamed_bare_cr_refused_midway_delivers_nothing() -> None:
    """RFC 5321 2.3.8: found while streaming: the connection is dropped before
    the end-of-data mark, so the server delivers nothing."""

    async def pieces() -> AsyncIterator[bytes]:
        yield b"Subject: x\r\n\r\nfine\r\n"
        yield b"bad\rline\r\n"

    dialogue = Dialogue()
    result, server = await send(dialogue, pieces(), bare_line_endings=BareLineEndings.REJECT)
    (r,) = result.recipients
    assert r.status is Status.PERMANENT
    assert r.reply.enhanced == "5.6.0"
    assert dialogue.bodies == []
    assert not bytes(server.peers[0].received).endswith(b"\r\n.\r\n")


async def test_body_dot_lines_are_stuffed() -> None:
    """RFC 5321 4.5.2: a line starting with "." gets one more; the body survives."""
    body = b".\r\n..\r\n.x\r\nend"
    dialogue = Dialogue()
    _, server = await send(dialogue, body)
    assert dialogue.bodies == [b".\r\n..\r\n.x\r\nend\r\n"]
    wire = bytes(server.peers[0].received)
    assert wire.endswith(b"DATA\r\n..\r\n...\r\n..x\r\nend\r\n.\r\nQUIT\r\n")


async def test_size_declared_and_oversize_fails_before_mail() -> None:
    """RFC 1870 4 and 6: SIZE= on MAIL; too big for the server's limit: 552
    5.3.4, permanent, before anything is sent."""
    dialogue = Dialogue(extensions=["PIPELINING", "SIZE 1000"])
    result, server = await send(dialogue, b"x" * 998 + b"\r\n")
    assert mail_line(server) == b"MAIL FROM:<sender@client.test> SIZE=1000"
    assert result.recipients[0].status is Status.DELIVERED
    result, server = await send(dialogue, b"x" * 1000 + b"\r\n")
    (r,) = result.recipients
    assert r.status is Status.PERMANENT
    assert (r.reply.code, r.reply.enhanced) == (552, "5.3.4")
    assert not r.remote
    assert not any(line.startswith(b"MAIL") for line in server.peers[0].lines)


async def test_size_exceeded_by_a_stream_aborts_without_delivery() -> None:
    """RFC 1870 6: a streamed body found too big midway is never completed."""

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 98 + b"\r\n"

    dialogue = Dialogue(extensions=["PIPELINING", "SIZE 500"])
    result, _ = await send(dialogue, pieces())
    (r,) = result.recipients
    assert (r.status, r.reply.code) == (Status.PERMANENT, 552)
    assert dialogue.bodies == []


async def test_8bit_body_declares_8bitmime() -> None:
    """RFC 6152 3: 8-bit content goes with BODY=8BITMIME, octets intact."""
    body = "Subject: café\r\n\r\nnaïve\r\n".encode()
    dialogue = Dialogue()
    result, server = await send(dialogue, body)
    assert mail_line(server) == b"MAIL FROM:<sender@client.test> BODY=8BITMIME"
    assert dialogue.bodies == [body]
    assert result.recipients[0].status is Status.DELIVERED


async def test_8bit_body_to_a_7bit_server_is_refused_not_corrupted() -> None:
    """RFC 6152 3: no 8BITMIME, no 8-bit data: permanent 5.6.3, nothing sent."""
    dialogue = Dialogue(extensions=["PIPELINING"])
    result, server = await send(dialogue, "naïve\r\n".encode())
    (r,) = result.recipients
    assert (r.status, r.reply.code, r.reply.enhanced) == (
        Status.PERMANENT,
        554,
        "5.6.3",
    )
    assert not any(line.startswith(b"MAIL") for line in server.peers[0].lines)


async def test_8bit_stream_to_a_7bit_server_aborts_before_the_8bit_octets() -> None:
    """RFC 6152 3: found in a stream: dropped before the 8-bit piece is written."""

    async def pieces() -> AsyncIterator[bytes]:
        yield b"Subject: x\r\n\r\n"
        yield "naïve\r\n".encode()

    dialogue = Dialogue(extensions=["PIPELINING"])
    result, server = await send(dialogue, pieces())
    assert result.recipients[0].status is Status.PERMANENT
    assert "ï".encode() not in bytes(server.peers[0].received)
    assert dialogue.bodies == []


async def test_7bit_body_has_no_body_parameter() -> None:
    """RFC 6152: BODY= only when it is needed; a 7-bit message goes as is."""
    dialogue = Dialogue()
    _, server = await send(dialogue, b"Subject: plain\r\n\r\nascii\r\n")
    assert dialogue.bodies
    assert mail_line(server) == b"MAIL FROM:<sender@client.test>"


async def test_smtputf8_addresses_use_the_extension() -> None:
    """RFC 6531 3.4: a UTF-8 address needs SMTPUTF8 on MAIL; it is added."""
    env = Envelope.build("pelé@client.test", ["ünïcode@x.test"])
    dialogue = Dialogue(extensions=["PIPELINING", "8BITMIME", "SMTPUTF8"])
    result, server = await send(dialogue, b"Subject: x\r\n\r\nhi\r\n", env)
    assert result.recipients[0].status is Status.DELIVERED
    line = mail_line(server)
    assert line.startswith("MAIL FROM:<pelé@client.test>".encode())
    assert line.split()[2:] == [b"SMTPUTF8"]  # an ASCII body needs no BODY=
    assert "RCPT TO:<ünïcode@x.test>".encode() in server.peers[0].lines


@pytest.mark.parametrize(
    ("header", "offered", "declared"),
    [
        ("Subject: héllo".encode(), True, True),
        ("Subject: héllo".encode(), False, False),
        ("Subject: héllo".encode("latin-1"), True, False),
        (b"Subject: hello", True, False),
    ],
    ids=["utf8-offered", "utf8-not-offered", "latin1", "ascii"],
)
async def test_utf8_header_fields_declare_smtputf8_when_offered(
    header: bytes, offered: bool, declared: bool
) -> None:
    """RFC 6531 3.4 with RFC 6532: UTF-8 in the header section needs the
    extension, so SMTPUTF8 goes on MAIL when the server offers it.  Without
    it the message still goes under 8BITMIME (only a UTF-8 address cannot
    be sent, 3.7.5); 8-bit octets that are not UTF-8 are not declared UTF-8;
    a UTF-8 body under ASCII headers needs no SMTPUTF8."""
    body = header + "\r\n\r\ncorps: é\r\n".encode()
    extensions = ["PIPELINING", "8BITMIME"] + (["SMTPUTF8"] if offered else [])
    dialogue = Dialogue(extensions=extensions)
    result, server = await send(dialogue, body)
    assert result.recipients[0].status is Status.DELIVERED
    params = mail_line(server).split()[2:]
    assert (b"SMTPUTF8" in params) is declared
    assert b"BODY=8BITMIME" in params
    assert dialogue.bodies == [body]


async def test_smtputf8_needed_but_not_offered_is_permanent() -> None:
    """RFC 6531 3.7.5: no downgrade: 553 5.6.7, nothing sent."""
    env = Envelope.build("a@client.test", ["ünïcode@x.test"])
    dialogue = Dialogue(extensions=["PIPELINING", "8BITMIME"])
    result, server = await send(dialogue, b"hi\r\n", env)
    (r,) = result.recipients
    assert (r.status, r.reply.code, r.reply.enhanced) == (
        Status.PERMANENT,
        553,
        "5.6.7",
    )
    assert not any(line.startswith(b"MAIL") for line in server.peers[0].lines)


def _dsn_envelope() -> Envelope:
    params = MailParams(ret=Ret.HDRS, envid="QQ314159")
    rcpt = Recipient(
        Mailbox("a", "x.test"),
        RcptParams(
            notify=frozenset({Notify.SUCCESS, Notify.FAILURE}),
            orcpt=OriginalRecipient("rfc822", "a+b@x.test"),
        ),
    )
    return Envelope(Mailbox("s", "client.test"), [rcpt], params)


async def test_dsn_parameters_passed_through() -> None:
    """RFC 3461 4: RET, ENVID, NOTIFY and ORCPT reach a DSN-capable server."""
    dialogue = Dialogue(extensions=["PIPELINING", "DSN"])
    result, server = await send(dialogue, b"hi\r\n", _dsn_envelope())
    assert mail_line(server) == b"MAIL FROM:<s@client.test> RET=HDRS ENVID=QQ314159"
    assert b"RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x.test" in (
        server.peers[0].lines
    )
    assert result.extensions is not None
    assert result.extensions.dsn


async def test_dsn_parameters_dropped_for_a_server_without_dsn() -> None:
    """RFC 3461 5.2: without DSN, the parameters are not sent (the message is
    "relayed"; result.extensions tells the queue so)."""
    dialogue = Dialogue(extensions=["PIPELINING"])
    result, server = await send(dialogue, b"hi\r\n", _dsn_envelope())
    assert mail_line(server) == b"MAIL FROM:<s@client.test>"
    assert b"RCPT TO:<a@x.test>" in server.peers[0].lines
    assert result.recipients[0].status is Status.DELIVERED
    assert result.extensions is not None
    assert not result.extensions.dsn


async def test_requiretls_without_tls_is_refused() -> None:
    """RFC 8689 4.1 / 5: a REQUIRETLS message never travels in clear: 5.7.30."""
    env = Envelope.build("a@client.test", ["b@x.test"], MailParams(requiretls=True))
    dialogue = Dialogue(extensions=["PIPELINING", "REQUIRETLS"])
    result, server = await send(dialogue, b"hi\r\n", env)
    (r,) = result.recipients
    assert (r.status, r.reply.enhanced) == (Status.PERMANENT, "5.7.30")
    assert not any(line.startswith(b"MAIL") for line in server.peers[0].lines)


async def test_bdat_small_message_is_one_round_trip() -> None:
    """RFC 3030 2 and 4.2: with CHUNKING and PIPELINING, MAIL, RCPT and
    ``BDAT n LAST`` with the octets go in one group; no dot-stuffing."""
    body = b"Subject: x\r\n\r\n.leading dot stays\r\n"
    dialogue = Dialogue(extensions=CHUNKING)
    result, server = await send(dialogue, body)
    assert result.recipients[0].status is Status.DELIVERED
    assert dialogue.bodies == [body]
    assert f"BDAT {len(body)} LAST".encode() in server.peers[0].lines
    assert b"DATA" not in server.peers[0].lines


async def test_bdat_streamed_body_goes_in_chunks() -> None:
    """RFC 3030 2: a long stream as several BDAT chunks, the last one LAST."""
    piece = b"z" * 998 + b"\r\n"
    count = (2 * BDAT_CHUNK) // len(piece) + 5

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield piece

    dialogue = Dialogue(extensions=CHUNKING)
    result, server = await send(dialogue, pieces())
    assert result.recipients[0].status is Status.DELIVERED
    assert dialogue.bodies == [piece * count]
    bdats = [line for line in server.peers[0].lines if line.startswith(b"BDAT")]
    assert len(bdats) == 3
    assert bdats[-1].endswith(b" LAST")
    assert not bdats[0].endswith(b"LAST")


async def test_bdat_chunk_refused_ends_the_transaction() -> None:
    """RFC 3030 2: a failed chunk fails the message for every recipient."""
    piece = b"z" * 998 + b"\r\n"

    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(3 * BDAT_CHUNK // len(piece)):
            yield piece

    dialogue = Dialogue(
        extensions=CHUNKING,
        replies={"BDAT": b"552 5.3.4 too big\r\n"},
    )
    result, _ = await send(dialogue, pieces())
    (r,) = result.recipients
    assert (r.status, r.reply.code) == (Status.PERMANENT, 552)


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_bdat_last_answered_421_is_transient_not_a_crash(lmtp: bool) -> None:
    """RFC 3030 2 with RFC 5321 3.8: a server may answer ``BDAT LAST`` with
    421 and close; every recipient is then transient with that reply (in
    LMTP too, RFC 2033 4.2), and send() returns instead of raising."""
    from smtp_client import LMTPServer

    shutdown = b"421 4.3.2 shutting down\r\n"
    dialogue = Dialogue(
        extensions=CHUNKING,
        lmtp=lmtp,
        replies={"LMTP": [shutdown, None]} if lmtp else {".": shutdown},
    )
    env = Envelope.build("sender@client.test", ["a@x.test", "b@x.test"])
    async with (
        scripted_server(dialogue) as server,
        Client(helo="client.test", timeouts=FAST) as c,
    ):
        host = (
            LMTPServer(host="127.0.0.1", port=server.port)
            if lmtp
            else SmartHost("127.0.0.1", server.port, tls=TLSPolicy.none())
        )
        result = await c.send(host, env, b"Subject: x\r\n\r\nhi\r\n")
    assert any(line.endswith(b" LAST") for line in server.peers[0].lines)
    assert [(r.status, r.reply.code, r.reply.enhanced) for r in result.recipients] == [
        (Status.TRANSIENT, 421, "4.3.2")
    ] * 2


async def test_chunking_not_used_when_disabled() -> None:
    """RFC 3030 is optional for the client: use_chunking=False sends DATA."""
    dialogue = Dialogue(extensions=CHUNKING)
    _, server = await send(dialogue, b"hi\r\n", use_chunking=False)
    assert b"DATA" in server.peers[0].lines
    assert not any(line.startswith(b"BDAT") for line in server.peers[0].lines)


async def test_many_recipients_go_in_transactions_of_100() -> None:
    """RFC 5321 4.5.3.1.8: a server need buffer only 100 recipients."""
    env = Envelope.build("a@client.test", [f"r{i}@x.test" for i in range(250)])
    dialogue = Dialogue()
    result, server = await send(dialogue, b"hi\r\n", env)
    assert len(result.recipients) == 250
    assert all(r.status is Status.DELIVERED for r in result.recipients)
    assert len(dialogue.bodies) == 3
    mails = [line for line in server.peers[0].lines if line.startswith(b"MAIL")]
    assert len(mails) == 3
    assert len(server.peers) == 1


async def test_many_recipients_with_a_one_shot_stream_is_a_caller_error() -> None:
    """RFC 5321 4.5.3.1.8: 3 transactions would read the stream 3 times."""

    async def pieces() -> AsyncIterator[bytes]:
        yield b"hi\r\n"

    env = Envelope.build("a@client.test", [f"r{i}@x.test" for i in range(101)])
    async with Client(helo="client.test") as client:
        with pytest.raises(ValueError, match="read again"):
            await client.send(SmartHost("127.0.0.1", 9), env, pieces())


async def test_many_recipients_with_a_stream_factory() -> None:
    """RFC 5321 4.5.3.1.8: a callable body is read once per transaction."""
    calls = 0

    def factory() -> AsyncIterator[bytes]:
        nonlocal calls
        calls += 1

        async def gen() -> AsyncIterator[bytes]:
            yield b"Subject: x\r\n\r\nbody\r\n"

        return gen()

    env = Envelope.build("a@client.test", [f"r{i}@x.test" for i in range(150)])
    dialogue = Dialogue()
    result, _ = await send(dialogue, factory, env)
    assert calls == 2
    assert dialogue.bodies == [b"Subject: x\r\n\r\nbody\r\n"] * 2
    assert len(result.delivered) == 150


@pytest.mark.parametrize(
    "address",
    [
        "a\r\n@x.test",
        "a@x.test\r\nRCPT TO:<evil@x.test>",
        "a\x00@x.test",
        "a@x\n.test",
        "a\r@x.test",
        "a\x01b@x.test",
        "a\x1b[31m@x.test",
        "a\x7f@x.test",
        "a\tb@x.test",
        '"a\r\nb"@x.test',
        "a@[127.0.0.1\r\n]",
    ],
)
def test_envelope_refuses_control_characters(address: str) -> None:
    """GHSA-v3q9-hj7j-63hq: CR, LF, NUL or any other control byte in an
    address never reaches the wire: the envelope cannot even be built, by
    text or from a Mailbox."""
    with pytest.raises(ValueError, match=r"."):
        Envelope.build(address, ["b@x.test"])
    with pytest.raises(ValueError, match=r"."):
        Envelope.build("a@x.test", [address])
    with pytest.raises(ValueError, match=r"."):
        Recipient.parse(address)
    local, _, domain = address.rpartition("@")
    with pytest.raises(ValueError, match=r"."):
        Mailbox(local.strip('"'), domain)


@pytest.mark.parametrize("bad", ["\r\n", "\n", "\r", "\x00", "\x01", "\x7f"])
def test_mail_and_rcpt_params_refuse_control_characters(bad: str) -> None:
    """GHSA-v3q9-hj7j-63hq: every parameter value (ENVID, AUTH=, ORCPT,
    extensions' keywords and values) is checked when built."""
    with pytest.raises(ValueError, match="ENVID"):
        MailParams(envid=f"x{bad}RSET")
    with pytest.raises(ValueError, match="AUTH"):
        MailParams(auth=f"x{bad}RSET")
    with pytest.raises(ValueError, match="ESMTP value"):
        MailParams(extra=[("X-FOO", f"a{bad}b")])
    with pytest.raises(ValueError, match="ESMTP keyword"):
        MailParams(extra=[(f"X{bad}FOO", "a")])
    with pytest.raises(ValueError, match="ESMTP value"):
        RcptParams(extra=[("X-FOO", f"a{bad}b")])
    with pytest.raises(ValueError, match="ORCPT"):
        OriginalRecipient("rfc822", f"a{bad}@x.test")


# -- Properties --------------------------------------------------------------


bodies = st.lists(
    st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b".\r\n", b"\xc3\xa9", b"x" * 50]),
    max_size=40,
).map(b"".join)


def expected_body(body: bytes) -> bytes:
    normalizer = LineEndingNormalizer()
    out = normalizer.feed(body) + normalizer.flush()
    return out + b"\r\n" if out and not out.endswith(b"\r\n") else out


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, chunking=st.booleans(), split=st.integers(1, 7))
def test_body_round_trip_over_a_socket(
    anyio_backend: str, body: bytes, chunking: bool, split: int
) -> None:
    """RFC 5321 4.5.2 and RFC 3030 2: whatever the body and however it is cut,
    the server reads exactly the body with CRLF line endings (one message,
    ending where the caller's body ends)."""

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(body), split):
            yield body[i : i + split]

    async def main() -> tuple[list[bytes], Status]:
        extensions = CHUNKING if chunking else ["PIPELINING", "8BITMIME"]
        dialogue = Dialogue(extensions=extensions)
        result, _ = await send(dialogue, pieces())
        return dialogue.bodies, result.recipients[0].status

    received, status = anyio.run(main, backend=anyio_backend)
    assert status is Status.DELIVERED
    assert received == [expected_body(body)]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    garbage=st.binary(max_size=300),
    at=st.sampled_from(["greeting", "EHLO", "MAIL", "DATA", "."]),
)
def test_hostile_server_bytes_never_escape_as_exceptions(
    anyio_backend: str, garbage: bytes, at: str
) -> None:
    """RFC 5321 4.2 (hostile input): any bytes from the server give results,
    never an exception or a hang; never "delivered" unless a 2xx ended the body."""

    async def main() -> tuple[list[Status], list[bytes]]:
        if at == "greeting":
            dialogue = Dialogue(greeting=garbage + b"\r\n")
        else:
            dialogue = Dialogue(replies={at: garbage + b"\r\n"})
        timeouts = Timeouts(
            greeting=2, command=2, mail=2, rcpt=2, data_init=2, data_block=2, data_end=2
        )
        with anyio.fail_after(30):
            result, _ = await send(dialogue, b"hi\r\n", timeouts=timeouts)
        return [r.status for r in result.recipients], dialogue.bodies

    (status,), received = anyio.run(main, backend=anyio_backend)
    if status is Status.DELIVERED:
        # Only a whole body answered with a 2xx counts as delivered.
        assert received == [b"hi\r\n"]
        assert at != "." or garbage.startswith(b"2")
