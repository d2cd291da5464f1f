"""The example dialogues of the RFCs, replayed through both state machines.

Each dialogue runs through a ``ClientConnection`` and a ``ServerConnection``
wired to each other (``msg_dialogue.replay``): every octet the client sends
must be the RFC's client line, every octet the server sends the RFC's
server line (plus the generic RFC 3463 code the server adds to replies the
RFC wrote before enhanced codes existed), and each side reads exactly what
the other wrote.  The transcripts are the RFCs' text, unedited.
"""

from __future__ import annotations

from msg_dialogue import replay

from smtp_message import (
    BodyType,
    ClientState,
    DataResponse,
    Mailbox,
    RcptTo,
    ServerSettings,
    ServerState,
)

# A server configured as the RFC's server presents itself (its EHLO reply
# text is the RFC's; these settings decide what it enforces).
SMTP = ServerSettings(hostname="foo.com", pipelining=False, chunking=False, binarymime=False)

RFC5321_D1 = """
      S: 220 foo.com Simple Mail Transfer Service Ready
      C: EHLO bar.com
      S: 250-foo.com greets bar.com
      S: 250-8BITMIME
      S: 250-SIZE
      S: 250-DSN
      S: 250 HELP
      C: MAIL FROM:<Smith@bar.com>
      S: 250 OK
      C: RCPT TO:<Jones@foo.com>
      S: 250 OK
      C: RCPT TO:<Green@foo.com>
      S: 550 No such user here
      C: RCPT TO:<Brown@foo.com>
      S: 250 OK
      C: DATA
      S: 354 Start mail input; end with <CRLF>.<CRLF>
      C: Blah blah blah...
      C: ...etc. etc. etc.
      C: .
      S: 250 OK
      C: QUIT
      S: 221 foo.com Service closing transmission channel
"""


def test_dialogue_rfc5321_d1_typical_transaction() -> None:
    """RFC 5321 D.1: one rejected recipient, a dot-stuffed line, QUIT."""
    result = replay(RFC5321_D1, SMTP)
    # RFC 5321 4.5.2: the leading dot of "...etc" is transparency.
    assert result.bodies == [b"Blah blah blah...\r\n..etc. etc. etc.\r\n"]
    assert result.server.state is ServerState.CLOSED
    assert result.client.state is ClientState.CLOSED
    assert result.client.extensions.eightbitmime
    assert result.client.extensions.dsn
    assert not result.client.extensions.pipelining


RFC5321_D2 = """
      S: 220 foo.com Simple Mail Transfer Service Ready
      C: EHLO bar.com
      S: 250-foo.com greets bar.com
      S: 250-8BITMIME
      S: 250-SIZE
      S: 250-DSN
      S: 250 HELP
      C: MAIL FROM:<Smith@bar.com>
      S: 250 OK
      C: RCPT TO:<Jones@foo.com>
      S: 250 OK
      C: RCPT TO:<Green@foo.com>
      S: 550 No such user here
      C: RSET
      S: 250 OK
      C: QUIT
      S: 221 foo.com Service closing transmission channel
"""


def test_dialogue_rfc5321_d2_aborted_transaction() -> None:
    """RFC 5321 D.2: RSET aborts the transaction on both sides (4.1.1.5)."""
    result = replay(RFC5321_D2, SMTP)
    assert result.bodies == []
    # The RSET reply is the last one before QUIT: both sides had dropped
    # the envelope by then.
    rset = result.client_events[-2]
    assert rset.reply.code == 250
    assert result.client.mail_from is None
    assert result.server.transaction is None


RFC5321_D3_STEP1 = """
      S: 220 foo.com Simple Mail Transfer Service Ready
      C: EHLO bar.com
      S: 250-foo.com greets bar.com
      S: 250-8BITMIME
      S: 250-SIZE
      S: 250-DSN
      S: 250 HELP
      C: MAIL FROM:<JQP@bar.com>
      S: 250 OK
      C: RCPT TO:<Jones@XYZ.COM>
      S: 250 OK
      C: DATA
      S: 354 Start mail input; end with <CRLF>.<CRLF>
      C: Date: Thu, 21 May 1998 05:33:29 -0700
      C: From: John Q. Public <JQP@bar.com>
      C: Subject: The Next Meeting of the Board
      C: To: Jones@xyz.com
      C:
      C: Bill:
      C: The next meeting of the board of directors will be
      C: on Tuesday.
      C: John.
      C: .
      S: 250 OK
      C: QUIT
      S: 221 foo.com Service closing transmission channel
"""

RFC5321_D3_STEP2 = """
           S: 220 xyz.com Simple Mail Transfer Service Ready
           C: EHLO foo.com
           S: 250 xyz.com is on the air
           C: MAIL FROM:<JQP@bar.com>
           S: 250 OK
           C: RCPT TO:<Jones@XYZ.COM>
           S: 250 OK
           C: DATA
           S: 354 Start mail input; end with <CRLF>.<CRLF>
           C: Received: from bar.com by foo.com ; Thu, 21 May 1998
           C:     05:33:29 -0700
           C: Date: Thu, 21 May 1998 05:33:22 -0700
           C: From: John Q. Public <JQP@bar.com>
           C: Subject:  The Next Meeting of the Board
           C: To: Jones@xyz.com
           C:
           C: Bill:
           C: The next meeting of the board of directors will be
           C: on Tuesday.
           C:                         John.
           C: .
           S: 250 OK
           C: QUIT
           S: 221 foo.com Service closing transmission channel
"""


def test_dialogue_rfc5321_d3_relayed_mail() -> None:
    """RFC 5321 D.3: source to relay, then relay to destination.

    The relay's EHLO reply in step 2 is a single line: the client must then
    see no extensions at all.  Body lines keep their exact spacing (a folded
    header line, a double space, a line of leading blanks).
    """
    step1 = replay(RFC5321_D3_STEP1, SMTP)
    assert step1.bodies[0].startswith(b"Date: Thu, 21 May 1998 05:33:29 -0700\r\n")
    assert b"\r\n\r\nBill:\r\n" in step1.bodies[0]
    step2 = replay(RFC5321_D3_STEP2, ServerSettings(hostname="xyz.com"))
    assert step2.client.extensions.entries == ()
    assert step2.bodies == [
        b"Received: from bar.com by foo.com ; Thu, 21 May 1998\r\n"
        b"    05:33:29 -0700\r\n"
        b"Date: Thu, 21 May 1998 05:33:22 -0700\r\n"
        b"From: John Q. Public <JQP@bar.com>\r\n"
        b"Subject:  The Next Meeting of the Board\r\n"
        b"To: Jones@xyz.com\r\n"
        b"\r\n"
        b"Bill:\r\n"
        b"The next meeting of the board of directors will be\r\n"
        b"on Tuesday.\r\n"
        b"                        John.\r\n"
    ]


RFC5321_D4 = """
      S: 220 foo.com Simple Mail Transfer Service Ready
      C: EHLO bar.com
      S: 250-foo.com greets bar.com
      S: 250-8BITMIME
      S: 250-SIZE
      S: 250-DSN
      S: 250-VRFY
      S: 250 HELP
      C: VRFY Crispin
      S: 250 Mark Crispin <Admin.MRC@foo.com>
      C: MAIL FROM:<EAK@bar.com>
      S: 250 OK
      C: RCPT TO:<Admin.MRC@foo.com>
      S: 250 OK
      C: DATA
      S: 354 Start mail input; end with <CRLF>.<CRLF>
      C: Blah blah blah...
      C: ...etc. etc. etc.
      C: .
      S: 250 OK
      C: QUIT
      S: 221 foo.com Service closing transmission channel
"""


def test_dialogue_rfc5321_d4_verify_then_send() -> None:
    """RFC 5321 D.4: VRFY (4.1.1.6) changes no state; the mail goes after."""
    result = replay(RFC5321_D4, SMTP)
    vrfy = result.client_events[2]
    assert vrfy.reply.code == 250
    assert vrfy.reply.lines == ("2.0.0 Mark Crispin <Admin.MRC@foo.com>",)
    assert len(result.bodies) == 1


RFC2920_NO_PIPELINING = """
   S: <wait for open connection>
   C: <open connection to server>
   S: 220 Innosoft.com SMTP service ready
   C: HELO dbc.mtview.ca.us
   S: 250 Innosoft.com
   C: MAIL FROM:<mrose@dbc.mtview.ca.us>
   S: 250 sender <mrose@dbc.mtview.ca.us> OK
   C: RCPT TO:<ned@innosoft.com>
   S: 250 recipient <ned@innosoft.com> OK
   C: RCPT TO:<dan@innosoft.com>
   S: 250 recipient <dan@innosoft.com> OK
   C: RCPT TO:<kvc@innosoft.com>
   S: 250 recipient <kvc@innosoft.com> OK
   C: DATA
   S: 354 enter mail, end with line containing only "."
    ...
   C: .
   S: 250 message sent
   C: QUIT
   S: 221 goodbye
"""

RFC2920_PIPELINING = """
   S: <wait for open connection>
   C: <open connection to server>
   S: 220 innosoft.com SMTP service ready
   C: EHLO dbc.mtview.ca.us
   S: 250-innosoft.com
   S: 250 PIPELINING
   C: MAIL FROM:<mrose@dbc.mtview.ca.us>
   C: RCPT TO:<ned@innosoft.com>
   C: RCPT TO:<dan@innosoft.com>
   C: RCPT TO:<kvc@innosoft.com>
   C: DATA
   S: 250 sender <mrose@dbc.mtview.ca.us> OK
   S: 250 recipient <ned@innosoft.com> OK
   S: 250 recipient <dan@innosoft.com> OK
   S: 250 recipient <kvc@innosoft.com> OK
   S: 354 enter mail, end with line containing only "."
    ...
   C: .
   C: QUIT
   S: 250 message sent
   S: 221 goodbye
"""

RFC2920_ALL_REJECTED = """
   S: <wait for open connection>
   C: <open connection to server>
   S: 220 innosoft.com SMTP service ready
   C: EHLO dbc.mtview.ca.us
   S: 250-innosoft.com
   S: 250 PIPELINING
   C: MAIL FROM:<mrose@dbc.mtview.ca.us>
   C: RCPT TO:<nsb@thumper.bellcore.com>
   C: RCPT TO:<galvin@tis.com>
   C: DATA
   S: 250 sender <mrose@dbc.mtview.ca.us> OK
   S: 550 remote mail to <nsb@thumper.bellore.com> not allowed
   S: 550 remote mail to <galvin@tis.com> not allowed
   S: 554 no valid recipients given
   C: QUIT
   S: 221 goodbye
"""
# The RFC elides the message ("..."); these wire lines stand for it, one of
# them dot-stuffed.
ELIDED = ("Subject: pipelining", "", "..a line starting with a dot")
ELIDED_BODY = b"Subject: pipelining\r\n\r\n.a line starting with a dot\r\n"


def test_dialogue_rfc2920_without_pipelining() -> None:
    """RFC 2920 4, first example: HELO, one command per turn (9 waits)."""
    settings = ServerSettings(hostname="innosoft.com")
    result = replay(RFC2920_NO_PIPELINING, settings, elided=ELIDED)
    assert result.bodies == [ELIDED_BODY]
    assert result.client.extensions.entries == ()


def test_dialogue_rfc2920_pipelining() -> None:
    """RFC 2920 4, second example: MAIL, three RCPT and DATA in one group.

    The body and QUIT form the last group ("the actual transfer of message
    content is explicitly allowed to be the first command in a group",
    RFC 2920 3.1): the client sends QUIT before the reply to the body.
    """
    settings = ServerSettings(hostname="innosoft.com", pipelining=True)
    result = replay(RFC2920_PIPELINING, settings, elided=ELIDED)
    assert result.bodies == [ELIDED_BODY]
    kinds = [type(e).__name__ for e in result.client_events]
    assert kinds == [
        "Greeting",
        "Response",
        *["Response"] * 5,
        "DataResponse",
        "Response",
    ]


def test_dialogue_rfc2920_all_recipients_rejected() -> None:
    """RFC 2920 4, third example: every RCPT refused, so DATA gets 554.

    The server's own protocol check refuses the DATA (RFC 5321 3.3: "no
    valid recipients"), with the code the RFC shows; no body is sent.
    """
    settings = ServerSettings(hostname="innosoft.com", pipelining=True)
    result = replay(RFC2920_ALL_REJECTED, settings)
    assert result.bodies == []
    assert [e.reply.code for e in result.client_events[2:6]] == [250, 550, 550, 554]
    assert result.client.accepted == []


RFC3030_SIMPLE_CHUNKING = """
   R: <wait for connection on TCP port 25>
   S: <open connection to server>
   R: 220 cnri.reston.va.us SMTP service ready
   S: EHLO ymir.claremont.edu
   R: 250-cnri.reston.va.us says hello
   R: 250 CHUNKING
   S: MAIL FROM:<Sam@Random.com>
   R: 250 <Sam@Random.com> Sender ok
   S: RCPT TO:<Susan@Random.com>
   R: 250 <Susan@random.com> Recipient ok
   S: BDAT 86 LAST
   S: To: Susan@random.com<CR><LF>
   S: From: Sam@random.com<CR><LF>
   S: Subject: This is a bodyless test message<CR><LF>
   R: 250 Message OK, 86 octets received
   S: QUIT
   R: 221 Goodbye
"""

RFC3030_PIPELINING_BINARYMIME = """
   R: <wait for connection on TCP port
   S: <open connection to server>
   R: 220 cnri.reston.va.us SMTP service ready
   S: EHLO ymir.claremont.edu
   R: 250-cnri.reston.va.us says hello
   R: 250-PIPELINING
   R: 250-BINARYMIME
   R: 250 CHUNKING
   S: MAIL FROM:<ned@ymir.claremont.edu> BODY=BINARYMIME
   S: RCPT TO:<gvaudre@cnri.reston.va.us>
   S: RCPT TO:<jstewart@cnri.reston.va.us>
   R: 250 <ned@ymir.claremont.edu>... Sender and BINARYMIME ok
   R: 250 <gvaudre@cnri.reston.va.us>... Recipient ok
   R: 250 <jstewart@cnri.reston.va.us>... Recipient ok
   S: BDAT 100000
   S: (First 10000 octets of canonical MIME message data)
   S: BDAT 324
   S: (Remaining 324 octets of canonical MIME message data)
   S: BDAT 0 LAST
   R: 250 100000 octets received
   R: 250 324 octets received
   R: 250 Message OK, 100324 octets received
   S: QUIT
   R: 221 Goodbye
"""


def test_dialogue_rfc3030_simple_chunking() -> None:
    """RFC 3030 4.1: one BDAT LAST chunk of exactly 86 octets."""
    result = replay(
        RFC3030_SIMPLE_CHUNKING,
        ServerSettings(hostname="cnri.reston.va.us"),
        client_role="S",
        server_role="R",
    )
    assert result.bodies == [
        b"To: Susan@random.com\r\nFrom: Sam@random.com\r\n"
        b"Subject: This is a bodyless test message\r\n"
    ]
    assert len(result.bodies[0]) == 86
    assert isinstance(result.client_events[-2], DataResponse)


def test_dialogue_rfc3030_pipelined_binarymime() -> None:
    """RFC 3030 4.2: BODY=BINARYMIME, three pipelined chunks, the last empty.

    The chunks are random binary octets (the RFC shows a placeholder, and
    its "First 10000 octets" for a 100000-octet BDAT is a typo); they must
    arrive intact, in order, whatever octets they hold (RFC 3030 2).
    """
    result = replay(
        RFC3030_PIPELINING_BINARYMIME,
        ServerSettings(hostname="cnri.reston.va.us"),
        client_role="S",
        server_role="R",
    )
    assert len(result.bodies) == 1
    assert len(result.bodies[0]) == 100324
    assert result.server.state is ServerState.CLOSED
    mail = result.client_events[2]
    assert mail.command.params.body is BodyType.BINARY_MIME
    assert [e.reply.lines[-1] for e in result.client_events[5:8]] == [
        "2.0.0 100000 octets received",
        "2.0.0 324 octets received",
        "2.0.0 Message OK, 100324 octets received",
    ]


RFC2033_LMTP = """
   S: 220 foo.edu LMTP server ready
   C: LHLO foo.edu
   S: 250-foo.edu
   S: 250-PIPELINING
   S: 250 SIZE
   C: MAIL FROM:<chris@bar.com>
   S: 250 OK
   C: RCPT TO:<pat@foo.edu>
   S: 250 OK
   C: RCPT TO:<jones@foo.edu>
   S: 550 No such user here
   C: RCPT TO:<green@foo.edu>
   S: 250 OK
   C: DATA
   S: 354 Start mail input; end with <CRLF>.<CRLF>
   C: Blah blah blah...
   C: ...etc. etc. etc.
   C: .
   S: 250 OK
   S: 452 <green@foo.edu> is temporarily over quota
   C: QUIT
   S: 221 foo.edu closing connection
"""


def test_dialogue_rfc2033_lmtp_one_reply_per_recipient() -> None:
    """RFC 2033 4.2: after the body, one reply per accepted recipient, in order.

    Jones was refused at RCPT, so the body gets two replies: 250 for pat,
    452 for green, and the client pairs each with its recipient.
    """
    settings = ServerSettings(hostname="foo.edu", lmtp=True, max_message_size=None)
    result = replay(RFC2033_LMTP, settings)
    assert result.bodies == [b"Blah blah blah...\r\n..etc. etc. etc.\r\n"]
    per_rcpt = [e for e in result.client_events if isinstance(e, DataResponse)]
    assert [(e.recipient, e.reply.code) for e in per_rcpt] == [
        (RcptTo(Mailbox("pat", "foo.edu")), 250),
        (RcptTo(Mailbox("green", "foo.edu")), 452),
    ]
    assert result.client.state is ClientState.CLOSED
