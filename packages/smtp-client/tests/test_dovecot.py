"""LMTP delivery (RFC 2033) to a real Dovecot on loopback (the testkit's).

Mail is read back from the users' Maildirs and with ``doveadm fetch``.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from smtp_client import Client, Envelope, LMTPServer, Status, Timeouts

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from smtp_testkit.dovecot import DovecotServer

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


def message(tag: str) -> bytes:
    return f"From: s@client.test\r\nSubject: {tag}\r\n\r\nHello {tag}\r\n".encode()


def find(dovecot: DovecotServer, user: str, tag: str) -> bytes:
    matches = [m for m in dovecot.messages(user) if tag.encode() in m]
    assert len(matches) == 1, f"{tag} in {user}: {len(matches)} copies"
    return matches[0]


@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_lmtp_unix_socket_known_and_unknown_user(
    dovecot: DovecotServer, chunking: bool
) -> None:
    """RFC 2033 4.2: alice is delivered, ghost refused at RCPT (550 5.1.1); the
    one reply after the body belongs to alice."""
    tag = f"t-{uuid.uuid4().hex}"
    async with Client(helo="client.test", timeouts=TIMEOUTS, use_chunking=chunking) as client:
        result = await client.send(
            LMTPServer.unix(str(dovecot.lmtp_socket)),
            Envelope.build("s@client.test", ["alice@peer.test", "ghost@peer.test"]),
            message(tag),
        )
    alice, ghost = result.recipients
    assert (alice.status, alice.reply.code, alice.reply.enhanced) == (
        Status.DELIVERED,
        250,
        "2.0.0",
    )
    assert alice.reply.text.startswith("<alice@peer.test>")
    assert "Saved" in alice.reply.text
    assert (ghost.status, ghost.reply.code, ghost.reply.enhanced) == (
        Status.PERMANENT,
        550,
        "5.1.1",
    )
    assert "User doesn't exist" in ghost.reply.text
    assert result.host == str(dovecot.lmtp_socket)
    assert f"Hello {tag}".encode() in find(dovecot, "alice", tag)
    assert tag in dovecot.fetch("alice", "hdr.subject", f"header subject {tag}")


async def test_lmtp_tcp_two_users_each_with_its_own_reply(
    dovecot: DovecotServer,
) -> None:
    """RFC 2033 4.2: two accepted recipients, two replies, each naming its user."""
    tag = f"t-{uuid.uuid4().hex}"
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            LMTPServer(host=dovecot.host, port=dovecot.lmtp_port),
            Envelope.build("s@client.test", ["alice@peer.test", "bob@peer.test"]),
            message(tag),
        )
    assert [r.status for r in result.recipients] == [Status.DELIVERED] * 2
    assert result.recipients[0].reply.text.startswith("<alice@peer.test>")
    assert result.recipients[1].reply.text.startswith("<bob@peer.test>")
    find(dovecot, "alice", tag)
    find(dovecot, "bob", tag)


async def test_lmtp_streamed_large_body(dovecot: DovecotServer) -> None:
    """RFC 2033 with RFC 3030: a 3 MB body streamed in pieces arrives intact."""
    tag = f"t-{uuid.uuid4().hex}"
    line = b"0123456789" * 9 + b"\r\n"

    async def pieces() -> AsyncIterator[bytes]:
        yield message(tag)
        for _ in range(30_000):
            yield line

    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        result = await client.send(
            LMTPServer.unix(str(dovecot.lmtp_socket)),
            Envelope.build("s@client.test", ["bob@peer.test"]),
            pieces(),
        )
    assert result.recipients[0].status is Status.DELIVERED
    stored = find(dovecot, "bob", tag)
    assert stored.count(b"0123456789" * 9) == 30_000


async def test_lmtp_connection_reused_for_the_next_message(
    dovecot: DovecotServer,
) -> None:
    """RFC 2033 4.1 / RFC 5321 3.3: several transactions in one LMTP session."""
    tags = [f"t-{uuid.uuid4().hex}" for _ in range(3)]
    destination = LMTPServer.unix(str(dovecot.lmtp_socket))
    async with Client(helo="client.test", timeouts=TIMEOUTS) as client:
        for tag in tags:
            result = await client.send(
                destination,
                Envelope.build("s@client.test", ["alice@peer.test"]),
                message(tag),
            )
            assert result.recipients[0].status is Status.DELIVERED
        assert len(client._idle[destination]) == 1
    for tag in tags:
        find(dovecot, "alice", tag)
