"""The server session state machine: sequence, resets, AUTH, TLS, limits, LMTP."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from msg_dialogue import accept_everything, drive

from smtp_message import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    BadSequenceError,
    Bdat,
    BodyChunk,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfData,
    LocalProtocolError,
    MailFrom,
    MessageRejectedError,
    Noop,
    ParameterError,
    Quit,
    RcptTo,
    RemoteProtocolError,
    Reply,
    ServerConnection,
    ServerSettings,
    ServerState,
    StartTls,
    replies,
)


@attrs.define
class Session:
    """A server session driven command by command."""

    conn: ServerConnection

    @classmethod
    def start(cls, greeted: bool = True, **settings: Any) -> Session:
        settings.setdefault("hostname", "mx.example")
        conn = ServerConnection(ServerSettings(**settings))
        conn.send(conn.greeting())
        session = cls(conn)
        if greeted:
            verb = "LHLO" if conn.settings.lmtp else "EHLO"
            session.ok(f"{verb} client.example")
        return session

    def event(self, data: bytes = b"") -> Any:
        """Feed ``data``; the next event, or the RemoteProtocolError raised."""
        if data:
            self.conn.receive_data(data)
        try:
            return self.conn.next_event()
        except RemoteProtocolError as exc:
            return exc

    def line(self, line: str | bytes, reply: Reply | None = None) -> tuple[Any, bytes]:
        """Send one command line; answer with ``reply``, the error's reply or
        the default; return the event (or error) and the reply's bytes."""
        data = line.encode() if isinstance(line, str) else line
        event = self.event(data + b"\r\n")
        if isinstance(event, RemoteProtocolError):
            assert event.reply is not None
            return event, self.conn.send(reply or event.reply)
        return event, self.conn.send(reply or accept_everything(self.conn, event))

    def ok(self, line: str | bytes, reply: Reply | None = None) -> Any:
        """Send a line that must be accepted; return its event."""
        event, wire = self.line(line, reply)
        assert not isinstance(event, RemoteProtocolError), event
        assert wire[:1] in b"23", wire
        return event

    def refused(self, line: str | bytes) -> Reply:
        """Send a line the protocol must refuse; return the reply sent."""
        event, _ = self.line(line)
        assert isinstance(event, RemoteProtocolError), event
        assert event.reply is not None
        return event.reply

    def body(self, data: bytes) -> list[Any]:
        """After 354: feed a body; the events up to its end (or error)."""
        self.conn.receive_data(data)
        events = []
        while True:
            event = self.event()
            events.append(event)
            if not isinstance(event, BodyChunk):
                return events


def state_of(conn: ServerConnection) -> ServerState:
    """The state, read afresh (mypy would narrow ``conn.state`` across calls)."""
    return conn.state


def transaction(session: Session, rcpts: int = 1) -> None:
    session.ok("MAIL FROM:<a@b.example>")
    for i in range(rcpts):
        session.ok(f"RCPT TO:<r{i}@d.example>")


# -- Greeting and the one-reply-per-command rule ---------------------------------------


def test_server_greeting_first() -> None:
    """RFC 5321 3.1: the server speaks first, 220 (or 554, or 421)."""
    conn = ServerConnection(ServerSettings(hostname="mx.example"))
    with pytest.raises(LocalProtocolError, match="greeting"):
        conn.next_event()
    with pytest.raises(LocalProtocolError, match="220"):
        conn.send(Reply(250))
    assert conn.send(conn.greeting()) == b"220 mx.example ESMTP ready\r\n"
    assert state_of(conn) is ServerState.HELLO


def test_server_early_talker_is_noted() -> None:
    """RFC 5321 3.1: the server speaks first; a client that talks before the
    greeting is flagged for the driver to judge (as Postfix's postscreen
    does)."""
    conn = ServerConnection()
    conn.receive_data(b"EHLO hasty.example\r\n")
    conn.send(conn.greeting())
    assert conn.client_spoke_first


def test_server_554_greeting_then_only_quit() -> None:
    """RFC 5321 3.1: after a 554 greeting the server "MUST still wait for the
    client to send a QUIT" and "SHOULD respond to any intervening commands
    with 503"."""
    conn = ServerConnection()
    conn.send(Reply(554, None, "mx.example no service"))
    session = Session(conn)
    for line in ("EHLO x", "MAIL FROM:<a@b.example>", "NOOP", "RSET", "STARTTLS"):
        assert session.refused(line) == replies.NO_SERVICE
    assert session.ok("QUIT") == Quit()
    assert state_of(conn) is ServerState.CLOSED


def test_server_one_reply_per_command() -> None:
    """RFC 2920 3.1 (replies in order) enforced: nothing is parsed while a
    reply is due, and no reply is sent that nobody asked for."""
    session = Session.start()
    conn = session.conn
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    assert conn.next_event() == Noop()
    assert conn.reply_due
    with pytest.raises(LocalProtocolError, match="due"):
        conn.next_event()
    conn.send(replies.OK)
    assert conn.next_event() == Noop()
    conn.send(replies.OK)
    with pytest.raises(LocalProtocolError, match="no reply is due"):
        conn.send(replies.OK)


def test_server_refused_command_cannot_be_accepted() -> None:
    """A command the protocol refuses gets 4xx/5xx: the driver cannot accept
    it by mistake (RFC 5321 4.1.4: RCPT before MAIL is 503)."""
    session = Session.start()
    event = session.event(b"RCPT TO:<a@b.example>\r\n")
    assert isinstance(event, BadSequenceError)
    with pytest.raises(LocalProtocolError, match="4xx or 5xx"):
        session.conn.send(replies.RECIPIENT_OK)
    session.conn.send(Reply(550, "5.7.1", "no"))  # any refusal will do
    assert state_of(session.conn) is ServerState.READY


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("DATA", Reply(250)),  # DATA goes on with 354, never 2xx
        ("NOOP", Reply(354)),  # 3xx only for DATA and AUTH
        ("MAIL FROM:<a@b.example>", Reply(334)),
        ("STARTTLS", Reply(250)),  # RFC 3207 4: 220
    ],
)
def test_server_reply_kind_checked(line: str, reply: Reply) -> None:
    """RFC 5321 4.3.2: the reply codes each command may get."""
    session = Session.start(starttls=True)
    if line == "DATA":
        transaction(session)
    session.conn.receive_data(line.encode() + b"\r\n")
    session.conn.next_event()
    with pytest.raises(LocalProtocolError):
        session.conn.send(reply)


def test_server_adds_generic_enhanced_codes() -> None:
    """RFC 2034 3: every 2xx/4xx/5xx reply carries an enhanced code once
    ENHANCEDSTATUSCODES is advertised (always): the class's X.0.0 is added
    where a hook gave none; greeting and EHLO replies are exempt."""
    session = Session.start()
    _, wire = session.line("MAIL FROM:<a@b.example>", Reply(550, None, "no"))
    assert wire == b"550 5.0.0 no\r\n"
    _, wire = session.line("NOOP", Reply(250, None, ["a", "b"]))
    assert wire == b"250-2.0.0 a\r\n250 2.0.0 b\r\n"
    _, wire = session.line("EHLO again.example", Reply(250, None, "hi"))
    assert wire == b"250 hi\r\n"
    assert b"ENHANCEDSTATUSCODES" in session.conn.ehlo_reply().to_bytes()


# -- Sequence --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "line", "reply"),
    [
        ("", "MAIL FROM:<a@b.example>", replies.BAD_SEQUENCE),  # no EHLO yet
        ("ehlo", "RCPT TO:<a@b.example>", replies.BAD_SEQUENCE),
        ("ehlo", "DATA", replies.BAD_SEQUENCE),
        ("ehlo", "BDAT 0 LAST", replies.BAD_SEQUENCE),
        ("mail", "DATA", replies.NO_VALID_RECIPIENTS),  # RFC 5321 3.3: 554
        ("mail", "BDAT 0 LAST", replies.NO_VALID_RECIPIENTS),
        ("mail", "MAIL FROM:<a@b.example>", replies.BAD_SEQUENCE),  # nested
        ("rcpt", "MAIL FROM:<a@b.example>", replies.BAD_SEQUENCE),
        ("rcpt", "STARTTLS", replies.BAD_SEQUENCE),
        ("rcpt", "AUTH PLAIN", replies.BAD_SEQUENCE),
        ("", "STARTTLS", replies.BAD_SEQUENCE),  # RFC 3207 4: after EHLO
        ("", "AUTH PLAIN", replies.BAD_SEQUENCE),
    ],
)
def test_server_bad_sequences(setup: str, line: str, reply: Reply) -> None:
    """RFC 5321 4.1.4: "503 Bad sequence of commands" (3.3: "554 no valid
    recipients" for DATA when every RCPT failed); the state does not move."""
    session = Session.start(greeted=setup != "", starttls=True, auth_mechanisms=["PLAIN"])
    if setup == "mail":
        session.ok("MAIL FROM:<a@b.example>")
        session.refused("RCPT TO:<no@d.example> X=1")  # refused: 555
    elif setup == "rcpt":
        transaction(session)
    before = session.conn.state
    assert session.refused(line) == reply
    assert session.conn.state is before


def test_server_rcpt_refused_by_driver_leaves_transaction_empty() -> None:
    """RFC 5321 3.3: a recipient answered 550 is not in the envelope; DATA
    then gets 554 while no recipient was accepted."""
    session = Session.start()
    session.ok("MAIL FROM:<a@b.example>")
    event, wire = session.line("RCPT TO:<x@d.example>", Reply(550, "5.1.1", "No such user"))
    assert isinstance(event, RcptTo)
    assert wire == b"550 5.1.1 No such user\r\n"
    assert session.conn.transaction is not None
    assert session.conn.transaction.recipients == []
    assert session.refused("DATA") == replies.NO_VALID_RECIPIENTS
    session.ok("RCPT TO:<y@d.example>")
    assert isinstance(session.ok("DATA"), Data)


def test_server_full_transaction_and_envelope() -> None:
    """RFC 5321 3.3: MAIL, RCPT, DATA, body, 250; the envelope is tracked and
    dropped once the message is answered."""
    session = Session.start()
    mail = session.ok("MAIL FROM:<a@b.example> SIZE=10")
    session.ok("RCPT TO:<c@d.example>")
    session.ok("RCPT TO:<e@f.example>")
    t = session.conn.transaction
    assert t is not None
    assert t.mail_from == mail
    assert [str(r.forward_path) for r in t.recipients] == ["c@d.example", "e@f.example"]
    session.ok("DATA")
    assert state_of(session.conn) is ServerState.DATA
    events = session.body(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    assert events == [BodyChunk(b"Subject: x\r\n\r\nhi\r\n"), EndOfData()]
    assert t.size == len(b"Subject: x\r\n\r\nhi\r\n")
    assert t.body_command == "DATA"
    assert session.conn.send(session.conn.default_reply(EndOfData())) == (
        b"250 2.0.0 Message accepted\r\n"
    )
    assert session.conn.transaction is None
    assert state_of(session.conn) is ServerState.READY


def test_server_data_refused_by_driver_stays_in_command_mode() -> None:
    """RFC 5321 3.3: "message data MUST NOT be sent unless a 354 reply is
    received": after a 5xx to DATA, what follows is commands again."""
    session = Session.start()
    transaction(session)
    event, wire = session.line("DATA", Reply(554, "5.7.1", "not today"))
    assert isinstance(event, Data)
    assert wire == b"554 5.7.1 not today\r\n"
    assert state_of(session.conn) is ServerState.RCPT
    assert session.ok("NOOP") == Noop()


# -- Resets ----------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["RSET", "EHLO again.example", "HELO again.example"])
def test_server_reset_clears_the_transaction(reset: str) -> None:
    """RFC 5321 4.1.1.5 (RSET) and 4.1.4 (a later EHLO must "reset the state
    exactly as if a RSET command had been issued"; HELO alike): the envelope
    is dropped, a new MAIL is legal."""
    session = Session.start()
    transaction(session, rcpts=2)
    session.ok(reset)
    assert session.conn.transaction is None
    assert state_of(session.conn) is ServerState.READY
    assert session.refused("RCPT TO:<a@b.example>") == replies.BAD_SEQUENCE
    session.ok("MAIL FROM:<a@b.example>")


def test_server_rset_before_hello() -> None:
    """RFC 5321 4.1.1.5: RSET is legal at any time, even before EHLO."""
    session = Session.start(greeted=False)
    session.ok("RSET")
    assert state_of(session.conn) is ServerState.HELLO


def test_server_starttls_discards_pipelined_bytes() -> None:
    """RFC 3207 4.2 / CVE-2011-0411: commands pipelined after STARTTLS are
    thrown away unparsed; after the handshake the session starts over
    (EHLO name, transaction, AUTH forgotten; STARTTLS no longer offered)."""
    session = Session.start(starttls=True, auth_mechanisms=["PLAIN"])
    assert b"STARTTLS" in session.conn.ehlo_reply().to_bytes()
    assert b"AUTH" not in session.conn.ehlo_reply().to_bytes()  # RFC 4954 4
    injected = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@y.example>\r\n"
    event, wire = session.line(b"STARTTLS\r\n" + injected[:-2])
    assert event == StartTls()
    assert wire == b"220 2.0.0 Ready to start TLS\r\n"
    assert state_of(session.conn) is ServerState.STARTTLS
    assert session.conn.next_event() is PAUSED
    session.conn.receive_data(b"more plaintext")
    assert session.conn.next_event() is PAUSED
    assert session.conn.tls_established() == injected + b"more plaintext"
    assert session.conn.trailing_data == b""
    assert session.conn.tls_active
    assert session.conn.hello is None
    assert state_of(session.conn) is ServerState.HELLO
    assert session.refused("MAIL FROM:<a@b.example>") == replies.BAD_SEQUENCE
    session.ok("EHLO client.example")
    advertised = session.conn.ehlo_reply().to_bytes()
    assert b"STARTTLS" not in advertised
    assert b"AUTH PLAIN" in advertised
    assert session.refused("STARTTLS") == replies.BAD_SEQUENCE
    with pytest.raises(LocalProtocolError, match="STARTTLS"):
        session.conn.tls_established()


def test_server_starttls_refused_keeps_plaintext_session() -> None:
    """RFC 3207 4: after 454 the session continues in the clear, and the
    commands that followed are read as commands."""
    session = Session.start(starttls=True)
    session.conn.receive_data(b"STARTTLS\r\nNOOP\r\n")
    session.conn.next_event()
    session.conn.send(replies.TLS_NOT_AVAILABLE)
    assert state_of(session.conn) is ServerState.READY
    assert session.conn.next_event() == Noop()


def test_server_starttls_not_offered() -> None:
    """RFC 3207 4: without a TLS context STARTTLS is 502, not advertised."""
    session = Session.start()
    assert b"STARTTLS" not in session.conn.ehlo_reply().to_bytes()
    assert session.refused("STARTTLS") == replies.NOT_IMPLEMENTED


# -- AUTH ------------------------------------------------------------------------------


def auth_session(**settings: Any) -> Session:
    settings.setdefault("auth_mechanisms", ["PLAIN", "LOGIN"])
    settings.setdefault("auth_requires_tls", False)
    return Session.start(**settings)


def test_server_auth_initial_response() -> None:
    """RFC 4954 4 and 6: AUTH PLAIN with an initial response, 235; then AUTH
    is no longer advertised and a second AUTH is 503."""
    session = auth_session()
    assert b"250 AUTH PLAIN LOGIN" in session.conn.ehlo_reply().to_bytes()
    event = session.event(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n")
    assert event == Auth("PLAIN", b"\x00user\x00pass")
    session.conn.authenticated("user")
    assert session.conn.send(replies.AUTH_SUCCESSFUL) == (
        b"235 2.7.0 Authentication successful\r\n"
    )
    assert session.conn.auth_identity == "user"
    assert state_of(session.conn) is ServerState.READY
    assert b"AUTH" not in session.conn.ehlo_reply().to_bytes()
    reply = session.refused("AUTH PLAIN =")
    assert reply.code == 503


def test_server_auth_challenge_exchange() -> None:
    """RFC 4954 4: 334 challenges and base64 responses until 235 or 535."""
    session = auth_session()
    assert session.ok("AUTH LOGIN", Reply(334, None, "VXNlcm5hbWU6")) == Auth("LOGIN")
    assert state_of(session.conn) is ServerState.AUTH
    assert session.ok("dXNlcg==", Reply(334, None, "UGFzc3dvcmQ6")) == AuthResponse(b"user")
    event, wire = session.line("cGFzcw==", replies.AUTH_FAILED)
    assert event == AuthResponse(b"pass")
    assert wire == b"535 5.7.8 Authentication credentials invalid\r\n"
    assert state_of(session.conn) is ServerState.READY
    assert session.conn.auth_identity is None
    # A failed exchange may be retried.
    session.ok("AUTH PLAIN", Reply(334, None, ""))


@pytest.mark.parametrize(
    ("response", "reply"),
    [
        (b"*", replies.AUTH_CANCELLED),  # RFC 4954 4: "*" cancels, 501
        (b"not base64!", replies.AUTH_BAD_BASE64),
        (b"AAA", replies.AUTH_BAD_BASE64),
        (b"A" * 13000, replies.LINE_TOO_LONG),  # RFC 4954 4: 500 5.5.6
    ],
)
def test_server_auth_exchange_failures_end_the_exchange(response: bytes, reply: Reply) -> None:
    """RFC 4954 4: a cancelled, undecodable or over-long response fails the
    AUTH command; the next line is a command again, not a response."""
    session = auth_session()
    session.ok("AUTH LOGIN", Reply(334, None, "VXNlcm5hbWU6"))
    session.conn.receive_data(response + b"\r\nNOOP\r\n")
    event = session.event()
    assert isinstance(event, RemoteProtocolError)
    assert event.reply == reply
    session.conn.send(reply)
    assert state_of(session.conn) is ServerState.READY
    assert session.event() == Noop()


def test_server_auth_refusals() -> None:
    """RFC 4954 4: unknown mechanism 504, no AUTH after HELO (502), and
    plain-text mechanisms only under TLS by default (538, RFC 4954 6)."""
    session = auth_session()
    assert session.refused("AUTH CRAM-MD5") == replies.AUTH_MECHANISM_UNKNOWN
    helo = auth_session(greeted=False)
    helo.ok("HELO client.example")
    assert helo.refused("AUTH PLAIN") == replies.NOT_IMPLEMENTED
    clear = Session.start(auth_mechanisms=["PLAIN"])  # auth_requires_tls
    assert b"AUTH" not in clear.conn.ehlo_reply().to_bytes()
    assert clear.refused("AUTH PLAIN") == replies.ENCRYPTION_REQUIRED
    none = Session.start()
    assert none.refused("AUTH PLAIN") == replies.NOT_IMPLEMENTED


def test_server_require_auth_and_tls() -> None:
    """RFC 6409 4.3 (submission) and RFC 3207 4: MAIL refused with 530 until
    the client authenticated / started TLS."""
    session = auth_session(require_auth=True)
    assert session.refused("MAIL FROM:<a@b.example>") == replies.AUTH_REQUIRED
    session.event(b"AUTH PLAIN AHUAcA==\r\n")
    session.conn.authenticated("u")
    session.conn.send(replies.AUTH_SUCCESSFUL)
    session.ok("MAIL FROM:<a@b.example> AUTH=<>")
    tls = Session.start(require_tls=True, starttls=True)
    assert tls.refused("MAIL FROM:<a@b.example>") == replies.TLS_REQUIRED


# -- Limits ----------------------------------------------------------------------------


def test_server_max_recipients() -> None:
    """RFC 5321 4.5.3.1.10: "452 Too many recipients" past the limit; the
    envelope keeps the recipients accepted, and the mail goes on."""
    session = Session.start(max_recipients=100)
    transaction(session, rcpts=100)
    assert session.refused("RCPT TO:<one-more@d.example>") == replies.TOO_MANY_RECIPIENTS
    assert replies.TOO_MANY_RECIPIENTS.to_bytes() == b"452 4.5.3 Too many recipients\r\n"
    assert session.conn.transaction is not None
    assert len(session.conn.transaction.recipients) == 100
    session.ok("DATA")
    with pytest.raises(ValueError, match="100"):
        ServerSettings(max_recipients=99)  # RFC 5321 4.5.3.1.8


def test_server_size_limit() -> None:
    """RFC 1870: SIZE advertised with the limit; a larger declared SIZE is
    552 5.3.4 at MAIL (6.1), a larger body 552 5.3.4 after it is read."""
    session = Session.start(max_message_size=100)
    assert b"250-SIZE 100\r\n" in session.conn.ehlo_reply().to_bytes()
    assert session.refused("MAIL FROM:<a@b.example> SIZE=101") == replies.MESSAGE_TOO_BIG
    session.ok("MAIL FROM:<a@b.example> SIZE=100")
    session.ok("RCPT TO:<c@d.example>")
    session.ok("DATA")
    events = session.body(b"x" * 99 + b"\r\n" + b"y" * 50 + b"\r\n.\r\nNOOP\r\n")
    assert isinstance(events[-1], MessageRejectedError)
    assert events[-1].reply == replies.MESSAGE_TOO_BIG
    session.conn.send(replies.MESSAGE_TOO_BIG)
    assert state_of(session.conn) is ServerState.READY
    assert session.event() == Noop()
    unlimited = Session.start(max_message_size=None)
    assert b"250-SIZE\r\n" in unlimited.conn.ehlo_reply().to_bytes()


def test_server_bdat_refusals_skip_the_chunk() -> None:
    """RFC 3030 2: BDAT is followed by exactly that many octets, whatever
    the reply: those of a refused BDAT are read and dropped, never taken for
    commands."""
    cases: list[tuple[dict[str, Any], bool, Reply]] = [
        ({"max_message_size": 10}, True, replies.MESSAGE_TOO_BIG),
        ({"chunking": False, "binarymime": False}, True, replies.NOT_IMPLEMENTED),
        ({}, False, replies.BAD_SEQUENCE),
    ]
    for settings, with_envelope, reply in cases:
        session = Session.start(**settings)
        if with_envelope:
            transaction(session)
        session.conn.receive_data(b"BDAT 12\r\nQUIT\r\nQUIT\r\nNOOP\r\n")
        event = session.event()
        assert isinstance(event, RemoteProtocolError)
        assert event.reply == reply
        session.conn.send(reply)
        assert session.event() == Noop()
        assert session.conn.transaction is None


def test_server_bdat_bad_end_marker_skips_the_chunk() -> None:
    """RFC 3030 2: the chunk follows the BDAT line at once.  A line whose
    size parses but whose end marker does not gets 501, and its octets are
    still read and dropped: never taken for commands (a front-end that reads
    the marker more leniently would otherwise see a different session)."""
    for with_envelope in (True, False):
        session = Session.start()
        if with_envelope:
            transaction(session)
        chunk = b"RSET\r\nMAIL FROM:<e@x.example>\r\n"
        session.conn.receive_data(b"BDAT %d LASTX\r\n" % len(chunk))
        assert session.event() is NEED_DATA  # the chunk is still to come
        session.conn.receive_data(chunk[:7])
        assert session.event() is NEED_DATA
        session.conn.receive_data(chunk[7:] + b"NOOP\r\n")
        event = session.event()
        assert isinstance(event, RemoteProtocolError)
        assert event.reply == replies.ARGUMENT_SYNTAX
        session.conn.send(event.reply)
        assert session.event() == Noop()
        assert session.conn.transaction is None


def test_server_bdat_without_a_size_closes() -> None:
    """RFC 3030 2: with no readable chunk size, where the chunk ends is
    unknown; the server closes (421) rather than read chunk data as
    commands."""
    for line in (b"BDAT", b"BDAT x LAST", b"BDAT -1", b"BDAT " + b"9" * 21):
        session = Session.start()
        transaction(session)
        reply = session.refused(line)
        assert reply == replies.BDAT_SIZE_UNREADABLE
        assert state_of(session.conn) is ServerState.CLOSED


def test_server_long_hello_name_is_not_echoed() -> None:
    """RFC 5321 4.1.1.1: the first EHLO line is "250-" Domain [SP
    ehlo-greet]; a client name too long to echo on it is left out, not
    wrapped onto a line of its own (where a client reads an extension
    keyword), and a HELO reply stays one line."""
    name = "mx." + "a" * 490 + ".example"
    for verb in ("EHLO", "HELO"):
        session = Session.start(greeted=False)
        _, wire = session.line(f"{verb} {name}")
        lines = wire.split(b"\r\n")[:-1]
        assert lines[0] in (b"250-mx.example Hello", b"250 mx.example Hello")
        assert all(len(line) <= 510 for line in lines)
        assert name.encode() not in wire
        if verb == "HELO":
            assert len(lines) == 1
        else:
            assert lines[1] == b"250-PIPELINING"
    # A name that fits is echoed.
    fits = "a" * (512 - len("250-mx.example Hello \r\n"))
    _, wire = Session.start(greeted=False).line(f"EHLO {fits}")
    assert wire.startswith(f"250-mx.example Hello {fits}\r\n".encode())


def test_server_bdat_flow() -> None:
    """RFC 3030 2: each chunk gets its reply; LAST ends the message; a
    failed chunk ends the transaction (a later BDAT is 503)."""
    session = Session.start()
    transaction(session)
    assert session.event(b"BDAT 3\r\nabc") == Bdat(3)
    assert session.event() == BodyChunk(b"abc")
    assert session.event() == EndOfChunk()
    assert session.conn.send(session.conn.default_reply(EndOfChunk())) == (
        b"250 2.0.0 3 octets received\r\n"
    )
    assert state_of(session.conn) is ServerState.BDAT
    assert session.refused("DATA") == replies.BAD_SEQUENCE  # no DATA mid-BDAT
    assert session.event(b"BDAT 2\r\nde") == Bdat(2)
    assert session.event() == BodyChunk(b"de")
    assert session.event() == EndOfChunk()
    session.conn.send(Reply(452, "4.3.1", "disk full"))
    assert state_of(session.conn) is ServerState.READY
    assert session.conn.transaction is None
    session.conn.receive_data(b"BDAT 1 LAST\r\nx")
    assert session.event().reply == replies.BAD_SEQUENCE


def test_server_binarymime_needs_bdat() -> None:
    """RFC 3030 3: "If a DATA command is issued after a MAIL command
    containing the body-value of BINARYMIME, a 503 ... MUST be sent"."""
    session = Session.start()
    session.ok("MAIL FROM:<a@b.example> BODY=BINARYMIME")
    session.ok("RCPT TO:<c@d.example>")
    assert session.refused("DATA") == replies.BINARYMIME_NEEDS_BDAT


# -- Parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "line", "accepted"),
    [
        ({}, "MAIL FROM:<a@b.example> XFOO=1", False),  # RFC 5321 4.1.1.11: 555
        ({"extra_mail_parameters": ["xfoo"]}, "MAIL FROM:<a@b.example> XFOO=1", True),
        ({"eightbitmime": False}, "MAIL FROM:<a@b.example> BODY=8BITMIME", False),
        ({}, "MAIL FROM:<a@b.example> BODY=8BITMIME", True),
        ({}, "MAIL FROM:<a@b.example> BODY=7BIT", True),
        ({"binarymime": False}, "MAIL FROM:<a@b.example> BODY=BINARYMIME", False),
        ({"smtputf8": False}, "MAIL FROM:<a@b.example> SMTPUTF8", False),
        ({"dsn": False}, "MAIL FROM:<a@b.example> RET=FULL", False),
        ({"dsn": False}, "MAIL FROM:<a@b.example> ENVID=x", False),
        ({}, "MAIL FROM:<a@b.example> RET=FULL ENVID=x", True),
        ({}, "MAIL FROM:<a@b.example> AUTH=<>", False),  # AUTH not offered
        ({}, "MAIL FROM:<a@b.example> REQUIRETLS", False),  # RFC 8689
    ],
)
def test_server_mail_parameter_support(settings: dict[str, Any], line: str, accepted: bool) -> None:
    """RFC 5321 4.1.1.11: parameters of extensions not offered get "555
    MAIL FROM/RCPT TO parameters not recognized or not implemented"."""
    session = Session.start(**settings)
    if accepted:
        mail = session.ok(line)
        assert isinstance(mail, MailFrom)
    else:
        assert session.refused(line) == replies.PARAMETER_NOT_RECOGNIZED


def test_server_rcpt_parameter_support() -> None:
    """RFC 3461 4: NOTIFY and ORCPT need DSN; others are the caller's (555)."""
    session = Session.start()
    transaction(session)
    session.ok("RCPT TO:<x@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@d.example")
    assert session.refused("RCPT TO:<y@d.example> XBAR") == replies.PARAMETER_NOT_RECOGNIZED
    no_dsn = Session.start(dsn=False)
    transaction(no_dsn)
    assert no_dsn.refused("RCPT TO:<x@d.example> NOTIFY=NEVER") == (
        replies.PARAMETER_NOT_RECOGNIZED
    )
    extra = Session.start(extra_rcpt_parameters=["XBAR"])
    transaction(extra)
    rcpt = extra.ok("RCPT TO:<y@d.example> XBAR=1")
    assert rcpt.params.extra == (("XBAR", "1"),)


def test_server_parameters_need_ehlo() -> None:
    """RFC 5321 4.1.1.11 / 2.2: a HELO client gets no extensions, so any
    parameter is 555; the extensions in force are none."""
    session = Session.start(greeted=False)
    session.ok("HELO client.example")
    assert session.conn.extensions.entries == ()
    assert session.refused("MAIL FROM:<a@b.example> SIZE=1") == replies.PARAMETER_NOT_RECOGNIZED
    session.ok("MAIL FROM:<a@b.example>")
    assert session.refused("RCPT TO:<c@d.example> NOTIFY=NEVER") == (
        replies.PARAMETER_NOT_RECOGNIZED
    )


def test_server_requiretls() -> None:
    """RFC 8689 4: REQUIRETLS is offered only under TLS, and MAIL with it
    needs TLS (530 5.7.10)."""
    clear = Session.start(requiretls=True)
    assert b"REQUIRETLS" not in clear.conn.ehlo_reply().to_bytes()
    assert clear.refused("MAIL FROM:<a@b.example> REQUIRETLS") == replies.REQUIRETLS_NEEDS_TLS
    conn = ServerConnection(ServerSettings(requiretls=True), tls_active=True)
    conn.send(conn.greeting())
    secure = Session(conn)
    secure.ok("EHLO client.example")
    assert b"REQUIRETLS" in conn.ehlo_reply().to_bytes()
    assert secure.ok("MAIL FROM:<a@b.example> REQUIRETLS").params.requiretls


def test_server_smtputf8_transaction() -> None:
    """RFC 6531 3.4: MAIL with SMTPUTF8 lets the transaction's RCPTs be UTF-8;
    without it they are 553 5.6.7 (3.7.4.1)."""
    session = Session.start()
    session.ok("MAIL FROM:<a@b.example>")
    assert session.refused("RCPT TO:<δ@d.example>") == replies.NON_ASCII_ADDRESS
    session.ok("RSET")
    session.ok("MAIL FROM:<ä@b.example> SMTPUTF8")
    rcpt = session.ok("RCPT TO:<δ@bücher.example>")
    assert rcpt.forward_path.needs_smtputf8


# -- Other commands --------------------------------------------------------------------


def test_server_vrfy_expn_help_noop() -> None:
    """RFC 5321 3.5.3: VRFY may get 252; EXPN may be unimplemented (502);
    HELP 214; NOOP 250.  None changes the state (4.1.1.6-9)."""
    session = Session.start()
    transaction(session)
    _, wire = session.line("VRFY someone")
    assert wire.startswith(b"252 2.5.0 ")
    assert session.refused("EXPN list") == replies.NOT_IMPLEMENTED
    _, wire = session.line("HELP")
    assert wire.startswith(b"214 2.0.0 ")
    _, wire = session.line("NOOP")
    assert wire == b"250 2.0.0 OK\r\n"
    assert state_of(session.conn) is ServerState.RCPT
    closed = Session.start(vrfy=False)
    assert closed.refused("VRFY someone") == replies.NOT_IMPLEMENTED


def test_server_unknown_command_and_error_count() -> None:
    """RFC 5321 4.2.4: unknown verbs get 500 5.5.1 (without echo);
    ``errors`` counts refusals since the last accepted message (4.5.3.2:
    a server may drop a client that keeps failing)."""
    session = Session.start()
    for _ in range(3):
        reply = session.refused("XYZZY secret-token")
        assert reply == replies.COMMAND_UNRECOGNIZED
    assert session.conn.errors == 3
    transaction(session)
    session.line("RCPT TO:<bad@d.example>", Reply(550, "5.1.1", "no"))
    assert session.conn.errors == 4
    session.ok("DATA")
    session.body(b".\r\n")
    session.conn.send(replies.MESSAGE_ACCEPTED)
    assert session.conn.errors == 0


def test_server_quit_and_421() -> None:
    """RFC 5321 4.1.1.10 (QUIT, 221) and 3.8 (421 at any time) close the
    session; nothing more may be read or sent."""
    session = Session.start()
    assert session.ok("QUIT") == Quit()
    assert state_of(session.conn) is ServerState.CLOSED
    with pytest.raises(LocalProtocolError, match="closed"):
        session.conn.next_event()
    with pytest.raises(LocalProtocolError, match="closed"):
        session.conn.send(replies.OK)
    busy = Session.start()
    transaction(busy)
    busy.conn.receive_data(b"DATA\r\n")
    busy.conn.next_event()
    assert busy.conn.send(replies.SHUTTING_DOWN) == (
        b"421 4.3.2 Server shutting down, try again later\r\n"
    )
    assert state_of(busy.conn) is ServerState.CLOSED
    assert not busy.conn.reply_due
    timeout = Session.start()
    assert timeout.conn.send(Reply(421, None, "Timeout")) == b"421 4.0.0 Timeout\r\n"


def test_server_end_of_file() -> None:
    """RFC 5321 3.8 (a connection may drop at any time): the peer closing
    (b"") is ConnectionClosed, in command mode or mid-body (the message is
    then not accepted); no data may follow it."""
    session = Session.start()
    session.conn.receive_data(b"NOO")
    assert session.conn.next_event() is NEED_DATA
    session.conn.receive_data(b"")
    assert session.conn.next_event() == ConnectionClosed()
    assert state_of(session.conn) is ServerState.CLOSED
    with pytest.raises(LocalProtocolError, match="end of file"):
        session.conn.receive_data(b"x")
    mid = Session.start()
    transaction(mid)
    mid.ok("DATA")
    mid.conn.receive_data(b"partial body\r\n")
    # The CRLF is held back: it may start the terminator.
    assert mid.event() == BodyChunk(b"partial body")
    mid.conn.receive_data(b"")
    assert mid.event() == ConnectionClosed()


def test_server_default_replies() -> None:
    """RFC 5321 4.2.2/4.3.2: the replies of a server that accepts
    everything, per event (DESIGN: a hook-less server is a working sink)."""
    conn = Session.start().conn
    assert conn.default_reply(Quit()) == replies.BYE
    assert conn.default_reply(Data()) == replies.START_MAIL_INPUT
    assert conn.default_reply(EndOfData()) == replies.MESSAGE_ACCEPTED
    with pytest.raises(LocalProtocolError):
        conn.default_reply(AuthResponse(b""))
    with pytest.raises(LocalProtocolError):
        conn.default_reply(BodyChunk(b""))


# -- LMTP ------------------------------------------------------------------------------


def test_lmtp_hello_commands() -> None:
    """RFC 2033 4.1: LHLO; "HELO and EHLO ... MUST NOT" be accepted (500).
    An SMTP server does not know LHLO."""
    lmtp = Session.start(greeted=False, lmtp=True)
    assert lmtp.conn.greeting().text == "mx.example LMTP ready"
    assert lmtp.refused("EHLO x.example") == replies.COMMAND_UNRECOGNIZED
    assert lmtp.refused("HELO x.example") == replies.COMMAND_UNRECOGNIZED
    lmtp.ok("LHLO x.example")
    # RFC 2033 4.1: PIPELINING and ENHANCEDSTATUSCODES are mandatory.
    lhlo = lmtp.conn.ehlo_reply().to_bytes()
    assert b"PIPELINING" in lhlo
    assert b"ENHANCEDSTATUSCODES" in lhlo
    smtp = Session.start(greeted=False)
    assert smtp.refused("LHLO x.example") == replies.COMMAND_UNRECOGNIZED
    piped = Session.start(lmtp=True, pipelining=False)
    assert b"PIPELINING" in piped.conn.ehlo_reply().to_bytes()


def test_lmtp_one_reply_per_accepted_recipient() -> None:
    """RFC 2033 4.2: after the body, one reply per accepted RCPT, in order;
    refused recipients get none; nothing is read until all are sent."""
    session = Session.start(lmtp=True)
    session.ok("MAIL FROM:<a@b.example>")
    session.ok("RCPT TO:<one@d.example>")
    session.line("RCPT TO:<gone@d.example>", Reply(550, "5.1.1", "no"))
    session.ok("RCPT TO:<two@d.example>")
    session.ok("DATA")
    assert session.body(b"hi\r\n.\r\nNOOP\r\n") == [BodyChunk(b"hi\r\n"), EndOfData()]
    conn = session.conn
    assert conn.replies_due == 2
    assert conn.send(replies.MESSAGE_ACCEPTED) == b"250 2.0.0 Message accepted\r\n"
    with pytest.raises(LocalProtocolError, match="due"):
        conn.next_event()
    assert conn.send(Reply(452, "4.2.2", "over quota")) == b"452 4.2.2 over quota\r\n"
    assert conn.replies_due == 0
    assert state_of(conn) is ServerState.READY
    assert session.event() == Noop()


def test_lmtp_replies_to_one_body_are_one_outcome_for_the_error_count() -> None:
    """RFC 2033 4.2: the replies after an LMTP body answer one message, so
    they count once toward the session's errors (RFC 5321 4.5.3.2): a
    message delivered to any recipient starts the count over, one refused
    by every recipient is one error, not one per recipient."""
    session = Session.start(lmtp=True)
    session.refused("XYZZY")
    assert session.conn.errors == 1
    full = Reply(452, "4.2.2", "over quota")
    # Delivered to the first, refused for the others: the count restarts.
    transaction(session, rcpts=5)
    session.ok("DATA")
    session.body(b"hi\r\n.\r\n")
    session.conn.send(replies.MESSAGE_ACCEPTED)
    for _ in range(4):
        session.conn.send(full)
    assert session.conn.errors == 0
    # Refused for everyone: one error for the message, not five.
    transaction(session, rcpts=5)
    session.ok("DATA")
    session.body(b"hi\r\n.\r\n")
    for _ in range(5):
        session.conn.send(full)
    assert session.conn.errors == 1
    # The last reply alone does not decide: refused, refused, delivered.
    transaction(session, rcpts=3)
    session.ok("DATA")
    session.body(b"hi\r\n.\r\n")
    session.conn.send(full)
    session.conn.send(full)
    session.conn.send(replies.MESSAGE_ACCEPTED)
    assert session.conn.errors == 0
    # A body refused by the protocol (bare LF) is one error too.
    transaction(session, rcpts=3)
    session.ok("DATA")
    assert isinstance(session.body(b"bare\nLF\r\n.\r\n")[-1], MessageRejectedError)
    for _ in range(3):
        session.conn.send(replies.BARE_LINE_ENDING)
    assert session.conn.errors == 1


def test_lmtp_rejected_body_and_bdat_last_get_one_reply_each() -> None:
    """RFC 2033 4.2 and 4.3: a refused body, or BDAT LAST, also gets one
    reply per accepted recipient."""
    session = Session.start(lmtp=True)
    transaction(session, rcpts=3)
    session.ok("DATA")
    events = session.body(b"bare\nLF\r\n.\r\n")
    assert isinstance(events[-1], MessageRejectedError)
    assert session.conn.replies_due == 3
    for _ in range(3):
        assert session.conn.send(replies.BARE_LINE_ENDING).startswith(b"554 5.6.0")
    assert state_of(session.conn) is ServerState.READY
    transaction(session, rcpts=2)
    assert session.event(b"BDAT 2 LAST\r\nok") == Bdat(2, last=True)
    assert session.event() == BodyChunk(b"ok")
    assert session.event() == EndOfData()
    assert session.conn.replies_due == 2


def test_server_settings_validation() -> None:
    """Settings are checked when built: RFC 3030 3 (BINARYMIME needs
    CHUNKING), names, mechanisms (RFC 4954 4 sasl-mech), sizes."""
    with pytest.raises(ValueError, match="chunking"):
        ServerSettings(chunking=False)
    with pytest.raises(ValueError, match="host name"):
        ServerSettings(hostname="bad name")
    with pytest.raises(ValueError, match="SASL"):
        ServerSettings(auth_mechanisms=["PL@IN"])
    # sasl-mech is upper case; the names are read case-insensitively.
    assert ServerSettings(auth_mechanisms=["plain"]).auth_mechanisms == ("PLAIN",)
    # RFC 1870 4: SIZE 0 means "no limit", so a 0-octet limit could not be
    # advertised as enforced; None is "no limit".
    for size in (-1, 0):
        with pytest.raises(ValueError, match="at least 1"):
            ServerSettings(max_message_size=size)
    assert (
        ServerSettings(max_message_size=1).extensions(tls_active=False, authenticated=False).size
        == 1
    )
    with pytest.raises(ValueError, match="EHLO keyword"):
        ServerSettings(extra_extensions=(("BAD KEY", ()),))
    settings = ServerSettings(extra_extensions=(("XCLIENT", ("NAME", "ADDR")),))
    assert "XCLIENT NAME ADDR" in settings.extensions(tls_active=False, authenticated=False).lines()


def test_server_drive_with_default_answers_is_a_working_sink() -> None:
    """DESIGN: a hook-less server is a working sink: a whole session with
    pipelining, two messages and QUIT, through the harness."""
    wire = (
        b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
        b"DATA\r\none\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<e@f.example>\r\n"
        b"BDAT 3 LAST\r\ntwoQUIT\r\n"
    )
    conn, run = drive([wire])
    assert run.bodies() == [b"one\r\n", b"two"]
    assert state_of(conn) is ServerState.CLOSED
    assert run.output.endswith(b"250 2.0.0 Message accepted\r\n221 2.0.0 Bye\r\n")
    assert [type(e) for e in run.events if isinstance(e, Ehlo | ParameterError)] == [Ehlo]
