"""TLS policies, STARTTLS and AUTH, against the scripted server (a test double).

Real TLS on a real loopback socket: the server side is anyio's TLSStream
with a certificate from a throw-away trustme CA.
"""

from __future__ import annotations

import ssl

import anyio
import pytest
import trustme

from smtp_client import (
    Client,
    Connection,
    Credentials,
    Envelope,
    SmartHost,
    Status,
    Timeouts,
    TLSError,
    TLSMode,
    TLSPolicy,
)

from .conftest import Dialogue, Peer, scripted_server

pytestmark = pytest.mark.anyio

BODY = b"Subject: tls\r\n\r\nsecret\r\n"
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
TLS_EXTENSIONS = ["PIPELINING", "STARTTLS", "ENHANCEDSTATUSCODES", "AUTH PLAIN LOGIN"]


def envelope() -> Envelope:
    return Envelope.build("sender@client.test", ["a@x.test"])


async def test_starttls_required_and_verified(server_context: ssl.SSLContext, ca_file: str) -> None:
    """RFC 3207 4 and 4.2: STARTTLS, handshake, then EHLO again from scratch."""
    dialogue = Dialogue(extensions=TLS_EXTENSIONS, tls=server_context)
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.required(ca_file=ca_file))
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    assert result.tls
    assert result.recipients[0].status is Status.DELIVERED
    lines = server.peers[0].lines
    assert lines[:3] == [b"EHLO client.test", b"STARTTLS", b"EHLO client.test"]
    assert dialogue.bodies == [BODY]


async def test_starttls_bytes_after_220_are_discarded(
    server_context: ssl.SSLContext, ca_file: str
) -> None:
    """GHSA-vxj7-4xrp-5vr4 / RFC 3207 4.2: bytes between the 220 and the
    handshake are never read as replies after it.

    The server slips in a forged EHLO reply (no STARTTLS, a bogus AUTH) and a
    forged 250 for the MAIL to come; the client must see the real EHLO
    reply, sent over TLS.
    """
    injected = b"250-mx.test\r\n250 AUTH PLAIN\r\n250 2.1.0 forged\r\n"
    dialogue = Dialogue(extensions=TLS_EXTENSIONS, tls=server_context, after_starttls=injected)
    async with scripted_server(dialogue) as server:
        conn = await Connection.open(
            "127.0.0.1",
            server.port,
            helo="client.test",
            tls=TLSPolicy.required(ca_file=ca_file),
            timeouts=FAST,
        )
        try:
            assert conn.tls_active
            # Sent in the 220's own write, so all of it arrived with the 220.
            assert conn.discarded_after_starttls == injected
            assert conn.extensions.starttls  # the genuine, post-TLS EHLO reply
            results = await conn.send_message(envelope(), BODY)
        finally:
            await conn.aclose()
    assert results[0].status is Status.DELIVERED
    assert results[0].reply.text == "Message accepted"


async def test_starttls_bytes_arriving_after_the_220_break_the_handshake(
    server_context: ssl.SSLContext, ca_file: str
) -> None:
    """GHSA-vxj7-4xrp-5vr4: injected bytes that arrive after the client read
    the 220 are taken by the TLS layer as records: the handshake fails, and
    nothing is sent (transient TLS failure), rather than being read as replies.
    """

    async def handler(peer: Peer) -> None:
        await peer.send(b"220 mx.test\r\n")
        await peer.line()
        await peer.send(b"250-mx.test\r\n250 STARTTLS\r\n")
        await peer.line()
        await peer.send(b"220 go ahead\r\n")
        await anyio.sleep(0.2)  # the client has read the 220 by now
        await peer.send(b"250-mx.test\r\n250 AUTH PLAIN\r\n")
        await peer.line()

    async with scripted_server(handler) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.required(ca_file=ca_file))
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.7.5"
    assert b"MAIL" not in server.peers[0].received


async def test_starttls_required_but_not_offered_is_transient() -> None:
    """RFC 3207 4.1: a client requiring TLS does not send in clear: 4.7.4."""
    dialogue = Dialogue(extensions=["PIPELINING"])
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port)  # TLS required by default
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.7.4"
    assert b"MAIL" not in server.peers[0].received


async def test_starttls_refused_under_required_policy_is_transient(
    ca_file: str,
) -> None:
    """RFC 3207 4: 454 to STARTTLS; a TLS failure is transient even with 5xx."""
    dialogue = Dialogue(
        extensions=TLS_EXTENSIONS, replies={"STARTTLS": b"501 5.5.4 no TLS for you\r\n"}
    )
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.required(ca_file=ca_file))
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.code == 501
    assert r.remote


async def test_opportunistic_without_starttls_sends_in_clear() -> None:
    """RFC 7435 / RFC 3207: opportunistic TLS falls back to clear text."""
    dialogue = Dialogue(extensions=["PIPELINING"])
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.opportunistic())
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    assert not result.tls
    assert result.recipients[0].status is Status.DELIVERED


async def test_opportunistic_starttls_454_continues_in_clear() -> None:
    """RFC 3207 4: "454 TLS not available": the opportunistic client goes on."""
    dialogue = Dialogue(extensions=TLS_EXTENSIONS, replies={"STARTTLS": b"454 4.7.0 not now\r\n"})
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.opportunistic())
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    assert not result.tls
    assert result.recipients[0].status is Status.DELIVERED


@pytest.mark.parametrize("mode", ["required", "opportunistic"])
async def test_starttls_answered_250_is_a_tls_failure_not_a_stuck_session(mode: str) -> None:
    """RFC 3207 4: STARTTLS is answered 220, 454 or 501.  A 250 leaves it
    unknown whether the server waits for a handshake: that session is given
    up as a TLS failure (transient, 4.7.5, when TLS is required), and the
    opportunistic policy sends in clear on a new connection, as after a
    failed handshake.  Nothing is sent after the 250 on the first session."""
    after_250: list[bytes | None] = []
    sessions = 0

    async def handler(peer: Peer) -> None:
        nonlocal sessions
        sessions += 1
        await peer.send(b"220 mx.test\r\n")
        await peer.line()
        if sessions == 1:
            await peer.send(b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            assert await peer.line() == b"STARTTLS"
            await peer.send(b"250 2.0.0 sure\r\n")
            with anyio.move_on_after(2):
                after_250.append(await peer.line())
            return
        await peer.send(b"250-mx.test\r\n250 PIPELINING\r\n")
        assert (await peer.line() or b"").startswith(b"MAIL")
        await peer.line()
        await peer.line()
        await peer.send(b"250 OK\r\n250 OK\r\n354 go\r\n")
        await peer.data_body()
        await peer.send(b"250 2.0.0 accepted in clear\r\n")
        await peer.line()

    policy = TLSPolicy.required() if mode == "required" else TLSPolicy.opportunistic()
    async with scripted_server(handler) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=policy)
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    (r,) = result.recipients
    assert after_250 in ([], [None])  # the client hung up; it sent no MAIL
    if mode == "required":
        assert (r.status, r.reply.enhanced, sessions) == (Status.TRANSIENT, "4.7.5", 1)
        assert "unexpected reply to STARTTLS" in r.reply.text
    else:
        assert (r.status, sessions, result.tls) == (Status.DELIVERED, 2, False)


async def test_opportunistic_handshake_failure_retries_in_clear() -> None:
    """RFC 3207 4.1 with the policy's fallback: a new connection, without TLS."""
    sessions: list[str] = []

    async def handler(peer: Peer) -> None:
        await peer.send(b"220 mx.test\r\n")
        await peer.line()
        await peer.send(b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        line = await peer.line()
        if line == b"STARTTLS":
            sessions.append("tls")
            await peer.send(b"220 go ahead\r\n")
            await peer.exactly(5)  # the start of the ClientHello
            await peer.send(b"this is not a TLS record\r\n")
            await peer.close()
            return
        sessions.append("clear")
        # The clear session: MAIL RCPT DATA pipelined, already read one.
        assert line is not None
        assert line.startswith(b"MAIL")
        await peer.line()
        await peer.line()
        await peer.send(b"250 OK\r\n250 OK\r\n354 go\r\n")
        await peer.data_body()
        await peer.send(b"250 2.0.0 accepted in clear\r\n")
        await peer.line()

    async with scripted_server(handler) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.opportunistic())
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    assert sessions == ["tls", "clear"]
    assert result.recipients[0].status is Status.DELIVERED
    assert not result.tls


async def test_opportunistic_verified_certificate_failing_keeps_tls_unverified(
    server_context: ssl.SSLContext,
) -> None:
    """RFC 7435 3: under the opportunistic policy, encryption without
    authentication beats clear text.  With verify=True and a certificate
    the client cannot verify (a private CA here, as on most MX hosts), the
    retry keeps TLS without the check, rather than sending in clear."""
    dialogue = Dialogue(extensions=TLS_EXTENSIONS, tls=server_context)
    async with scripted_server(dialogue) as server:
        destination = SmartHost("127.0.0.1", server.port, tls=TLSPolicy.opportunistic(verify=True))
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    assert result.recipients[0].status is Status.DELIVERED
    assert result.tls
    assert len(server.peers) == 2  # the verified attempt, then the unverified one
    assert all(b"STARTTLS" in p.lines for p in server.peers)


async def test_opportunistic_handshake_failure_without_fallback_is_transient() -> None:
    """RFC 3207 4.1: the policy may forbid the clear-text retry: TLS failure, 4.7.5."""

    async def handler(peer: Peer) -> None:
        await peer.send(b"220 mx.test\r\n")
        await peer.line()
        await peer.send(b"250-mx.test\r\n250 STARTTLS\r\n")
        await peer.line()
        await peer.send(b"220 go ahead\r\n")
        await peer.exactly(5)  # the start of the ClientHello
        await peer.send(b"\x00" * 100)
        await peer.close()

    policy = TLSPolicy.opportunistic(fallback_to_plaintext=False)
    async with (
        scripted_server(handler) as server,
        Client(helo="client.test", timeouts=FAST) as client,
    ):
        result = await client.send(
            SmartHost("127.0.0.1", server.port, tls=policy), envelope(), BODY
        )
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert r.reply.enhanced == "4.7.5"
    assert len(server.peers) == 1


async def test_required_tls_rejects_a_certificate_from_another_ca(
    server_context: ssl.SSLContext, tmp_path: object
) -> None:
    """RFC 3207 4.1 / RFC 8314: verification against the wrong CA fails, transiently."""
    other = trustme.CA()
    pem = f"{tmp_path}/other.pem"
    other.cert_pem.write_to_path(pem)
    dialogue = Dialogue(extensions=TLS_EXTENSIONS, tls=server_context)
    async with scripted_server(dialogue) as server:
        with pytest.raises(TLSError) as info:
            await Connection.open(
                "127.0.0.1",
                server.port,
                helo="client.test",
                tls=TLSPolicy.required(ca_file=pem),
                timeouts=FAST,
            )
    assert "certificate verify failed" in str(info.value) or "certificate" in str(info.value)
    assert not info.value.permanent
    assert b"MAIL" not in server.peers[0].received


async def test_required_tls_checks_the_name(server_context: ssl.SSLContext, ca_file: str) -> None:
    """RFC 6125 via RFC 3207: a valid chain for another name is refused."""
    dialogue = Dialogue(extensions=TLS_EXTENSIONS, tls=server_context)
    async with scripted_server(dialogue) as server:
        policy = TLSPolicy.required(ca_file=ca_file, server_hostname="mx.other.test")
        with pytest.raises(TLSError):
            await Connection.open(
                "127.0.0.1", server.port, helo="c.test", tls=policy, timeouts=FAST
            )


async def test_implicit_tls(server_context: ssl.SSLContext, ca_file: str) -> None:
    """RFC 8314 3.3: TLS from the first byte; no STARTTLS inside."""
    dialogue = Dialogue(extensions=["PIPELINING", "ENHANCEDSTATUSCODES"])
    async with scripted_server(dialogue, tls=server_context) as server:
        destination = SmartHost(
            "127.0.0.1",
            server.port,
            tls=TLSPolicy.implicit(ca_file=ca_file, server_hostname="mx.test"),
        )
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    assert result.tls
    assert result.recipients[0].status is Status.DELIVERED
    assert b"STARTTLS" not in server.peers[0].received


@pytest.mark.parametrize(
    ("mechanism", "expected"),
    [
        ("PLAIN", [b"AUTH PLAIN AHVzZXIAcGFzcw=="]),
        ("LOGIN", [b"AUTH LOGIN", b"dXNlcg==", b"cGFzcw=="]),
    ],
)
async def test_auth_over_tls(
    server_context: ssl.SSLContext, ca_file: str, mechanism: str, expected: list[bytes]
) -> None:
    """RFC 4954 4 with RFC 4616 (PLAIN) and the LOGIN mechanism, after STARTTLS."""
    challenges = iter([b"334 VXNlcm5hbWU6\r\n", b"334 UGFzc3dvcmQ6\r\n"])

    def auth(line: bytes) -> bytes:
        return b"235 2.7.0 OK\r\n" if line.startswith(b"AUTH PLAIN") else next(challenges)

    dialogue = Dialogue(
        extensions=TLS_EXTENSIONS,
        tls=server_context,
        replies={
            "AUTH": auth,
            "DXNLCG==": lambda line: next(challenges),
            "CGFZC3C=": b"235 2.7.0 OK\r\n",
        },
    )
    async with scripted_server(dialogue) as server:
        destination = SmartHost(
            "127.0.0.1",
            server.port,
            tls=TLSPolicy.required(ca_file=ca_file),
            credentials=Credentials("user", "pass", mechanisms=(mechanism,)),
        )
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    assert result.recipients[0].status is Status.DELIVERED
    lines = server.peers[0].lines
    start = lines.index(expected[0])
    assert lines[start : start + len(expected)] == expected


@pytest.mark.parametrize("soft_bounce", [True, False], ids=["soft", "hard"])
async def test_auth_refused_is_a_result_with_the_servers_reply(
    server_context: ssl.SSLContext, ca_file: str, soft_bounce: bool
) -> None:
    """RFC 4954 6: 535 5.7.8, the credentials are refused; nothing else is
    sent.  By default the mail waits (transient, with the server's reply:
    a password is the sender's to fix, as Postfix's
    smtp_sasl_auth_soft_bounce); soft_bounce=False makes it permanent."""
    dialogue = Dialogue(
        extensions=TLS_EXTENSIONS,
        tls=server_context,
        replies={"AUTH": b"535 5.7.8 Authentication credentials invalid\r\n"},
    )
    async with scripted_server(dialogue) as server:
        destination = SmartHost(
            "127.0.0.1",
            server.port,
            tls=TLSPolicy.required(ca_file=ca_file),
            credentials=Credentials("user", "wrong", soft_bounce=soft_bounce),
        )
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    (r,) = result.recipients
    assert r.status is (Status.TRANSIENT if soft_bounce else Status.PERMANENT)
    assert r.reply.code == 535
    assert r.remote
    assert not any(line.startswith(b"MAIL") for line in server.peers[0].lines)


async def test_auth_never_sends_credentials_in_clear() -> None:
    """RFC 4954 4: "a client ... SHOULD NOT send plaintext passwords" unencrypted."""
    dialogue = Dialogue(extensions=["PIPELINING", "AUTH PLAIN LOGIN"])
    async with scripted_server(dialogue) as server:
        destination = SmartHost(
            "127.0.0.1",
            server.port,
            tls=TLSPolicy.opportunistic(),
            credentials=Credentials("user", "secret"),
        )
        async with Client(helo="client.test", timeouts=FAST) as client:
            result = await client.send(destination, envelope(), BODY)
    (r,) = result.recipients
    assert r.status is Status.TRANSIENT
    assert not r.remote
    assert b"AUTH" not in server.peers[0].received
    assert b"c2VjcmV0" not in server.peers[0].received  # "secret", base64


@pytest.mark.parametrize(
    ("username", "password"),
    [("alice\0admin", "pw"), ("alice", "p\0w"), ("", "pw"), ("al\udcffce", "pw")],
    ids=["nul-user", "nul-password", "empty-user", "surrogate"],
)
def test_credentials_refuse_what_would_move_plain_boundaries(username: str, password: str) -> None:
    """RFC 4616 2: authcid and passwd hold no NUL (a NUL would shift the
    PLAIN message's fields: user "alice\0admin" authenticating as "admin")."""
    with pytest.raises(ValueError, match=r"."):
        Credentials(username, password)


def test_credentials_mechanisms_are_the_ones_implemented() -> None:
    """RFC 4954 4: only PLAIN and LOGIN are spoken; anything else is refused
    when built, not half-tried on the wire."""
    assert Credentials("u", "p", mechanisms=("login", "plain")).mechanisms == ("LOGIN", "PLAIN")
    with pytest.raises(ValueError, match="CRAM-MD5"):
        Credentials("u", "p", mechanisms=("CRAM-MD5",))
    with pytest.raises(ValueError, match="no AUTH"):
        Credentials("u", "p", mechanisms=())


def test_credentials_repr_hides_the_password() -> None:
    """RFC 4954 9 (security): credentials must not leak into logs."""
    assert "hunter2" not in repr(Credentials("user", "hunter2"))


def test_tls_policy_defaults() -> None:
    """RFC 7435 (opportunistic: unauthenticated) vs RFC 8314 (verified)."""
    assert TLSPolicy.opportunistic().verify is False
    assert TLSPolicy.opportunistic().fallback_to_plaintext is True
    assert TLSPolicy.required().verify is True
    assert TLSPolicy.implicit().mode is TLSMode.IMPLICIT
    assert SmartHost("relay.test").tls.mode is TLSMode.REQUIRED
    context = TLSPolicy.required().context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    loose = TLSPolicy.opportunistic().context()
    assert loose.verify_mode is ssl.CERT_NONE
