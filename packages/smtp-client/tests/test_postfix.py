"""Against a real Postfix smtpd on loopback (the testkit's private instance).

Every extension Postfix offers is used for real: PIPELINING, SIZE,
8BITMIME, SMTPUTF8, CHUNKING, DSN, ENHANCEDSTATUSCODES, STARTTLS, and AUTH
(through a private Dovecot's SASL socket).  Mail goes to real mailboxes
(alice's Maildir, bob's mbox) or stays in Postfix's queue (relay.test),
and each test checks there, or in Postfix's log, that it arrived.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from smtp_client import (
    Client,
    Credentials,
    Envelope,
    Recipient,
    SmartHost,
    Status,
    Timeouts,
    TLSPolicy,
)
from smtp_message import Mailbox, MailParams, Notify, OriginalRecipient, RcptParams, Ret

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from smtp_testkit.dovecot import DovecotServer
    from smtp_testkit.postfix import PostfixServer

pytestmark = pytest.mark.anyio

TIMEOUTS = Timeouts(
    connect=10,
    greeting=30,
    command=30,
    mail=30,
    rcpt=30,
    data_init=30,
    data_block=30,
    data_end=30,
)


def message(marker: str, extra: bytes = b"") -> bytes:
    return (
        (
            f"From: sender@client.test\r\nTo: alice@peer.test\r\nSubject: {marker}\r\n"
            f"Message-ID: <{marker}@client.test>\r\n\r\n"
        ).encode()
        + extra
        + b"body\r\n"
    )


def marker() -> str:
    return f"m-{uuid.uuid4().hex}"


def plain(postfix: PostfixServer, **kwargs: object) -> SmartHost:
    return SmartHost(postfix.host, postfix.port, tls=TLSPolicy.none(), **kwargs)  # type: ignore[arg-type]


async def test_postfix_per_recipient_results_and_delivery(
    postfix: PostfixServer,
) -> None:
    """RFC 5321 3.3 with real replies: delivered to alice (Maildir) and bob
    (mbox), 550 5.1.1 for an unknown user, 554 5.7.1 for relaying."""
    tag = marker()
    env = Envelope.build(
        "sender@client.test",
        ["alice@peer.test", "ghost@peer.test", "bob@peer.test", "x@elsewhere.test"],
    )
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(plain(postfix), env, message(tag))
    codes = [(r.status, r.reply.code, r.reply.enhanced) for r in result.recipients]
    assert codes == [
        (Status.DELIVERED, 250, "2.0.0"),
        (Status.PERMANENT, 550, "5.1.1"),
        (Status.DELIVERED, 250, "2.0.0"),
        (Status.PERMANENT, 554, "5.7.1"),
    ]
    assert "User unknown in virtual mailbox table" in result.recipients[1].reply.text
    assert "Relay access denied" in result.recipients[3].reply.text
    assert "queued as" in result.recipients[0].reply.text
    delivered = postfix.wait_for_delivery(tag.encode(), "alice")
    assert b"Return-Path: <sender@client.test>" in delivered
    assert tag.encode() in postfix.wait_for_delivery(tag.encode(), "bob")
    postfix.wait_for_log(r"to=<alice@peer\.test>.*status=sent")


async def test_postfix_starttls_required_and_verified(postfix: PostfixServer) -> None:
    """RFC 3207 with certificate checks (RFC 8314 / RFC 6125): the CA that signed
    Postfix's certificate, and its name."""
    tag = marker()
    destination = SmartHost(
        postfix.host,
        postfix.port,
        tls=TLSPolicy.required(ca_file=str(postfix.ca_file), server_hostname="mx.peer.test"),
    )
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            destination,
            Envelope.build("s@client.test", ["alice@peer.test"]),
            message(tag),
        )
    assert result.tls
    assert result.recipients[0].status is Status.DELIVERED
    postfix.wait_for_delivery(tag.encode())
    postfix.wait_for_log(r"Anonymous TLS connection established from localhost")


async def test_postfix_starttls_with_an_untrusted_certificate_is_transient(
    postfix: PostfixServer,
) -> None:
    """RFC 3207 4.1: verification against the system CAs fails: no delivery."""
    destination = SmartHost(postfix.host, postfix.port)  # required, system CAs
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            destination, Envelope.build("s@client.test", ["alice@peer.test"]), b"x\r\n"
        )
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.7.5"
    assert "certificate" in r.reply.text


async def test_postfix_opportunistic_tls(postfix: PostfixServer) -> None:
    """RFC 7435: opportunistic STARTTLS, unauthenticated, encrypted all the same."""
    destination = SmartHost(postfix.host, postfix.port, tls=TLSPolicy.opportunistic())
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            destination, Envelope.build("s@client.test", ["alice@peer.test"]), b"x\r\n"
        )
    assert result.tls
    assert result.recipients[0].status is Status.DELIVERED


async def test_postfix_chunking_and_pipelining_in_use(postfix: PostfixServer) -> None:
    """RFC 3030 and RFC 2920: Postfix counts one BDAT, and the message arrives."""
    tag = marker()
    async with Client(helo=f"{tag}.client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            plain(postfix),
            Envelope.build("s@client.test", ["alice@peer.test"]),
            message(tag),
        )
    assert result.extensions is not None
    assert result.extensions.chunking
    assert result.recipients[0].status is Status.DELIVERED
    postfix.wait_for_delivery(tag.encode())
    postfix.wait_for_log(r"disconnect from localhost.*ehlo=1 mail=1 rcpt=1 bdat=1 quit=1")


async def test_postfix_data_when_chunking_is_off(postfix: PostfixServer) -> None:
    """RFC 5321 4.1.1.4: DATA with dot-stuffing; a leading dot survives."""
    tag = marker()
    body = message(tag, b".leading dot\r\n..two dots\r\n")
    async with Client(helo="client.test", timeouts=TIMEOUTS, use_chunking=False) as client:
        result = await client.send(
            plain(postfix), Envelope.build("s@client.test", ["alice@peer.test"]), body
        )
    assert result.recipients[0].status is Status.DELIVERED
    delivered = postfix.wait_for_delivery(tag.encode())
    assert b"\n.leading dot\n..two dots\n" in delivered


async def test_postfix_size_limit_fails_fast(
    postfix_factory: Callable[..., PostfixServer],
) -> None:
    """RFC 1870 6: Postfix says "SIZE 2000"; a bigger message is refused by
    the client (552 5.3.4, permanent) and no MAIL reaches Postfix."""
    small = postfix_factory(main_cf={"message_size_limit": "2000"})
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            plain(small),
            Envelope.build("s@client.test", ["alice@peer.test"]),
            b"x" * 3000 + b"\r\n",
        )
    (r,) = result.recipients
    assert (r.status, r.reply.code, r.reply.enhanced) == (
        Status.PERMANENT,
        552,
        "5.3.4",
    )
    assert not r.remote
    small.wait_for_log(r"disconnect from localhost")
    assert "from=<" not in small.log()
    assert "mail=" not in small.log()


async def test_postfix_8bit_message(postfix: PostfixServer) -> None:
    """RFC 6152: BODY=8BITMIME; the 8-bit octets arrive unchanged."""
    tag = marker()
    body = message(tag, "Grüße, naïve café\r\n".encode())
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            plain(postfix), Envelope.build("s@client.test", ["alice@peer.test"]), body
        )
    assert result.recipients[0].status is Status.DELIVERED
    assert "Grüße, naïve café".encode() in postfix.wait_for_delivery(tag.encode())


async def test_postfix_smtputf8_sender(postfix: PostfixServer) -> None:
    """RFC 6531 3.4: a UTF-8 reverse-path with SMTPUTF8, accepted by Postfix."""
    tag = marker()
    env = Envelope.build("pelé@client.test", ["alice@peer.test"])
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(plain(postfix), env, message(tag))
    assert result.recipients[0].status is Status.DELIVERED
    delivered = postfix.wait_for_delivery(tag.encode())
    assert "Return-Path: <pelé@client.test>".encode() in delivered


async def test_postfix_dsn_parameters_reach_the_queue(postfix: PostfixServer) -> None:
    """RFC 3461 4: ENVID, RET, NOTIFY and ORCPT, as Postfix records them in its
    queue file (a relay.test recipient stays queued)."""
    tag = marker()
    env = Envelope(
        Mailbox("s", "client.test"),
        [
            Recipient(
                Mailbox("dsn", "relay.test"),
                RcptParams(
                    notify=frozenset({Notify.SUCCESS, Notify.DELAY}),
                    orcpt=OriginalRecipient("rfc822", "orig@relay.test"),
                ),
            )
        ],
        MailParams(ret=Ret.HDRS, envid=tag),
    )
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(plain(postfix), env, message(tag))
    assert result.recipients[0].status is Status.DELIVERED
    queue_id = result.recipients[0].reply.text.rsplit(" ", 1)[-1]
    entry = next(q for q in postfix.queue() if q["queue_id"] == queue_id)
    assert entry["recipients"][0]["address"] == "dsn@relay.test"  # type: ignore[index]
    queued = postfix.queued_message(queue_id)
    assert f"named_attribute: envelope_id={tag}" in queued
    assert "named_attribute: ret_flags=2" in queued  # RET=HDRS
    assert "named_attribute: dsn_orig_rcpt=rfc822;orig@relay.test" in queued
    assert "named_attribute: notify_flags=10" in queued  # SUCCESS (2) | DELAY (8)


async def test_postfix_connection_reuse(postfix: PostfixServer) -> None:
    """RFC 5321 3.3: three messages, one session (Postfix counts mail=3)."""
    tags = [marker() for _ in range(3)]
    helo = f"{tags[0]}.client.test"
    async with Client(helo=helo, timeouts=TIMEOUTS) as client:
        for tag in tags:
            result = await client.send(
                plain(postfix),
                Envelope.build("s@client.test", ["alice@peer.test"]),
                message(tag),
            )
            assert result.recipients[0].status is Status.DELIVERED
    for tag in tags:
        postfix.wait_for_delivery(tag.encode())
    postfix.wait_for_log(r"ehlo=1 mail=3 rcpt=3 bdat=3 quit=1")


async def test_postfix_streamed_body(postfix: PostfixServer) -> None:
    """RFC 3030: a body streamed in pieces (bare LFs included) arrives whole."""
    tag = marker()

    async def pieces() -> AsyncIterator[bytes]:
        yield message(tag)
        for i in range(2000):
            yield f"line {i}\n".encode()

    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            plain(postfix),
            Envelope.build("s@client.test", ["alice@peer.test"]),
            pieces(),
        )
    assert result.recipients[0].status is Status.DELIVERED
    delivered = postfix.wait_for_delivery(tag.encode())
    assert b"line 0\n" in delivered
    assert b"line 1999\n" in delivered


@pytest.fixture(scope="module")
def submission(
    dovecot: DovecotServer,
) -> Iterator[PostfixServer]:
    """Postfix with submission (STARTTLS + AUTH) and smtps, SASL by Dovecot."""
    from smtp_testkit.postfix import start_postfix

    server = start_postfix(sasl_path=dovecot.auth_socket)
    try:
        yield server
    finally:
        server.stop()


async def test_postfix_submission_auth_plain(submission: PostfixServer) -> None:
    """RFC 4954 with RFC 4616 PLAIN over STARTTLS (RFC 6409 submission)."""
    tag = marker()
    assert submission.submission_port is not None
    destination = SmartHost(
        submission.host,
        submission.submission_port,
        tls=TLSPolicy.required(ca_file=str(submission.ca_file), server_hostname="mx.peer.test"),
        credentials=Credentials("alice", "secret", mechanisms=("PLAIN",)),
    )
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            destination,
            Envelope.build("alice@peer.test", ["bob@peer.test"]),
            message(tag),
        )
    assert result.tls
    assert result.recipients[0].status is Status.DELIVERED
    assert tag.encode() in submission.wait_for_delivery(tag.encode(), "bob")
    submission.wait_for_log(r"sasl_method=PLAIN, sasl_username=alice")


async def test_postfix_smtps_auth_login(submission: PostfixServer) -> None:
    """RFC 8314 3.3 implicit TLS, with AUTH LOGIN."""
    tag = marker()
    assert submission.smtps_port is not None
    destination = SmartHost(
        submission.host,
        submission.smtps_port,
        tls=TLSPolicy.implicit(ca_file=str(submission.ca_file), server_hostname="mx.peer.test"),
        credentials=Credentials("alice", "secret", mechanisms=("LOGIN",)),
    )
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            destination,
            Envelope.build("alice@peer.test", ["bob@peer.test"]),
            message(tag),
        )
    assert result.tls
    assert result.recipients[0].status is Status.DELIVERED
    submission.wait_for_log(r"sasl_method=LOGIN, sasl_username=alice")


async def test_postfix_auth_wrong_password_waits_with_postfixs_reply(
    submission: PostfixServer,
) -> None:
    """RFC 4954 6: 535 5.7.8 authentication failed; the message is not sent,
    and waits (Credentials.soft_bounce, the default, as Postfix's own
    smtp_sasl_auth_soft_bounce)."""
    assert submission.submission_port is not None
    destination = SmartHost(
        submission.host,
        submission.submission_port,
        tls=TLSPolicy.required(ca_file=str(submission.ca_file), server_hostname="mx.peer.test"),
        credentials=Credentials("alice", "wrong"),
    )
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            destination, Envelope.build("alice@peer.test", ["bob@peer.test"]), b"x\r\n"
        )
    (r,) = result.recipients
    assert (r.status, r.reply.code, r.reply.enhanced) == (
        Status.TRANSIENT,
        535,
        "5.7.8",
    )
    assert r.remote


async def test_postfix_submission_without_auth_is_refused(
    submission: PostfixServer,
) -> None:
    """RFC 6409 4.3 / Postfix permit_sasl_authenticated: relaying needs AUTH."""
    assert submission.submission_port is not None
    destination = SmartHost(
        submission.host,
        submission.submission_port,
        tls=TLSPolicy.required(ca_file=str(submission.ca_file), server_hostname="mx.peer.test"),
    )
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            destination, Envelope.build("a@client.test", ["x@elsewhere.test"]), b"x\r\n"
        )
    (r,) = result.recipients
    assert r.status is Status.PERMANENT
    assert r.reply.code == 554
