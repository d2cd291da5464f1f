"""Limits and timeouts: the right reply, and a session that goes on or ends."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from serverkit import (
    MESSAGE,
    Recorder,
    expect_timeout,
    serving,
    settings,
    timeouts,
    transaction,
    wait_for,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator

    from smtp_message import MailFrom, Reply
    from smtp_server import Envelope, MessageOutcome, Session

pytestmark = pytest.mark.anyio

#: A timeout short enough to wait for in a test; the others stay long.
SHORT = 0.3


async def test_limit_max_recipients() -> None:
    """RFC 5321 4.5.3.1.10: past the recipient limit, 452 4.5.3 (too many
    recipients); the ones accepted get the message."""
    hooks = Recorder()
    async with serving(hooks, settings(max_recipients=100)) as srv:
        client = await srv.hello()
        await client.send(
            b"MAIL FROM:<a@example.com>\r\n"
            + b"".join(f"RCPT TO:<r{i}@example.net>\r\n".encode() for i in range(102))
        )
        replies = await client.read_replies(103)
        accepted = await client.command("DATA")
        await client.send(MESSAGE + b".\r\n")
        delivered = await client.read_reply()
    assert [r.code for r in replies] == [250] * 101 + [452] * 2
    assert str(replies[-1]) == "452 4.5.3 Too many recipients"
    assert accepted.code == 354
    assert delivered.code == 250
    assert len(hooks.messages[0].envelope.recipients) == 100


async def test_limit_command_line_length() -> None:
    """RFC 5321 4.5.3.1.4 and 4.5.3.1.10: a command line is at most 512 octets
    with its CRLF; a longer one gets 500 5.5.6 once, however long it is, and
    the session continues."""
    async with serving() as srv:
        client = await srv.hello()
        exact = await client.command(b"NOOP " + b"x" * (512 - 7))
        over = await client.command(b"NOOP " + b"x" * (512 - 6))
        # A megabyte without CRLF: one reply, as soon as the limit is passed.
        await client.send(b"NOOP " + b"y" * 2**20)
        huge = await client.read_reply()
        await client.send(b"z" * 2**20 + b"\r\n")
        after = await client.command("NOOP")
        accepted = await transaction(client)
    assert str(exact) == "250 2.0.0 OK"
    assert (over.code, over.enhanced) == (500, "5.5.6")
    assert (huge.code, huge.enhanced) == (500, "5.5.6")
    assert after.code == 250  # not a second 500 for the rest of the line
    assert accepted.code == 250


async def test_limit_max_errors_then_421() -> None:
    """RFC 5321 4.5.3.2 / 3.8: a client that keeps erring is dropped: after
    max_errors bad commands, 421 and the connection closes."""
    async with serving(config=settings(max_errors=3)) as srv:
        client = await srv.hello()
        await client.send(b"BOGUS\r\nMAIL FROM:<broken\r\nRCPT TO:<b@example.net>\r\n")
        replies = await client.read_replies(3)
        farewell = await client.read_reply()
        rest = await client.read_until_closed()
    assert [r.code for r in replies] == [500, 501, 503]
    assert str(farewell) == "421 4.7.0 Too many errors, closing connection"
    assert rest == b""


async def test_limit_max_errors_reset_by_accepted_message() -> None:
    """RFC 5321 4.5.3.2: errors count since the last accepted message, so a
    client whose mistakes are far apart keeps its session."""
    hooks = Recorder()
    async with serving(hooks, settings(max_errors=3)) as srv:
        client = await srv.hello()
        for _ in range(3):
            assert (await client.command("BOGUS")).code == 500
            assert (await client.command("BOGUS")).code == 500
            assert (await transaction(client)).code == 250
        assert (await client.command("QUIT")).code == 221
    assert len(hooks.messages) == 3


async def test_timeout_hello() -> None:
    """RFC 5321 4.5.3.2: a client silent after the greeting gets 421 4.4.2."""
    async with serving(config=settings(timeouts=timeouts(hello=SHORT))) as srv:
        client = await srv.connect()
        await expect_timeout(client)


async def test_timeout_idle() -> None:
    """RFC 5321 4.5.3.2.7: the server timeout between transactions: 421 4.4.2."""
    async with serving(config=settings(timeouts=timeouts(idle=SHORT))) as srv:
        client = await srv.hello()
        assert (await transaction(client)).code == 250
        await expect_timeout(client)


async def test_timeout_command() -> None:
    """RFC 5321 4.5.3.2.2-3: waiting for RCPT/DATA within a transaction."""
    hooks = Recorder()
    async with serving(hooks, settings(timeouts=timeouts(command=SHORT))) as srv:
        client = await srv.hello()
        assert (await client.command("MAIL FROM:<a@example.com>")).code == 250
        await expect_timeout(client)
    assert hooks.messages == []


async def test_timeout_data_initiation() -> None:
    """RFC 5321 4.5.3.2.4: after 354, the body must start in time; the
    message hook sees the abort."""
    hooks = Recorder()
    config = settings(timeouts=timeouts(data_initiation=SHORT))
    async with serving(hooks, config) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        assert (await client.command("DATA")).code == 354
        await expect_timeout(client)
    assert hooks.aborted == ["timeout"]
    assert hooks.messages == []


async def test_timeout_data_block() -> None:
    """RFC 5321 4.5.3.2.5: each block of body must follow the last in time."""
    hooks = Recorder()
    async with serving(hooks, settings(timeouts=timeouts(data_block=SHORT))) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        await client.command("DATA")
        await client.send(b"Subject: part\r\n\r\nthe first half")
        await expect_timeout(client)
    assert hooks.aborted == ["timeout"]
    assert hooks.messages == []


async def test_timeout_data_block_bdat() -> None:
    """RFC 5321 4.5.3.2.5 and RFC 3030: a BDAT chunk that stops arriving."""
    hooks = Recorder()
    async with serving(hooks, settings(timeouts=timeouts(data_block=SHORT))) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        await client.send(b"BDAT 100 LAST\r\nonly ten.")
        await expect_timeout(client)
    assert hooks.aborted == ["timeout"]


class Stalls(Recorder):
    """A hook that never decides: on_mail, or on_message once the body is read."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
        if self.where == "on_mail":
            await anyio.sleep_forever()
        return await super().on_mail(session, command)

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> MessageOutcome:
        await super().on_message(session, envelope, body)
        if self.where == "on_message":
            await anyio.sleep_forever()
        return None


async def test_timeout_data_termination() -> None:
    """RFC 5321 4.5.3.2.6: the client waits 10 minutes for the reply after
    the final dot; a message hook slower than data_termination gets the
    client a 421 4.4.2 rather than an endless wait."""
    hooks = Stalls("on_message")
    config = settings(timeouts=timeouts(data_termination=SHORT))
    async with serving(hooks, config) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        await client.command("DATA")
        await client.send(MESSAGE + b".\r\n")
        await expect_timeout(client)
    assert len(hooks.messages) == 1  # the hook read it all, then stalled


async def test_timeout_hook() -> None:
    """RFC 5321 4.5.3.2 (the server mirrors the client's patience): a hook
    that does not decide within the hook timeout ends the session 421 4.4.2."""
    hooks = Stalls("on_mail")
    async with serving(hooks, settings(timeouts=timeouts(hook=SHORT))) as srv:
        client = await srv.hello()
        await client.send(b"MAIL FROM:<a@example.com>\r\n")
        await expect_timeout(client)


async def test_timeout_covers_a_trickling_command() -> None:
    """RFC 5321 4.5.3.2: the deadline covers the whole command, so a client
    sending one octet at a time cannot hold the session forever."""
    async with serving(config=settings(timeouts=timeouts(idle=1.0))) as srv:
        client = await srv.hello()
        sent = 0

        async def trickle() -> None:
            nonlocal sent
            try:
                # 400 octets, 50 ms apart: at least 20 s if nothing stops it.
                for byte in b"NOOP " + b"x" * 395:
                    await client.send(bytes([byte]))
                    sent += 1
                    await anyio.sleep(0.05)
            except (anyio.BrokenResourceError, OSError):
                pass  # the server closed the connection under us

        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle)
            # Read while sending: once the server closes, more octets sent
            # make the peer reset the connection, which loses unread data.
            reply = await client.read_reply()
            tg.cancel_scope.cancel()
    assert str(reply) == "421 4.4.2 Timeout, closing connection"
    # The session ended while the command was still trickling in.
    assert sent < 400


async def test_timeout_tls_handshake(tls_server_context: ssl.SSLContext) -> None:
    """RFC 3207 4: a client that says STARTTLS and never handshakes is closed."""
    config = settings(ssl_context=tls_server_context, timeouts=timeouts(tls_handshake=SHORT))
    hooks = Recorder()
    async with serving(hooks, config) as srv:
        client = await srv.hello()
        assert (await client.command("STARTTLS")).code == 220
        assert await client.read_until_closed() == b""
        await wait_for(lambda: hooks.disconnected)


async def test_slow_client_does_not_block_others() -> None:
    """RFC 5321 4.5.3.2 (a server serves many clients): one client stalled
    mid-command and another stalled in a slow hook do not delay a third."""
    release = anyio.Event()

    class SlowFor(Recorder):
        async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
            sender = command.reverse_path
            if sender is not None and sender.local_part == "slow":
                await release.wait()
            return await super().on_mail(session, command)

    hooks = SlowFor()
    async with serving(hooks) as srv:
        stalled = await srv.hello()
        await stalled.send(b"MAIL FROM:<a@exa")  # and nothing more
        slow_hook = await srv.hello()
        await slow_hook.send(b"MAIL FROM:<slow@example.com>\r\n")
        fast = await srv.hello()
        accepted = await transaction(fast)
        assert accepted.code == 250
        # Meanwhile the slow session is still waiting for its hook.
        assert [str(m.envelope.sender) for m in hooks.messages] == ["a@example.com"]
        release.set()
        assert (await slow_hook.read_reply()).code == 250
        await stalled.send(b"mple.com>\r\n")
        assert (await stalled.read_reply()).code == 250
