"""The client session state machine, alone and talking to a ServerConnection."""

from __future__ import annotations

from typing import Any

import pytest
from msg_dialogue import Pair

from smtp_message import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    Bdat,
    BodyChunk,
    BodyType,
    ClientConnection,
    ClientState,
    ConnectionClosed,
    Data,
    DataResponse,
    Ehlo,
    Greeting,
    Helo,
    Lhlo,
    LocalProtocolError,
    Mailbox,
    MailFrom,
    MailParams,
    Noop,
    Notify,
    Quit,
    RcptParams,
    RcptTo,
    Reply,
    ReplySyntaxError,
    Response,
    Rset,
    ServerConnection,
    ServerSettings,
    ServerState,
    StartTls,
    replies,
)

A = Mailbox("a", "b.example")
C = Mailbox("c", "d.example")
EHLO_ALL = (
    b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n250-CHUNKING\r\n250-BINARYMIME\r\n250-DSN\r\n"
    b"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-REQUIRETLS\r\n"
    b"250 AUTH PLAIN LOGIN\r\n"
)


def state_of(conn: ClientConnection | ServerConnection) -> ClientState | ServerState:
    """The state, read afresh (mypy would narrow ``conn.state`` across calls)."""
    return conn.state


def envelope(conn: ClientConnection) -> tuple[MailFrom | None, list[RcptTo]]:
    """The transaction as the client knows it, read afresh."""
    return conn.mail_from, conn.accepted


def event(conn: ClientConnection | ServerConnection) -> Any:
    """The next event, as Any: the tests check its type themselves."""
    return conn.next_event()


def client(ehlo: bytes | None = EHLO_ALL, *, lmtp: bool = False) -> ClientConnection:
    """A client past the greeting and (unless ``ehlo`` is None) EHLO/LHLO."""
    conn = ClientConnection(lmtp=lmtp)
    conn.receive_data(b"220 mx.example ESMTP\r\n")
    assert isinstance(event(conn), Greeting)
    if ehlo is not None:
        conn.send(Lhlo("c.example") if lmtp else Ehlo("c.example"))
        conn.receive_data(ehlo)
        assert isinstance(event(conn), Response)
    return conn


def answer(conn: ClientConnection, wire: bytes) -> Any:
    conn.receive_data(wire)
    return event(conn)


# -- Greeting, EHLO, sequence ----------------------------------------------------------


def test_client_waits_for_the_greeting() -> None:
    """RFC 5321 3.1-3.2: the client sends EHLO once greeted."""
    conn = ClientConnection()
    with pytest.raises(LocalProtocolError, match="greeting"):
        conn.send(Ehlo("c.example"))
    assert event(conn) is NEED_DATA
    conn.receive_data(b"220-mx.example ESMTP\r\n220 welcome\r\n")
    greeting = event(conn)
    assert greeting == Greeting(Reply(220, None, ["mx.example ESMTP", "welcome"]))
    assert state_of(conn) is ClientState.HELLO
    assert conn.send(Ehlo("c.example")) == b"EHLO c.example\r\n"


def test_client_554_greeting_allows_only_quit() -> None:
    """RFC 5321 3.1: after a 554 greeting the server "MUST still wait for the
    client to send a QUIT"; the client may send that and nothing else."""
    conn = ClientConnection()
    assert isinstance(answer(conn, b"554 mx.example go away\r\n"), Greeting)
    assert state_of(conn) is ClientState.NO_SERVICE
    with pytest.raises(LocalProtocolError):
        conn.send(Ehlo("c.example"))
    assert conn.send(Quit()) == b"QUIT\r\n"
    assert isinstance(answer(conn, b"221 2.0.0 Bye\r\n"), Response)
    assert state_of(conn) is ClientState.CLOSED


def test_client_reads_extensions_from_ehlo() -> None:
    """RFC 5321 4.1.1.1: the EHLO reply lists the extensions; HELO has none;
    RFC 2034: enhanced codes are read only once advertised."""
    conn = client()
    ext = conn.extensions
    assert ext.pipelining
    assert ext.size == 1000
    assert ext.chunking
    assert ext.binarymime
    assert ext.starttls
    assert ext.auth == {"PLAIN", "LOGIN"}
    conn.send(Noop())
    reply = answer(conn, b"250 2.0.0 OK\r\n")
    assert reply.reply == Reply(250, "2.0.0", "OK")
    plain = client(b"250 mx.example\r\n")
    assert plain.extensions.entries == ()
    plain.send(Noop())
    assert answer(plain, b"250 2.0.0 OK\r\n").reply == Reply(250, None, "2.0.0 OK")
    helo = client(None)
    helo.send(Helo("c.example"))
    assert isinstance(answer(helo, b"250 mx.example\r\n"), Response)
    assert helo.extensions.entries == ()
    assert state_of(helo) is ClientState.READY


def test_client_refuses_commands_out_of_sequence() -> None:
    """RFC 5321 4.1.4: the client never sends what the server must 503."""
    conn = client()
    for command in (RcptTo(C), Data(), Bdat(1, last=True)):
        with pytest.raises(LocalProtocolError, match="out of sequence"):
            conn.send(command)
    fresh = client(None)
    with pytest.raises(LocalProtocolError, match="out of sequence"):
        fresh.send(MailFrom(A))
    with pytest.raises(LocalProtocolError, match="LHLO"):
        fresh.send(Lhlo("c.example"))
    with pytest.raises(LocalProtocolError, match="LHLO"):
        client(None, lmtp=True).send(Ehlo("c.example"))


def test_client_tracks_the_transaction() -> None:
    """RFC 5321 3.3: accepted recipients are remembered; refused ones are not;
    DATA needs one accepted recipient."""
    conn = client(b"250 mx.example\r\n")
    conn.send(MailFrom(A))
    answer(conn, b"250 OK\r\n")
    assert conn.mail_from == MailFrom(A)
    conn.send(RcptTo(C))
    answer(conn, b"550 no\r\n")
    assert conn.accepted == []
    with pytest.raises(LocalProtocolError, match="out of sequence"):
        conn.send(Data())
    conn.send(RcptTo(A))
    answer(conn, b"250 OK\r\n")
    assert conn.accepted == [RcptTo(A)]
    conn.send(Rset())
    answer(conn, b"250 OK\r\n")
    assert envelope(conn) == (None, [])
    assert state_of(conn) is ClientState.READY


# -- Pipelining ------------------------------------------------------------------------


def test_client_pipelining_rules() -> None:
    """RFC 2920 3.1: without PIPELINING one command at a time; with it, RSET,
    MAIL, RCPT (and BDAT, RFC 3030 4.2) may be followed by more, while EHLO,
    DATA, VRFY, EXPN, QUIT and NOOP end a group."""
    lockstep = client(b"250 mx.example\r\n")
    lockstep.send(MailFrom(A))
    with pytest.raises(LocalProtocolError, match="RFC 2920"):
        lockstep.send(RcptTo(C))
    conn = client()
    conn.send(MailFrom(A))
    conn.send(RcptTo(C))
    conn.send(RcptTo(A))
    conn.send(Data())
    assert conn.awaiting == 4
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())
    conn.receive_data(b"250 2.1.0 ok\r\n550 5.1.1 no\r\n250 2.1.5 ok\r\n354 go\r\n")
    events = [event(conn) for _ in range(4)]
    assert [e.reply.code for e in events] == [250, 550, 250, 354]
    assert [e.command for e in events] == [MailFrom(A), RcptTo(C), RcptTo(A), Data()]
    assert conn.accepted == [RcptTo(A)]
    assert state_of(conn) is ClientState.DATA
    grouped = client()
    grouped.send(Noop())
    with pytest.raises(LocalProtocolError, match="RFC 2920"):
        grouped.send(MailFrom(A))


def test_client_pipelines_after_the_body() -> None:
    """RFC 2920 3.1: "the actual transfer of message content is explicitly
    allowed to be the first 'command' in a group": after the final dot the
    next transaction (or QUIT) may go before the body's reply."""
    conn = client()
    for command in (MailFrom(A), RcptTo(C), Data()):
        conn.send(command)
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(3):
        event(conn)
    conn.send_body(b"one\r\n")
    with pytest.raises(LocalProtocolError, match="DATA"):
        conn.send(Noop())  # not in the middle of the body
    conn.end_body()
    assert conn.send(MailFrom(A)) == b"MAIL FROM:<a@b.example>\r\n"
    assert conn.send(RcptTo(C)) == b"RCPT TO:<c@d.example>\r\n"
    assert conn.send(Data()) == b"DATA\r\n"
    conn.receive_data(b"250 2.0.0 queued\r\n250 ok\r\n550 no\r\n554 none\r\n")
    body = event(conn)
    assert body == DataResponse(Reply(250, "2.0.0", "queued"))
    assert state_of(conn) is ClientState.READY
    assert event(conn).command == MailFrom(A)
    assert event(conn).reply.code == 550
    assert event(conn) == Response(Data(), Reply(554, None, "none"))
    assert state_of(conn) is ClientState.MAIL
    assert conn.accepted == []
    plain = client(b"250 mx.example\r\n")
    for command in (MailFrom(A), RcptTo(C), Data()):
        plain.send(command)
        answer(plain, b"250 ok\r\n" if command != Data() else b"354 go\r\n")
    plain.end_body()
    with pytest.raises(LocalProtocolError, match="RFC 2920"):
        plain.send(Quit())


# -- Extensions the client needs -------------------------------------------------------


@pytest.mark.parametrize(
    ("ehlo", "command", "message"),
    [
        (b"250 mx\r\n", MailFrom(A, MailParams(size=10)), "SIZE"),
        (b"250-mx\r\n250 SIZE 100\r\n", MailFrom(A, MailParams(size=101)), "limit"),
        (
            b"250 mx\r\n",
            MailFrom(A, MailParams(body=BodyType.EIGHT_BIT_MIME)),
            "8BITMIME",
        ),
        (
            b"250 mx\r\n",
            MailFrom(A, MailParams(body=BodyType.BINARY_MIME)),
            "BINARYMIME",
        ),
        (b"250 mx\r\n", MailFrom(A, MailParams(smtputf8=True)), "SMTPUTF8"),
        (
            b"250-mx\r\n250 SMTPUTF8\r\n",
            MailFrom(Mailbox("δ", "b.example")),
            "SMTPUTF8",
        ),
        (b"250 mx\r\n", MailFrom(A, MailParams(envid="x")), "ENVID"),
        (b"250 mx\r\n", MailFrom(A, MailParams(auth="<>")), "AUTH"),
        (b"250 mx\r\n", MailFrom(A, MailParams(requiretls=True)), "REQUIRETLS"),
        (b"250 mx\r\n", StartTls(), "STARTTLS"),
        (b"250-mx\r\n250 AUTH LOGIN\r\n", Auth("PLAIN"), "AUTH PLAIN"),
    ],
)
def test_client_refuses_what_the_server_did_not_offer(
    ehlo: bytes, command: Any, message: str
) -> None:
    """RFC 5321 2.2.1 and each extension's RFC (1870, 6152, 3030, 6531, 3461,
    4954, 8689, 3207): a client uses an extension only once advertised."""
    conn = client(ehlo)
    with pytest.raises(LocalProtocolError, match=message):
        conn.send(command)


def test_client_rcpt_extension_checks() -> None:
    """RFC 3461 4 (DSN parameters need DSN), RFC 6531 3.4 (a UTF-8 RCPT needs
    SMTPUTF8 on MAIL), RFC 3030 (BDAT needs CHUNKING, DATA is refused for
    BINARYMIME)."""
    conn = client(b"250-mx\r\n250 SMTPUTF8\r\n")
    conn.send(MailFrom(A))
    answer(conn, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="DSN"):
        conn.send(RcptTo(C, RcptParams(notify={Notify.NEVER})))
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        conn.send(RcptTo(Mailbox("δ", "d.example")))
    conn.send(RcptTo(C))
    answer(conn, b"250 ok\r\n")
    with pytest.raises(LocalProtocolError, match="CHUNKING"):
        conn.send_chunk(b"x", last=True)
    binary = client()
    binary.send(MailFrom(A, MailParams(body=BodyType.BINARY_MIME)))
    binary.send(RcptTo(C))
    with pytest.raises(LocalProtocolError, match="BDAT"):
        binary.send(Data())
    assert binary.send_chunk(b"\x00\xff", last=True) == b"BDAT 2 LAST\r\n\x00\xff"


# -- Bodies ----------------------------------------------------------------------------


def test_client_data_body() -> None:
    """RFC 5321 4.1.1.4 and 4.5.2: after 354 the body is dot-stuffed, bare
    line endings normalised, and ended with CRLF . CRLF."""
    conn = client()
    with pytest.raises(LocalProtocolError, match="no DATA body"):
        conn.send_body(b"x")
    for command in (MailFrom(A), RcptTo(C), Data()):
        conn.send(command)
    conn.receive_data(b"250 ok\r\n250 ok\r\n354 go\r\n")
    for _ in range(3):
        event(conn)
    assert conn.send_body(b".hidden\nline") == b"..hidden\r\nline"
    assert conn.body_size == len(b".hidden\r\nline")
    assert conn.end_body() == b"\r\n.\r\n"
    with pytest.raises(LocalProtocolError, match="no DATA body"):
        conn.end_body()
    got = answer(conn, b"250 2.0.0 queued as X\r\n")
    assert got == DataResponse(Reply(250, "2.0.0", "queued as X"))
    assert state_of(conn) is ClientState.READY


def test_client_bdat_chunks() -> None:
    """RFC 3030 2 and 4.2: chunks are pipelined; each reply is a Response,
    the last chunk's a DataResponse; a failed chunk ends the transaction."""
    conn = client()
    for command in (MailFrom(A), RcptTo(C)):
        conn.send(command)
    assert conn.send_chunk(b"abc") == b"BDAT 3\r\nabc"
    assert conn.send_chunk(b"", last=True) == b"BDAT 0 LAST\r\n"
    conn.receive_data(b"250 ok\r\n250 ok\r\n250 3 octets\r\n250 done\r\n")
    events = [event(conn) for _ in range(4)]
    assert events[2] == Response(Bdat(3), Reply(250, None, "3 octets"))
    assert events[3] == DataResponse(Reply(250, None, "done"))
    assert state_of(conn) is ClientState.READY
    failing = client()
    for command in (MailFrom(A), RcptTo(C)):
        failing.send(command)
    failing.send_chunk(b"abc")
    failing.receive_data(b"250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n")
    for _ in range(3):
        event(failing)
    assert state_of(failing) is ClientState.READY
    assert failing.mail_from is None


# -- STARTTLS and AUTH -----------------------------------------------------------------


def test_client_starttls_discards_injected_replies() -> None:
    """RFC 3207 4.2 / GHSA-vxj7-4xrp-5vr4 (aiosmtplib): replies the server
    (or a man in the middle) sent after its 220 and before the handshake
    are thrown away, and the session starts over with EHLO."""
    conn = client()
    conn.send(StartTls())
    conn.receive_data(b"220 2.0.0 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
    got = event(conn)
    assert got == Response(StartTls(), Reply(220, "2.0.0", "go ahead"))
    assert event(conn) is PAUSED
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        conn.send(Noop())
    assert conn.tls_established() == b"250-injected\r\n250 AUTH PLAIN\r\n"
    assert conn.tls_active
    assert conn.extensions.entries == ()
    assert state_of(conn) is ClientState.HELLO
    assert event(conn) is NEED_DATA
    with pytest.raises(LocalProtocolError, match="out of sequence"):
        conn.send(MailFrom(A))
    conn.send(Ehlo("c.example"))
    answer(conn, b"250-mx.example\r\n250 AUTH PLAIN\r\n")
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        conn.send(StartTls())
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        conn.tls_established()


def test_client_auth_exchange() -> None:
    """RFC 4954 4: 334 asks for a response; 235 or 535 ends the exchange."""
    conn = client()
    conn.send(Auth("LOGIN"))
    assert answer(conn, b"334 VXNlcm5hbWU6\r\n").reply.code == 334
    assert state_of(conn) is ClientState.AUTH
    assert conn.send(AuthResponse(b"user")) == b"dXNlcg==\r\n"
    answer(conn, b"334 UGFzc3dvcmQ6\r\n")
    conn.send(AuthResponse(b"pass"))
    got = answer(conn, b"235 2.7.0 ok\r\n")
    assert got == Response(AuthResponse(b"pass"), Reply(235, "2.7.0", "ok"))
    assert state_of(conn) is ClientState.READY
    with pytest.raises(LocalProtocolError):
        conn.send(AuthResponse(b"late"))


# -- LMTP, 421, bad replies ------------------------------------------------------------


def test_client_lmtp_replies_per_recipient() -> None:
    """RFC 2033 4.2: one DataResponse per accepted recipient, in RCPT order,
    for DATA and for BDAT LAST (4.3)."""
    conn = client(b"250-lmtp.example\r\n250 PIPELINING\r\n", lmtp=True)
    for command in (
        MailFrom(A),
        RcptTo(C),
        RcptTo(Mailbox("x", "d.example")),
        RcptTo(A),
    ):
        conn.send(command)
    conn.send(Data())
    conn.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    for _ in range(5):
        event(conn)
    conn.send_body(b"hi\r\n")
    conn.end_body()
    conn.send(Quit())
    conn.receive_data(b"250 2.0.0 delivered\r\n452 4.2.2 over quota\r\n221 bye\r\n")
    first, second, bye = (event(conn) for _ in range(3))
    assert first == DataResponse(Reply(250, None, "2.0.0 delivered"), RcptTo(C))
    assert second == DataResponse(Reply(452, None, "4.2.2 over quota"), RcptTo(A))
    assert bye == Response(Quit(), Reply(221, None, "bye"))
    assert state_of(conn) is ClientState.CLOSED
    chunked = client(b"250-lmtp.example\r\n250 CHUNKING\r\n", lmtp=True)
    for command in (MailFrom(A), RcptTo(C), RcptTo(A)):
        chunked.send(command)
    chunked.send_chunk(b"x", last=True)
    chunked.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n250 a\r\n451 b\r\n")
    events = [event(chunked) for _ in range(5)]
    assert events[3:] == [
        DataResponse(Reply(250, None, "a"), RcptTo(C)),
        DataResponse(Reply(451, None, "b"), RcptTo(A)),
    ]
    assert state_of(chunked) is ClientState.READY


def test_client_421_closes() -> None:
    """RFC 5321 3.8: 421 may come at any time, unprompted or as the reply to
    a command; the session is over and pending replies are forgotten."""
    conn = client()
    conn.send(MailFrom(A))
    conn.send(RcptTo(C))
    got = answer(conn, b"421 4.3.2 shutting down\r\n")
    assert got == Response(MailFrom(A), Reply(421, "4.3.2", "shutting down"))
    assert state_of(conn) is ClientState.CLOSED
    assert conn.awaiting == 0
    idle = client()
    got = answer(idle, b"421 4.4.2 timeout\r\n")
    assert got == Response(None, Reply(421, "4.4.2", "timeout"))
    assert state_of(idle) is ClientState.CLOSED


def test_client_421_to_the_last_chunk_is_the_body_reply() -> None:
    """RFC 3030 2 with RFC 5321 3.8: the reply to BDAT LAST is the reply to
    the body, also when it is a 421 that ends the session; the caller waiting
    for the body's outcome gets a DataResponse (LMTP: the first recipient's,
    RFC 2033 4.2), and the session is closed."""
    for lmtp in (False, True):
        ehlo = b"250-mx.example\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n"
        conn = client(ehlo, lmtp=lmtp)
        conn.send(MailFrom(A))
        conn.send(RcptTo(C))
        conn.receive_data(b"250 ok\r\n250 ok\r\n")
        event(conn), event(conn)
        conn.send_chunk(b"x", last=True)
        got = answer(conn, b"421 4.3.2 shutting down\r\n")
        assert got == DataResponse(
            Reply(421, "4.3.2", "shutting down"), RcptTo(C) if lmtp else None
        )
        assert state_of(conn) is ClientState.CLOSED
        assert conn.awaiting == 0


def test_client_bad_replies() -> None:
    """RFC 5321 4.2: a malformed reply, or a reply nobody asked for, is a
    ReplySyntaxError; the server closing is ConnectionClosed."""
    conn = client()
    with pytest.raises(ReplySyntaxError, match="without a command"):
        answer(conn, b"250 surprise\r\n")
    conn = client()
    conn.send(Noop())
    with pytest.raises(ReplySyntaxError):
        answer(conn, b"hello\r\n")
    closed = client()
    closed.send(Noop())
    closed.receive_data(b"")
    assert event(closed) == ConnectionClosed()
    assert state_of(closed) is ClientState.CLOSED


def test_client_reply_syntax_error_is_final() -> None:
    """RFC 5321 4.2: a malformed line inside the EHLO reply never lets the
    lines around it become a reply (no PIPELINING is learnt from them).
    The session is CLOSED, nothing can be sent, and every later
    next_event raises ReplySyntaxError, at end of file too."""
    conn = client(None)
    conn.send(Ehlo("c.example"))
    conn.receive_data(b"250-mx\r\n2x0 junk\r\n250 PIPELINING\r\n")
    with pytest.raises(ReplySyntaxError, match="2x0 junk"):
        event(conn)
    assert state_of(conn) is ClientState.CLOSED
    assert conn.awaiting == 0
    assert not conn.extensions.pipelining
    for more in (b"250 2.0.0 OK\r\n", b""):
        conn.receive_data(more)
        with pytest.raises(ReplySyntaxError, match="2x0 junk"):
            event(conn)
    with pytest.raises(LocalProtocolError):
        conn.send(Noop())


def test_client_unexpected_reply_is_final() -> None:
    """RFC 5321 4.2: a reply nobody asked for puts the replies out of step
    with the commands; the client does not read on as if it were not."""
    conn = client()
    with pytest.raises(ReplySyntaxError, match="without a command"):
        answer(conn, b"250 surprise\r\n")
    assert state_of(conn) is ClientState.CLOSED
    with pytest.raises(ReplySyntaxError, match="without a command"):
        answer(conn, b"")


# -- Client and server together --------------------------------------------------------


def test_pair_starttls_on_both_sides() -> None:
    """RFC 3207 4.2 (CVE-2011-0411, GHSA-vxj7-4xrp-5vr4): client and server
    state machines agree through STARTTLS, each discarding what the other
    side's attacker pipelined, and both start over with EHLO."""
    pair = Pair.start(
        ServerSettings(hostname="mx.example", starttls=True, auth_mechanisms=("PLAIN",))
    )
    pair.exchange(Ehlo("c.example"))
    assert "AUTH" not in pair.client.extensions
    assert pair.client.extensions.starttls
    pair.to_server(pair.client.send(StartTls()) + b"MAIL FROM:<evil@x>\r\n")
    assert event(pair.server) == StartTls()
    pair.to_client(pair.server.send(pair.server.default_reply(StartTls())) + b"250 forged\r\n")
    assert event(pair.client) == Response(StartTls(), replies.READY_TO_START_TLS)
    assert event(pair.server) is PAUSED
    assert event(pair.client) is PAUSED
    assert pair.server.tls_established() == b"MAIL FROM:<evil@x>\r\n"
    assert pair.client.tls_established() == b"250 forged\r\n"
    _, response = pair.exchange(Ehlo("c.example"))
    assert response.reply.code == 250
    assert pair.client.extensions.auth == {"PLAIN"}
    assert not pair.client.extensions.starttls


def test_pair_auth_and_mail() -> None:
    """RFC 4954 4 and 6: an AUTH PLAIN exchange then a transaction, both
    machines in the same state after every step."""
    settings = ServerSettings(
        hostname="mx.example", auth_mechanisms=("PLAIN",), auth_requires_tls=False
    )
    pair = Pair.start(settings)
    pair.exchange(Ehlo("c.example"))
    server_event, client_event = pair.exchange(Auth("PLAIN"))
    assert server_event == Auth("PLAIN")
    assert client_event.reply.code == 334
    assert state_of(pair.server) is ServerState.AUTH
    assert state_of(pair.client) is ClientState.AUTH
    server_event, client_event = pair.exchange(AuthResponse(b"\x00u\x00p"))
    assert client_event.reply.code == 235
    assert pair.server.auth_identity == "someone"
    assert state_of(pair.client) is ClientState.READY
    pair.exchange(MailFrom(A, MailParams(auth="<>")))
    pair.exchange(RcptTo(C))
    _, data = pair.exchange(Data())
    assert data.reply.code == 354
    pair.to_server(pair.client.send_body(b"..x\r\n") + pair.client.end_body())
    assert event(pair.server) == BodyChunk(b"..x\r\n")
    end = event(pair.server)
    pair.to_client(pair.server.send(pair.server.default_reply(end)))
    assert event(pair.client) == DataResponse(replies.MESSAGE_ACCEPTED)
    assert state_of(pair.server) is ServerState.READY
    assert state_of(pair.client) is ClientState.READY


def test_pair_refusals_keep_both_sides_in_step() -> None:
    """RFC 5321 4.1.4: a 503 or 555 leaves both sides where they were."""
    pair = Pair.start()
    pair.exchange(Ehlo("c.example"))
    error, response = pair.exchange(MailFrom(A, MailParams(extra=[("XFOO", None)])))
    assert error.reply == replies.PARAMETER_NOT_RECOGNIZED
    assert response.reply == replies.PARAMETER_NOT_RECOGNIZED
    assert state_of(pair.server) is ServerState.READY
    assert state_of(pair.client) is ClientState.READY
    pair.exchange(MailFrom(A))
    assert state_of(pair.client) is ClientState.MAIL
    assert state_of(pair.server) is ServerState.MAIL
