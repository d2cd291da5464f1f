"""The hooks: what each one can decide, and what happens when one fails."""

from __future__ import annotations

import hashlib
import logging
import tracemalloc
from typing import TYPE_CHECKING

import anyio
import pytest
from serverkit import (
    MESSAGE,
    Recorder,
    bdat,
    serving,
    settings,
    transaction,
    wait_for,
)

from smtp_message import Reply
from smtp_server import MessageAborted

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from smtp_message import Ehlo, Helo, Lhlo, MailFrom, RcptTo
    from smtp_server import Credentials, Envelope, MessageOutcome, Session
    from smtp_testkit.clients import RawClient, RawReply

pytestmark = pytest.mark.anyio

SECRET = "internal-detail-7f3a"


class Failing(Recorder):
    """Raises from the hook named ``fail`` (a bug in the user's code)."""

    def __init__(self, fail: str) -> None:
        super().__init__(users={"alice": "pw"})
        self.fail = fail

    def _maybe_fail(self, name: str) -> None:
        if name == self.fail:
            raise RuntimeError(f"{name} crashed: {SECRET}")

    async def on_connect(self, session: Session) -> Reply | None:
        self._maybe_fail("on_connect")
        return await super().on_connect(session)

    async def on_hello(self, session: Session, command: Helo | Ehlo | Lhlo) -> Reply | None:
        self._maybe_fail("on_hello")
        return await super().on_hello(session, command)

    async def on_auth(self, session: Session, credentials: Credentials) -> bool | str | Reply:
        self._maybe_fail("on_auth")
        return await super().on_auth(session, credentials)

    async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
        self._maybe_fail("on_mail")
        return await super().on_mail(session, command)

    async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
        self._maybe_fail("on_rcpt")
        return await super().on_rcpt(session, command)

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> MessageOutcome:
        async for _chunk in body:
            self._maybe_fail("on_message")
        return None

    async def on_disconnect(self, session: Session) -> None:
        await super().on_disconnect(session)
        self._maybe_fail("on_disconnect")


async def _dialogue(client: RawClient) -> list[RawReply]:
    """Greeting through QUIT, each reply collected, stopping if closed."""
    replies = [await client.read_reply()]
    lines: list[bytes] = [
        b"EHLO client.example",
        b"AUTH PLAIN AGFsaWNlAHB3",  # \0alice\0pw
        b"MAIL FROM:<a@example.com>",
        b"RCPT TO:<b@example.net>",
        b"DATA",
        MESSAGE + b".",
        b"QUIT",
    ]
    for line in lines:
        try:
            replies.append(await client.command(line))
        except EOFError:
            break
    return replies


@pytest.mark.parametrize(
    ("hook", "index", "expected"),
    [
        # RFC 5321 3.1: a greeting can only be 220, 554 or 421: 421 it is.
        ("on_connect", 0, "421 4.3.0"),
        ("on_hello", 1, "451 4.3.0"),
        # RFC 4954 6: "454 4.7.0 Temporary authentication failure".
        ("on_auth", 2, "454 4.7.0"),
        ("on_mail", 3, "451 4.3.0"),
        ("on_rcpt", 4, "451 4.3.0"),
        ("on_message", 6, "451 4.3.0"),
    ],
)
async def test_hook_exception_is_a_temporary_failure(
    hook: str, index: int, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 5321 4.2.1 / RFC 3463 X.3.0: a hook that raises gives the client a
    4xx (451 4.3.0, "try again later"), never the traceback; the traceback
    goes to the log."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    hooks = Failing(hook)
    config = settings(auth_mechanisms=("PLAIN",), auth_requires_tls=False)
    async with serving(hooks, config) as srv:
        client = await srv.connect(greeting=False)
        replies = await _dialogue(client)
    assert str(replies[index]).startswith(expected), replies
    everything = " ".join(str(r) for r in replies)
    assert SECRET not in everything
    assert "Traceback" not in everything
    assert "RuntimeError" not in everything
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert len(failures) == 1
    assert hook in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert SECRET in str(failures[0].exc_info[1])
    assert hooks.messages == []
    if hook == "on_connect":
        # 421 closes the connection at once (RFC 5321 3.8).
        assert len(replies) == 1


async def test_hook_exception_in_on_disconnect_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing on_disconnect is logged; the message was accepted already and
    the server keeps serving."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    hooks = Failing("on_disconnect")
    async with serving(hooks) as srv:
        client = await srv.hello()
        assert (await transaction(client)).code == 250
        assert (await client.command("QUIT")).code == 221
        await client.read_until_closed()
        other = await srv.hello()
        assert (await transaction(other)).code == 250
        await other.command("QUIT")
        await wait_for(lambda: len(hooks.disconnected) == 2)
    failures = [r for r in caplog.records if r.exc_info is not None]
    assert failures
    assert all("on_disconnect" in r.getMessage() for r in failures)


class Deciding(Recorder):
    """Each hook answers with a custom reply for some inputs."""

    async def on_hello(self, session: Session, command: Helo | Ehlo | Lhlo) -> Reply | None:
        await super().on_hello(session, command)
        if command.domain == "bad.example":
            return Reply(550, "5.7.1", "Not welcome")
        return None

    async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
        await super().on_mail(session, command)
        sender = command.reverse_path
        if sender is not None and sender.local_part == "spammer":
            return Reply(550, "5.7.1", "Sender refused")
        if sender is not None and sender.local_part == "vip":
            return Reply(250, "2.1.0", "Welcome back")
        return None

    async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
        await super().on_rcpt(session, command)
        if command.forward_path.local_part == "ghost":
            return Reply(550, "5.1.1", "No such user here")
        if command.forward_path.local_part == "greylist":
            return Reply(450, "4.7.1", "Greylisted, try again")
        return None

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> MessageOutcome:
        data = b"".join([chunk async for chunk in body])
        if b"VIRUS" in data:
            return Reply(554, "5.7.1", "Virus found")
        return Reply(250, "2.0.0", "Queued as 1234")


async def test_hooks_custom_replies() -> None:
    """RFC 5321 4.2: each hook's reply goes to the client as is; a refusal
    has its protocol effect (no hello, no transaction, no recipient)."""
    hooks = Deciding()
    async with serving(hooks) as srv:
        client = await srv.connect()
        bad_hello = await client.command("EHLO bad.example")
        mail_without_hello = await client.command("MAIL FROM:<a@example.com>")
        await client.command("EHLO good.example")
        spammer = await client.command("MAIL FROM:<spammer@example.com>")
        rcpt_without_mail = await client.command("RCPT TO:<b@example.net>")
        vip = await client.command("MAIL FROM:<vip@example.com>")
        ghost = await client.command("RCPT TO:<ghost@example.net>")
        grey = await client.command("RCPT TO:<greylist@example.net>")
        data_without_rcpt = await client.command("DATA")
        await client.command("RCPT TO:<b@example.net>")
        await client.command("DATA")
        await client.send(b"Subject: VIRUS\r\n\r\n.\r\n")
        virus = await client.read_reply()
        clean = await transaction(client)
    assert str(bad_hello) == "550 5.7.1 Not welcome"
    assert mail_without_hello.code == 503
    assert str(spammer) == "550 5.7.1 Sender refused"
    assert rcpt_without_mail.code == 503
    assert str(vip) == "250 2.1.0 Welcome back"
    assert str(ghost) == "550 5.1.1 No such user here"
    assert str(grey) == "450 4.7.1 Greylisted, try again"
    assert (data_without_rcpt.code, data_without_rcpt.enhanced) == (554, "5.5.1")
    assert str(virus) == "554 5.7.1 Virus found"
    assert str(clean) == "250 2.0.0 Queued as 1234"


async def test_hook_on_connect_refuses_service() -> None:
    """RFC 5321 3.1: a 554 greeting: every command but QUIT gets 503."""

    class NoService(Recorder):
        async def on_connect(self, session: Session) -> Reply | None:
            return Reply(554, "5.7.1", "No SMTP service for you")

    hooks = NoService()
    async with serving(hooks) as srv:
        client = await srv.connect(greeting=False)
        greeting = await client.read_reply()
        ehlo = await client.command("EHLO client.example")
        mail = await client.command("MAIL FROM:<a@example.com>")
        bye = await client.command("QUIT")
    assert str(greeting) == "554 5.7.1 No SMTP service for you"
    assert (ehlo.code, ehlo.enhanced) == (503, "5.5.1")
    assert mail.code == 503
    assert bye.code == 221
    assert hooks.hellos == []
    assert hooks.mails == []


async def test_hook_on_connect_421_closes_at_once() -> None:
    """RFC 5321 3.8: a 421 greeting closes the connection."""

    class Busy(Recorder):
        async def on_connect(self, session: Session) -> Reply | None:
            return Reply(421, "4.3.2", "Too busy")

    async with serving(Busy()) as srv:
        client = await srv.connect(greeting=False)
        greeting = await client.read_reply()
        rest = await client.read_until_closed()
    assert str(greeting) == "421 4.3.2 Too busy"
    assert rest == b""


async def test_hook_impossible_reply_is_a_local_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 5321 4.3.2: MAIL is answered 250 or 4xx/5xx, never 354; a hook
    that tries is a bug: the client gets 451 4.3.0, the log says why."""

    class Wrong(Recorder):
        async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
            if command.reverse_path is None:
                return Reply(354, None, "go ahead")
            return None

        async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
            return "yes"  # type: ignore[return-value]

    caplog.set_level(logging.ERROR, logger="smtp_server")
    async with serving(Wrong()) as srv:
        client = await srv.hello()
        mail = await client.command("MAIL FROM:<>")
        ok = await client.command("MAIL FROM:<a@example.com>")
        rcpt = await client.command("RCPT TO:<b@example.net>")
        data = await client.command("DATA")
    assert (mail.code, mail.enhanced) == (451, "4.3.0")
    assert ok.code == 250
    assert (rcpt.code, rcpt.enhanced) == (451, "4.3.0")
    assert data.code == 554  # no recipient was accepted
    logged = [r.getMessage() for r in caplog.records]
    assert any("impossible reply" in m for m in logged), logged
    assert any("not a Reply or None" in m for m in logged), logged


async def test_hook_message_returning_early_without_reading() -> None:
    """RFC 5321 4.1.1.4: a hook may decide without reading the body; the
    server still reads the body to its end, so the session stays in step."""

    class Early(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            self.aborted.append("decided without reading")
            return Reply(550, "5.7.1", "Not reading that")

    hooks = Early()
    big = b"x" * 70 + b"\r\n"
    async with serving(hooks) as srv:
        client = await srv.hello()
        refused = await transaction(client, big * 20_000)
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        chunk = await bdat(client, big * 1000)
        last = await bdat(client, big, last=True)
        noop = await client.command("NOOP")
    assert str(refused) == "550 5.7.1 Not reading that"
    # With BDAT the hook answered at the first chunk; the chunks are still
    # acknowledged in order and the hook's decision comes with LAST.
    assert str(chunk) == f"250 2.0.0 {len(big) * 1000} octets received"
    assert str(last) == "550 5.7.1 Not reading that"
    assert noop.code == 250
    assert hooks.aborted == ["decided without reading"] * 2


async def test_hook_runs_after_354_is_sent() -> None:
    """RFC 5321 4.1.1.4 / RFC 2920 3.1: the 354 goes out before the message
    hook runs, so a hook that prepares (opens a connection to the next hop)
    before reading does not keep the client waiting for its go-ahead."""
    go_ahead_seen = anyio.Event()

    class Prepares(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            # Until the client has its 354, nothing will come.
            with anyio.fail_after(30):
                await go_ahead_seen.wait()
            return await super().on_message(session, envelope, body)

    hooks = Prepares()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        go = await client.command("DATA", wait=20)
        go_ahead_seen.set()
        await client.send(MESSAGE + b".\r\n")
        accepted = await client.read_reply()
    assert go.code == 354
    assert accepted.code == 250
    assert hooks.messages[0].body == MESSAGE


async def test_hook_message_raising_message_aborted_itself() -> None:
    """A hook may give up on a message by letting MessageAborted out (or
    raising it): the client gets 451 4.3.0 and may retry."""

    class GivesUp(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            raise MessageAborted("disk full")

    async with serving(GivesUp()) as srv:
        client = await srv.hello()
        reply = await transaction(client)
        noop = await client.command("NOOP")
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert noop.code == 250


async def test_hook_smtp_outcome_list_is_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 5321 4.1.1.4: in SMTP one reply follows the body; a list of
    outcomes (LMTP's form) is a hook bug: 451 4.3.0, logged."""

    class Listy(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            await super().on_message(session, envelope, body)
            return [None]

    caplog.set_level(logging.ERROR, logger="smtp_server")
    async with serving(Listy()) as srv:
        client = await srv.hello()
        reply = await transaction(client)
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert any("on_message returned" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["DATA", "BDAT"])
async def test_hook_body_streamed_100mb_in_bounded_memory(command: str) -> None:
    """DESIGN.md (bodies are streamed) and RFC 1870: a 100 MB message passes
    through the server to the hook without the process's traced memory
    growing by more than 16 MiB (the issue's target for the server's RSS)."""
    size_mib = 100
    line = b"y" * 78 + b"\r\n"
    dot_line = b"..starts with a dot\r\n"
    # 1 MiB of wire data: lines, one of them dot-stuffed.
    block = dot_line + line * ((2**20 - len(dot_line)) // len(line))
    block += b"z" * (2**20 - len(block) - 2) + b"\r\n"
    unstuffed = block[1:] if command == "DATA" else block
    expected = hashlib.sha256()
    for _ in range(size_mib):
        expected.update(unstuffed)

    class Digest(Recorder):
        async def on_message(
            self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
        ) -> MessageOutcome:
            digest = hashlib.sha256()
            size = 0
            async for chunk in body:
                digest.update(chunk)
                size += len(chunk)
            self.aborted.append(f"{size} {digest.hexdigest()}")
            return None

    hooks = Digest()
    async with serving(hooks, settings(max_message_size=None)) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        if command == "DATA":
            assert (await client.command("DATA")).code == 354
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            if command == "BDAT":
                await client.send(f"BDAT {size_mib * len(block)} LAST\r\n".encode())
            for _ in range(size_mib):
                await client.send(block)
            if command == "DATA":
                await client.send(b".\r\n")
            reply = await client.read_reply(wait=120)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert reply.code == 250, reply
    assert hooks.aborted == [f"{size_mib * len(unstuffed)} {expected.hexdigest()}"]
    growth = peak - base
    assert growth < 16 * 2**20, f"peak grew by {growth / 2**20:.1f} MiB"
