"""Replies and faults, against the scripted server (a test double on loopback).

Each test makes the server do one thing a real server can do but Postfix
or Dovecot cannot be made to do on demand, and checks the per-recipient
results and what went over the wire.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from smtp_client import (
    Client,
    Connection,
    Envelope,
    ReplyError,
    SendResult,
    SmartHost,
    Status,
    TimedOut,
    Timeouts,
    TLSPolicy,
)
from smtp_message import Mailbox, Reply

from .conftest import Dialogue, Peer, Scripted, scripted_server

pytestmark = pytest.mark.anyio

BODY = b"Subject: test\r\n\r\nHello\r\n"
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


def plain(port: int, host: str = "127.0.0.1") -> SmartHost:
    return SmartHost(host, port, tls=TLSPolicy.none())


def envelope(*recipients: str) -> Envelope:
    return Envelope.build("sender@client.test", recipients)


async def send(
    dialogue: Dialogue, env: Envelope, body: bytes = BODY, **client: Any
) -> tuple[SendResult, Scripted]:
    client.setdefault("timeouts", FAST)
    async with (
        scripted_server(dialogue) as server,
        Client(helo="client.test", **client) as c,
    ):
        result = await c.send(plain(server.port), env, body)
    return result, server


async def test_send_some_recipients_rejected_others_delivered() -> None:
    """RFC 5321 3.3 / 4.1.1.3: each RCPT has its own reply; DATA goes to the rest."""

    def rcpt(line: bytes) -> bytes:
        if b"ghost" in line:
            return b"550 5.1.1 <ghost@x.test>: no such user\r\n"
        if b"busy" in line:
            return b"450 4.2.1 Mailbox busy, try later\r\n"
        return b"250 2.1.5 OK\r\n"

    dialogue = Dialogue(replies={"RCPT": rcpt})
    result, server = await send(
        dialogue, envelope("a@x.test", "ghost@x.test", "busy@x.test", "b@x.test")
    )
    statuses = [(str(r.recipient), r.status, r.reply.code) for r in result.recipients]
    assert statuses == [
        ("a@x.test", Status.DELIVERED, 250),
        ("ghost@x.test", Status.PERMANENT, 550),
        ("busy@x.test", Status.TRANSIENT, 450),
        ("b@x.test", Status.DELIVERED, 250),
    ]
    ghost = result[Mailbox("ghost", "x.test")]
    assert ghost.reply == Reply(550, "5.1.1", "<ghost@x.test>: no such user")
    assert ghost.remote
    assert ghost.host == f"127.0.0.1[127.0.0.1]:{server.port}"
    assert result.recipients[0].reply.enhanced == "2.0.0"
    assert dialogue.bodies == [BODY]


async def test_send_552_to_rcpt_is_transient() -> None:
    """RFC 5321 4.5.3.1.10: 552 to RCPT is the old "too many recipients"
    (now 452); "Clients SHOULD treat a 552 code in this case as a temporary,
    rather than permanent, failure".  The reply is kept as the server gave
    it; a 552 to the end of the data stays permanent (RFC 1870 6.3)."""

    def rcpt(line: bytes) -> bytes:
        if b"many" in line:
            return b"552 5.5.3 Too many recipients\r\n"
        return b"250 2.1.5 OK\r\n"

    dialogue = Dialogue(replies={"RCPT": rcpt})
    result, _ = await send(dialogue, envelope("a@x.test", "many@x.test"))
    assert [(r.status, r.reply.code, r.reply.enhanced) for r in result.recipients] == [
        (Status.DELIVERED, 250, "2.0.0"),
        (Status.TRANSIENT, 552, "5.5.3"),
    ]
    big = Dialogue(replies={".": b"552 5.3.4 Message too big\r\n"})
    result, _ = await send(big, envelope("a@x.test"))
    assert [r.status for r in result.recipients] == [Status.PERMANENT]


async def test_send_connection_dropped_mid_data_is_transient() -> None:
    """RFC 5321 6.1: no 250 after the body, no delivery: transient, never delivered."""

    async def drop_mid_data(peer: Peer) -> None:
        await peer.send(b"220 mx.test\r\n")
        await peer.line()  # EHLO
        await peer.send(b"250-mx.test\r\n250 PIPELINING\r\n")
        for _ in range(4):  # MAIL, RCPT, RCPT, DATA
            await peer.line()
        await peer.send(b"250 OK\r\n250 OK\r\n250 OK\r\n354 go\r\n")
        await peer.exactly(5)  # a little of the body, then the connection dies
        await peer.close()

    async with (
        scripted_server(drop_mid_data) as server,
        Client(helo="client.test", timeouts=FAST) as client,
    ):
        result = await client.send(
            plain(server.port), envelope("a@x.test", "b@x.test"), BODY * 1000
        )
    assert [r.status for r in result.recipients] == [Status.TRANSIENT] * 2
    reply = result.recipients[0].reply
    assert reply.code == 451
    assert reply.enhanced == "4.4.2"
    assert not result.recipients[0].remote


async def test_send_421_greeting_is_transient_with_the_servers_reply() -> None:
    """RFC 5321 3.1 / 3.8: a 421 greeting; the reply is kept for the DSN.

    The greeting comes before EHLO, so its text is not read for an RFC 3463
    code (RFC 2034 3: the extension applies once negotiated).
    """
    dialogue = Dialogue(greeting=b"421 4.3.2 mx.test too busy\r\n")
    result, _ = await send(dialogue, envelope("a@x.test"))
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply == Reply(421, None, "4.3.2 mx.test too busy")
    assert r.remote


async def test_send_554_greeting_is_permanent() -> None:
    """RFC 5321 3.1: "554 No SMTP service here"; the server "MUST still wait
    for the client to send a QUIT", and the client sends it."""
    dialogue = Dialogue(greeting=b"554 5.3.2 no service\r\n")
    result, _ = await send(dialogue, envelope("a@x.test"))
    assert result.recipients[0].status is Status.PERMANENT
    assert result.recipients[0].reply.code == 554
    assert dialogue.after_refusal == [b"QUIT"]


async def test_send_421_after_mail_ends_the_transaction_transiently() -> None:
    """RFC 5321 3.8: a 421 at any point closes the session; nothing is delivered."""
    dialogue = Dialogue(replies={"RCPT": b"421 4.4.2 shutting down\r\n"})
    result, _server = await send(dialogue, envelope("a@x.test", "b@x.test"))
    assert [r.status for r in result.recipients] == [Status.TRANSIENT] * 2
    assert result.recipients[1].reply == Reply(421, "4.4.2", "shutting down")
    assert dialogue.bodies == []


async def test_send_mail_refused_decides_every_recipient() -> None:
    """RFC 5321 4.1.1.2: a refused MAIL means no recipient was accepted."""
    dialogue = Dialogue(replies={"MAIL": b"553 5.1.8 bad sender domain\r\n"})
    result, _ = await send(dialogue, envelope("a@x.test", "b@x.test"))
    assert [r.reply.code for r in result.recipients] == [553, 553]
    assert [r.status for r in result.recipients] == [Status.PERMANENT] * 2
    assert dialogue.bodies == []


async def test_send_rcpt_accepted_after_a_refused_mail_is_not_a_refusal() -> None:
    """RFC 5321 4.1.1.3: a server that refuses MAIL and then accepts RCPT and
    the body is out of step (it may even deliver): transient, never a bounce."""
    dialogue = Dialogue(
        extensions=["PIPELINING", "CHUNKING"],
        replies={"MAIL": b"503 5.5.1 Bad sequence\r\n", "RCPT": b"250 2.1.5 OK\r\n"},
    )
    result, _ = await send(dialogue, envelope("a@x.test"))
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.5.0"


async def test_send_data_refused_after_rcpt() -> None:
    """RFC 5321 4.1.1.4: DATA refused: every accepted recipient gets that reply."""
    dialogue = Dialogue(replies={"DATA": b"451 4.3.0 try later\r\n"})
    result, _ = await send(dialogue, envelope("a@x.test"))
    assert result.recipients[0].status is Status.TRANSIENT
    assert result.recipients[0].reply.code == 451


async def test_send_end_of_data_refused_is_permanent() -> None:
    """RFC 5321 4.1.1.4: the reply after the body decides for every recipient."""
    dialogue = Dialogue(replies={".": b"554 5.7.1 spam\r\n"})
    result, _ = await send(dialogue, envelope("a@x.test", "b@x.test"))
    assert [r.status for r in result.recipients] == [Status.PERMANENT] * 2
    assert result.recipients[0].reply == Reply(554, "5.7.1", "spam")


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"2\xff\xfe\x00garbage\r\n",
        b"250-" + b"x" * 5000 + b"\r\n",  # a line far over the limit
        b"250-a\r\n" * 300 + b"250 b\r\n",  # too many lines
        b"250-a\r\n550 b\r\n",  # a multi-line reply changing code
    ],
)
async def test_send_garbage_from_server_is_a_transient_protocol_error(
    garbage: bytes,
) -> None:
    """RFC 5321 4.2: a malformed reply is the server's fault: transient, no hang."""

    async def handler(peer: Peer) -> None:
        await peer.send(b"220 mx.test\r\n")
        await peer.line()
        await peer.send(garbage)
        await peer.line()

    async with (
        scripted_server(handler) as server,
        Client(helo="client.test", timeouts=FAST) as client,
    ):
        with anyio.fail_after(30):
            result = await client.send(plain(server.port), envelope("a@x.test"), BODY)
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert not r.remote
    assert r.reply.enhanced in ("4.5.0", "4.4.2")


@pytest.mark.parametrize(
    ("verb", "reply"),
    [("DATA", b"250 2.0.0 OK\r\n"), (".", b"354 more?\r\n"), ("RCPT", b"354 what\r\n")],
)
async def test_send_reply_of_the_wrong_kind_is_never_taken_as_delivery(
    verb: str, reply: bytes
) -> None:
    """RFC 5321 4.3.2: DATA succeeds with 354 only, the body with 2xx only.

    A server whose replies are out of step (one too many, one missing) must
    not make an undelivered message look delivered: transient.
    """
    dialogue = Dialogue(replies={verb: reply})
    result, _ = await send(dialogue, envelope("a@x.test"))
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.5.0"
    assert not r.remote


async def test_send_silent_server_times_out_transiently() -> None:
    """RFC 5321 4.5.3.2.1: the client gives up on a greeting that never comes."""

    async def silent(peer: Peer) -> None:
        await anyio.sleep(60)

    timeouts = Timeouts(greeting=0.5)
    async with (
        scripted_server(silent) as server,
        Client(helo="client.test", timeouts=timeouts) as client,
    ):
        result = await client.send(plain(server.port), envelope("a@x.test"), BODY)
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.4.2"
    assert "0.5 s" in r.reply.text


async def test_connection_open_raises_classified_timeout() -> None:
    """RFC 5321 4.5.3.2.1, at the Connection level: TimedOut, nothing left open."""

    async def silent(peer: Peer) -> None:
        await anyio.sleep(60)

    async with scripted_server(silent) as server:
        with pytest.raises(TimedOut) as info:
            await Connection.open(
                "127.0.0.1", server.port, helo="c.test", timeouts=Timeouts(greeting=0.3)
            )
    assert not info.value.permanent


async def test_send_ehlo_refused_falls_back_to_helo() -> None:
    """RFC 5321 3.2: a server that does not know EHLO answers 500; HELO follows."""
    dialogue = Dialogue(replies={"EHLO": b"500 5.5.1 what?\r\n"})
    async with (
        scripted_server(dialogue) as server,
        Client(helo="client.test", timeouts=FAST) as client,
    ):
        result = await client.send(plain(server.port), envelope("a@x.test"), BODY)
    assert result.recipients[0].status is Status.DELIVERED
    lines = server.peers[0].lines
    assert lines[:2] == [b"EHLO client.test", b"HELO client.test"]
    # Without EHLO there is no extension: no pipelining, no BODY= parameter.
    assert lines[2] == b"MAIL FROM:<sender@client.test>"


async def test_send_ehlo_4xx_is_transient_without_helo() -> None:
    """RFC 5321 3.2: only a permanent EHLO refusal means "EHLO unknown"."""
    dialogue = Dialogue(replies={"EHLO": b"451 4.3.0 later\r\n"})
    result, server = await send(dialogue, envelope("a@x.test"))
    assert result.recipients[0].status is Status.TRANSIENT
    assert result.recipients[0].reply.code == 451
    assert b"HELO client.test" not in server.peers[0].lines


async def test_send_without_pipelining_waits_for_each_reply() -> None:
    """RFC 2920 3: a client may pipeline only when PIPELINING is advertised."""
    seen_early: list[bytes] = []

    async def strict(peer: Peer) -> None:
        await peer.send(b"220 mx.test\r\n")
        await peer.line()
        await peer.send(b"250-mx.test\r\n250 8BITMIME\r\n")
        while (line := await peer.line()) is not None:
            await anyio.sleep(0.05)  # time for anything pipelined to arrive
            if peer.buffered():
                seen_early.append(peer.buffered())
            if line == b"DATA":
                await peer.send(b"354 go\r\n")
                await peer.data_body()
                await peer.send(b"250 OK\r\n")
            elif line == b"QUIT":
                await peer.send(b"221 bye\r\n")
                return
            else:
                await peer.send(b"250 OK\r\n")

    async with (
        scripted_server(strict) as server,
        Client(helo="client.test", timeouts=FAST) as client,
    ):
        result = await client.send(plain(server.port), envelope("a@x.test", "b@x.test"), BODY)
    assert [r.status for r in result.recipients] == [Status.DELIVERED] * 2
    assert seen_early == []


async def test_send_with_pipelining_sends_the_envelope_in_one_group() -> None:
    """RFC 2920 3.1: MAIL, RCPTs and DATA go before any reply is read.

    The server answers nothing until DATA has arrived: a client that waited
    for the MAIL reply would hang and time out.
    """

    async def hold_replies(peer: Peer) -> None:
        await peer.send(b"220 mx.test\r\n")
        await peer.line()
        await peer.send(b"250-mx.test\r\n250 PIPELINING\r\n")
        lines = []
        while (line := await peer.line()) != b"DATA":
            assert line is not None
            lines.append(line)
        await peer.send(b"250 OK\r\n" * len(lines) + b"354 go\r\n")
        await peer.data_body()
        await peer.send(b"250 OK\r\n")
        await peer.line()

    async with (
        scripted_server(hold_replies) as server,
        Client(helo="client.test", timeouts=Timeouts(mail=3, rcpt=3)) as client,
    ):
        result = await client.send(plain(server.port), envelope("a@x.test", "b@x.test"), BODY)
    assert [r.status for r in result.recipients] == [Status.DELIVERED] * 2


async def test_send_lmtp_gives_each_recipient_its_own_reply() -> None:
    """RFC 2033 4.2: after the body, one reply per accepted RCPT, in order."""
    dialogue = Dialogue(
        lmtp=True,
        extensions=["PIPELINING", "ENHANCEDSTATUSCODES"],
        replies={
            "RCPT": lambda line: b"550 5.1.1 unknown\r\n" if b"ghost" in line else b"250 OK\r\n",
            "LMTP": [b"250 2.0.0 a saved\r\n", b"452 4.2.2 c over quota\r\n"],
        },
    )
    from smtp_client import LMTPServer

    async with (
        scripted_server(dialogue) as server,
        Client(helo="client.test", timeouts=FAST) as client,
    ):
        result = await client.send(
            LMTPServer(host="127.0.0.1", port=server.port),
            envelope("a@x.test", "ghost@x.test", "c@x.test"),
            BODY,
        )
    assert [(r.status, r.reply.code) for r in result.recipients] == [
        (Status.DELIVERED, 250),
        (Status.PERMANENT, 550),
        (Status.TRANSIENT, 452),
    ]
    assert result.recipients[2].reply.text == "c over quota"
    assert server.peers[0].lines[0] == b"LHLO client.test"


async def test_send_lmtp_connection_lost_between_replies() -> None:
    """RFC 2033 4.2: recipients whose reply never came are transient, others stand."""
    from smtp_client import LMTPServer

    dialogue = Dialogue(
        lmtp=True,
        extensions=["PIPELINING"],
        replies={"LMTP": [b"250 2.0.0 saved\r\n", None]},
    )
    async with (
        scripted_server(dialogue) as server,
        Client(helo="client.test", timeouts=FAST) as client,
    ):
        result = await client.send(
            LMTPServer(host="127.0.0.1", port=server.port),
            envelope("a@x.test", "b@x.test"),
            BODY,
        )
    assert [r.status for r in result.recipients] == [Status.DELIVERED, Status.TRANSIENT]
    assert not result.recipients[1].remote


@pytest.mark.parametrize("chunking", [False, True], ids=["data", "bdat"])
async def test_send_lmtp_each_recipient_reply_has_its_own_data_end_timeout(
    chunking: bool,
) -> None:
    """RFC 2033 4.2 with RFC 5321 4.5.3.2.6: each per-recipient reply answers
    the end of the data, and an LMTP server delivers one recipient after the
    other, so each gets the whole data_end timeout.  Here the three replies
    take 3.6 s in all but at most 1.2 s each, with data_end 2 s: all three
    are delivered.  A shared deadline would give up on the third reply while
    it was on its way and the retry would deliver that message twice."""
    from smtp_client import LMTPServer

    extensions = ["PIPELINING", "ENHANCEDSTATUSCODES"] + (["CHUNKING"] if chunking else [])
    saved = b"250 2.0.0 saved\r\n"
    dialogue = Dialogue(
        lmtp=True,
        extensions=extensions,
        replies={"LMTP": [1.2, saved, 1.2, saved, 1.2, saved]},
    )
    # The envelope's replies come at once; its short timeouts keep the
    # deadline of the group that carries a small BDAT body (their sum and
    # data_end) under the 3.6 s too.
    short = 0.3
    timeouts = Timeouts(
        connect=5,
        greeting=5,
        command=5,
        mail=short,
        rcpt=short,
        data_init=short,
        data_block=short,
        data_end=2,
    )
    async with (
        scripted_server(dialogue) as server,
        Client(helo="client.test", timeouts=timeouts) as client,
    ):
        result = await client.send(
            LMTPServer(host="127.0.0.1", port=server.port),
            envelope("a@x.test", "b@x.test", "c@x.test"),
            BODY,
        )
    assert [r.status for r in result.recipients] == [Status.DELIVERED] * 3
    verb = b"BDAT" if chunking else b"DATA"
    assert any(line.startswith(verb) for line in server.peers[0].lines)


async def test_connection_raises_reply_error_for_refused_greeting() -> None:
    """RFC 5321 3.1: Connection.open raises the classified error with the reply."""
    async with scripted_server(Dialogue(greeting=b"554 5.7.1 go away\r\n")) as server:
        with pytest.raises(ReplyError) as info:
            await Connection.open("127.0.0.1", server.port, helo="c.test", timeouts=FAST)
    assert info.value.permanent
    assert info.value.remote
    assert info.value.reply == Reply(554, None, "5.7.1 go away")


# -- Timeouts (RFC 5321 4.5.3.2) ----------------------------------------------


def test_timeouts_default_to_rfc_5321_minimums() -> None:
    """RFC 5321 4.5.3.2.1-6: 5 min greeting, MAIL, RCPT; 2 min DATA initiation;
    3 min per data block; 10 min for the reply to the end of data."""
    t = Timeouts()
    assert (t.greeting, t.mail, t.rcpt, t.command) == (300, 300, 300, 300)
    assert (t.data_init, t.data_block, t.data_end) == (120, 180, 600)
    half = t.scaled(0.5)
    assert (half.greeting, half.data_init, half.data_end, half.connect) == (150, 60, 300, 15)
    with pytest.raises(ValueError, match="positive"):
        Timeouts(rcpt=0)


@pytest.mark.parametrize(
    ("stall", "setting"),
    [
        ("EHLO", "command"),
        ("MAIL", "mail"),
        ("RCPT", "rcpt"),
        ("DATA", "data_init"),
        (".", "data_end"),
    ],
)
async def test_send_each_stage_waits_for_its_own_timeout(stall: str, setting: str) -> None:
    """RFC 5321 4.5.3.2: each stage has its own, settable, timeout.  The server
    never answers ``stall``; only the timeout of that stage is short, so the
    client gives up after it (and not after the 30 s of every other one)."""
    slow = dict.fromkeys(
        ("connect", "greeting", "command", "mail", "rcpt", "data_init", "data_block", "data_end"),
        30.0,
    )
    timeouts = Timeouts(**{**slow, setting: 0.3})
    # No PIPELINING: one command at a time, each with its own timeout.  A body
    # over one write's size is sent first, then the end-of-data reply is
    # awaited alone (data_end).
    dialogue = Dialogue(extensions=["8BITMIME"], replies={stall: b""})
    body = b"Subject: slow\r\n\r\n" + (b"x" * 998 + b"\r\n") * 80
    started = anyio.current_time()
    result, _ = await send(dialogue, envelope("a@x.test"), body, timeouts=timeouts)
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.4.2"
    assert "within 0.3 s" in r.reply.text
    assert anyio.current_time() - started < 10


async def test_send_body_to_a_server_that_stops_reading_times_out_on_data_block() -> None:
    """RFC 5321 4.5.3.2.5: the data block timeout bounds each write of the
    body.  The server answers 354 and then reads nothing more: once the
    socket buffers (a few MiB on loopback) are full the client's write
    cannot complete, and only data_block is short."""
    stopped = anyio.Event()

    async def stop_reading_after_354(peer: Peer) -> None:
        await peer.send(b"220 mx.test ESMTP\r\n")
        while (line := await peer.line()) is not None:
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                await peer.send(b"250-mx.test\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                await peer.send(b"354 Go ahead\r\n")
                stopped.set()
                await anyio.sleep_forever()
            else:
                await peer.send(b"250 2.0.0 OK\r\n")

    slow = dict.fromkeys(
        ("connect", "greeting", "command", "mail", "rcpt", "data_init", "data_end"), 30.0
    )
    timeouts = Timeouts(**slow, data_block=0.3)
    # 64 MiB: far more than loopback's send and receive buffers together.
    body = b"Subject: big\r\n\r\n" + (b"x" * 1022 + b"\r\n") * (64 * 1024)
    started = anyio.current_time()
    async with (
        scripted_server(stop_reading_after_354) as server,
        Client(helo="client.test", timeouts=timeouts) as client,
    ):
        result = await client.send(plain(server.port), envelope("a@x.test"), body)
    assert stopped.is_set()
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.4.2"
    assert "within 0.3 s" in r.reply.text
    assert anyio.current_time() - started < 10
    # The server read less than the body: the write really was stuck.
    assert len(server.peers[0].received) < len(body)


# -- Host names ------------------------------------------------------------------


async def test_send_unresolvable_smart_host_is_transient_with_the_resolvers_words() -> None:
    """RFC 3463 X.4.1 with the reason kept for the DSN: getaddrinfo's own words
    ("Name or service not known"), not "Unknown error -2"."""
    async with Client(helo="client.test", timeouts=FAST) as client:
        result = await client.send(
            SmartHost("bad..name.test", 25, tls=TLSPolicy.none()), envelope("a@x.test"), BODY
        )
    (r,) = result.recipients
    assert (r.status, r.reply.enhanced) == (Status.TRANSIENT, "4.4.1")
    assert "Unknown error" not in r.reply.text
    assert "not known" in r.reply.text or "resolution" in r.reply.text


@pytest.mark.parametrize("host", ["\u2603.test", "h\udcff.test"], ids=["idna", "surrogate"])
async def test_send_host_name_idna_refuses_is_a_result_not_an_exception(host: str) -> None:
    """A smart host name IDNA cannot encode: Client.send still returns a result
    (transient 4.4.1), and the reply's text is sendable (no lone surrogate)."""
    async with Client(helo="client.test", timeouts=FAST) as client:
        result = await client.send(
            SmartHost(host, 25, tls=TLSPolicy.none()), envelope("a@x.test"), BODY
        )
    (r,) = result.recipients
    assert (r.status, r.reply.enhanced) == (Status.TRANSIENT, "4.4.1")
    assert "bad host name" in r.reply.text
    r.reply.text.encode("utf-8")


# -- ENHANCEDSTATUSCODES (RFC 2034) ----------------------------------------------


@pytest.mark.parametrize("advertised", [True, False])
async def test_send_enhanced_codes_read_only_when_advertised(advertised: bool) -> None:
    """RFC 2034 3: a reply's text starts with an RFC 3463 code only once the
    server announced ENHANCEDSTATUSCODES; otherwise the text is kept whole."""
    extensions = ["PIPELINING", *(["ENHANCEDSTATUSCODES"] if advertised else [])]
    dialogue = Dialogue(extensions=extensions, replies={"RCPT": b"550 5.1.1 no such user\r\n"})
    result, _ = await send(dialogue, envelope("ghost@x.test"))
    (r,) = result.recipients
    assert r.status is Status.PERMANENT
    if advertised:
        assert (r.reply.enhanced, r.reply.text) == ("5.1.1", "no such user")
    else:
        assert (r.reply.enhanced, r.reply.text) == (None, "5.1.1 no such user")
