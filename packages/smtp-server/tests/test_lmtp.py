"""LMTP (RFC 2033): LHLO, and one reply per accepted recipient after the body."""

from __future__ import annotations

import logging
import smtplib
from typing import TYPE_CHECKING

import anyio
import pytest
from serverkit import MESSAGE, Recorder, bdat, serving, settings

from smtp_message import RcptTo, Reply
from smtp_testkit.clients import run_swaks

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from smtp_server import Envelope, MessageOutcome, Session

pytestmark = pytest.mark.anyio

FULL = Reply(452, "4.2.2", "Mailbox full")


class PerRecipient(Recorder):
    """Refuses RCPT for "ghost"; after the body, "full" gets 452 4.2.2."""

    async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
        if command.forward_path.local_part == "ghost":
            return Reply(550, "5.1.1", "No such user")
        return await super().on_rcpt(session, command)

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> MessageOutcome:
        await super().on_message(session, envelope, body)
        return [FULL if r.local_part == "full" else None for r in envelope.recipient_addresses]


async def test_lmtp_lhlo_advertises_pipelining_and_enhanced_codes() -> None:
    """RFC 2033 4.1 and 5: LHLO's reply lists PIPELINING and
    ENHANCEDSTATUSCODES (both MUST), even when pipelining is turned off."""
    async with serving(config=settings(lmtp=True, pipelining=False)) as srv:
        client = await srv.connect(greeting=False)
        greeting = await client.read_reply()
        lhlo = await client.command("LHLO client.example")
    assert greeting.code == 220
    assert b"LMTP" in greeting.lines[0]
    keywords = [line[4:] for line in lhlo.lines[1:]]
    assert b"PIPELINING" in keywords
    assert b"ENHANCEDSTATUSCODES" in keywords


async def test_lmtp_helo_and_ehlo_refused() -> None:
    """RFC 2033 4.1: an LMTP server answers HELO and EHLO with 500."""
    async with serving(config=settings(lmtp=True)) as srv:
        client = await srv.connect()
        helo = await client.command("HELO client.example")
        ehlo = await client.command("EHLO client.example")
        mail = await client.command("MAIL FROM:<a@example.com>")
        lhlo = await client.command("LHLO client.example")
    assert (helo.code, helo.enhanced) == (500, "5.5.1")
    assert (ehlo.code, ehlo.enhanced) == (500, "5.5.1")
    assert mail.code == 503  # no LHLO yet
    assert lhlo.code == 250


async def test_lhlo_refused_in_smtp() -> None:
    """RFC 2033 4.1: LHLO is LMTP's; an SMTP server does not know it (500)."""
    async with serving() as srv:
        client = await srv.connect()
        reply = await client.command("LHLO client.example")
    assert (reply.code, reply.enhanced) == (500, "5.5.1")


async def test_lmtp_smtplib_one_reply_per_accepted_recipient() -> None:
    """RFC 2033 4.2: after the body, one reply per accepted RCPT, in order,
    each carrying the hook's outcome for that recipient.

    smtplib.LMTP reads only one reply after DATA (RECIPES.md 1), so the
    test reads the others with getreply().
    """
    hooks = PerRecipient()
    async with serving(hooks, settings(lmtp=True)) as srv:

        def send() -> list[tuple[int, bytes]]:
            lmtp = smtplib.LMTP(srv.host, srv.port)
            try:
                lmtp.ehlo_or_helo_if_needed()  # LMTP's ehlo() sends LHLO
                assert lmtp.mail("a@example.com")[0] == 250
                rcpts = [
                    lmtp.rcpt(f"{name}@example.net")[0]
                    for name in ("alice", "ghost", "full", "bob")
                ]
                assert rcpts == [250, 550, 250, 250]
                replies = [lmtp.data(MESSAGE)]
                replies += [lmtp.getreply() for _ in range(2)]
                assert lmtp.noop()[0] == 250  # and the session is in step
                lmtp.quit()
            finally:
                lmtp.close()
            return replies

        replies = await anyio.to_thread.run_sync(send)
    assert replies == [
        (250, b"2.0.0 Message accepted"),
        (452, b"4.2.2 Mailbox full"),
        (250, b"2.0.0 Message accepted"),
    ]
    [received] = hooks.messages
    assert [str(r) for r in received.envelope.recipient_addresses] == [
        "alice@example.net",
        "full@example.net",
        "bob@example.net",
    ]
    assert received.session.lmtp
    # One message, accepted for two of its three recipients: one message.
    assert received.session.messages == 1


async def test_lmtp_bdat_one_reply_per_recipient() -> None:
    """RFC 2033 4.3 and RFC 3030: with BDAT, the LAST chunk gets one reply
    per recipient."""
    hooks = PerRecipient()
    async with serving(hooks, settings(lmtp=True)) as srv:
        client = await srv.connect()
        await client.command("LHLO client.example")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<full@example.net>")
        await client.command("RCPT TO:<bob@example.net>")
        chunk = await bdat(client, b"Subject: x\r\n\r\n")
        first = await bdat(client, b"body\r\n", last=True)
        second = await client.read_reply()
        noop = await client.command("NOOP")
    assert chunk.code == 250
    assert str(first) == "452 4.2.2 Mailbox full"
    assert str(second) == "250 2.0.0 Message accepted"
    assert noop.code == 250
    assert hooks.messages[0].body == b"Subject: x\r\n\r\nbody\r\n"


async def test_lmtp_many_full_mailboxes_do_not_end_the_session() -> None:
    """RFC 2033 4.2 with RFC 5321 4.5.3.2: the replies after one body are
    one outcome for the error count.  A message to more full mailboxes than
    max_errors, and then one refused by all its recipients, leave the
    session open; before, each refused recipient counted, and the client
    got 421 after its first message."""
    async with serving(PerRecipient(), settings(lmtp=True, max_errors=3)) as srv:
        client = await srv.connect()
        await client.command("LHLO client.example")
        outcomes = []
        for names in (["alice"] + ["full"] * 5, ["full"] * 5):
            await client.command("MAIL FROM:<a@example.com>")
            for name in names:
                assert (await client.command(f"RCPT TO:<{name}@example.net>")).code == 250
            assert (await client.command("DATA")).code == 354
            await client.send(MESSAGE + b".\r\n")
            outcomes.append([(await client.read_reply()).code for _ in names])
        noop = await client.command("NOOP")
    assert outcomes == [[250] + [452] * 5, [452] * 5]
    assert str(noop) == "250 2.0.0 OK"


@pytest.mark.parametrize("first_chunk", [False, True])
async def test_lmtp_failed_last_chunk_one_reply_per_recipient(
    first_chunk: bool,
) -> None:
    """RFC 2033 4.2 and RFC 3030 2: a LAST chunk that fails (over the size
    limit) still gets one reply per recipient, and the session stays in
    step, whether or not chunks came before it."""
    hooks = Recorder()
    async with serving(hooks, settings(lmtp=True, max_message_size=1000)) as srv:
        client = await srv.connect()
        await client.command("LHLO client.example")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        await client.command("RCPT TO:<c@example.net>")
        if not first_chunk:
            assert (await bdat(client, b"x" * 10)).code == 250
        first = await bdat(client, b"y" * 2000, last=True)
        second = await client.read_reply()
        noop = await client.command("NOOP")
    assert [(r.code, r.enhanced) for r in (first, second)] == [(552, "5.3.4")] * 2
    assert str(noop) == "250 2.0.0 OK"
    assert hooks.messages == []


async def test_lmtp_one_reply_applies_to_every_recipient() -> None:
    """RFC 2033 4.2: a single outcome from the hook is repeated per recipient."""

    class Reject(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            await super().on_message(session, envelope, body)
            return Reply(550, "5.7.1", "Content refused")

    async with serving(Reject(), settings(lmtp=True)) as srv:
        client = await srv.connect()
        await client.command("LHLO client.example")
        await client.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
            b"RCPT TO:<c@example.net>\r\nRCPT TO:<d@example.net>\r\nDATA\r\n"
        )
        replies = await client.read_replies(5)
        await client.send(MESSAGE + b".\r\n")
        outcomes = await client.read_replies(3)
    assert [r.code for r in replies] == [250, 250, 250, 250, 354]
    assert [str(r) for r in outcomes] == ["550 5.7.1 Content refused"] * 3


async def test_lmtp_outcomes_of_wrong_length(caplog: pytest.LogCaptureFixture) -> None:
    """RFC 2033 4.2: exactly one reply per recipient.  A hook returning the
    wrong number of outcomes is a bug: every recipient gets 451 4.3.0
    (nothing is claimed delivered) and the error is logged."""

    class Short(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            await super().on_message(session, envelope, body)
            return [None]

    caplog.set_level(logging.ERROR, logger="smtp_server")
    async with serving(Short(), settings(lmtp=True)) as srv:
        client = await srv.connect()
        await client.command("LHLO client.example")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        await client.command("RCPT TO:<c@example.net>")
        await client.command("DATA")
        await client.send(MESSAGE + b".\r\n")
        outcomes = await client.read_replies(2)
        noop = await client.command("NOOP")
    assert [(r.code, r.enhanced) for r in outcomes] == [(451, "4.3.0")] * 2
    assert noop.code == 250
    assert any("on_message returned" in r.getMessage() for r in caplog.records)


async def test_lmtp_rejected_body_one_reply_per_recipient() -> None:
    """RFC 2033 4.2 and RFC 5321 2.3.8: a body the server refuses (bare LF)
    gets the refusal once per recipient, keeping the client in step."""
    hooks = Recorder()
    async with serving(hooks, settings(lmtp=True)) as srv:
        client = await srv.connect()
        await client.command("LHLO client.example")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        await client.command("RCPT TO:<c@example.net>")
        await client.command("DATA")
        await client.send(b"bare\nline feed\r\n.\r\n")
        outcomes = await client.read_replies(2)
        noop = await client.command("NOOP")
    assert [(r.code, r.enhanced) for r in outcomes] == [(554, "5.6.0")] * 2
    assert noop.code == 250
    assert hooks.messages == []


async def test_lmtp_swaks() -> None:
    """RFC 2033: swaks speaking LMTP delivers to two recipients."""
    hooks = PerRecipient()
    async with serving(hooks, settings(lmtp=True)) as srv:
        result = await run_swaks(
            "--server", f"{srv.host}:{srv.port}",
            "--protocol", "LMTP",
            "--from", "a@example.com",
            "--to", "alice@example.net,bob@example.net",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LHLO" in result.stdout
    assert result.server_lines().count("250 2.0.0 Message accepted") == 2
    assert len(hooks.messages[0].envelope.recipients) == 2


async def test_lmtp_outcome_421_closes_after_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 5321 3.8 / RFC 2033 4.2: an outcome of 421 closes the session at
    once; the replies after it are not sent, and nothing is logged as an
    internal error."""

    class Closing(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            await super().on_message(session, envelope, body)
            return [None, Reply(421, "4.3.0", "Going down"), None]

    caplog.set_level(logging.INFO, logger="smtp_server")
    async with serving(Closing(), settings(lmtp=True)) as srv:
        client = await srv.connect()
        await client.command("LHLO client.example")
        await client.command("MAIL FROM:<a@example.com>")
        for name in ("b", "c", "d"):
            await client.command(f"RCPT TO:<{name}@example.net>")
        await client.command("DATA")
        await client.send(MESSAGE + b".\r\n")
        first, second = await client.read_replies(2)
        rest = await client.read_until_closed()
    assert first.code == 250
    assert str(second) == "421 4.3.0 Going down"
    assert rest == b""
    assert not any(r.exc_info for r in caplog.records)
