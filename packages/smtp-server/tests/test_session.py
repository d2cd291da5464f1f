"""RFC 5321's core session over a real socket: the commands every client uses."""

from __future__ import annotations

import pytest
from serverkit import MESSAGE, Recorder, serving, settings, transaction

pytestmark = pytest.mark.anyio


async def test_session_greeting_names_the_host() -> None:
    """RFC 5321 4.2 / 4.3.1: the greeting is 220 and starts with our name."""
    async with serving(config=settings(greeting="ESMTP test server")) as srv:
        client = await srv.connect(greeting=False)
        greeting = await client.read_reply()
    assert greeting.lines == (b"220 mx.test.example ESMTP test server",)


async def test_session_verbs_are_case_insensitive() -> None:
    """RFC 5321 2.4: "Verbs and argument values ... are not case sensitive"."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.connect()
        assert (await client.command("ehlo client.example")).code == 250
        assert (await client.command("mail from:<a@example.com>")).code == 250
        assert (await client.command("RcPt To:<b@example.net>")).code == 250
        assert (await client.command("data")).code == 354
        await client.send(MESSAGE + b".\r\n")
        assert (await client.read_reply()).code == 250
    assert len(hooks.messages) == 1


async def test_session_ehlo_and_rset_reset_the_transaction() -> None:
    """RFC 5321 4.1.4 (EHLO "clears all buffers and reset the state") and
    4.1.1.5 (RSET): after either, RCPT and DATA are out of sequence."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        ehlo = await client.command("EHLO again.example")
        data_after_ehlo = await client.command("DATA")
        await client.command("MAIL FROM:<a@example.com>")
        rset = await client.command("RSET")
        rcpt_after_rset = await client.command("RCPT TO:<b@example.net>")
        accepted = await transaction(client)
    assert ehlo.code == 250
    assert (data_after_ehlo.code, data_after_ehlo.enhanced) == (503, "5.5.1")
    assert str(rset) == "250 2.0.0 OK"
    assert (rcpt_after_rset.code, rcpt_after_rset.enhanced) == (503, "5.5.1")
    assert accepted.code == 250
    assert len(hooks.messages) == 1


async def test_session_commands_before_hello() -> None:
    """RFC 5321 4.1.4: MAIL needs a HELO/EHLO first (503); NOOP, RSET and
    QUIT work anyway."""
    async with serving() as srv:
        client = await srv.connect()
        mail = await client.command("MAIL FROM:<a@example.com>")
        noop = await client.command("NOOP")
        rset = await client.command("RSET")
        bye = await client.command("QUIT")
        rest = await client.read_until_closed()
    assert (mail.code, mail.enhanced) == (503, "5.5.1")
    assert (noop.code, rset.code) == (250, 250)
    assert str(bye) == "221 2.0.0 Bye"
    assert rest == b""


async def test_session_informational_commands() -> None:
    """RFC 5321 4.1.1.6-4.1.1.9: VRFY 252 (3.5.3), EXPN not offered (502),
    HELP 214, NOOP with an argument 250; with vrfy off, VRFY is 502."""
    async with serving() as srv:
        client = await srv.hello()
        vrfy = await client.command("VRFY postmaster")
        expn = await client.command("EXPN staff")
        help_ = await client.command("HELP MAIL")
        noop = await client.command("NOOP anything at all")
        vrfy_bare = await client.command("VRFY")
    async with serving(config=settings(vrfy=False)) as srv:
        client = await srv.hello()
        vrfy_off = await client.command("VRFY postmaster")
    assert (vrfy.code, vrfy.enhanced) == (252, "2.5.0")
    assert (expn.code, expn.enhanced) == (502, "5.5.1")
    assert (help_.code, help_.enhanced) == (214, "2.0.0")
    assert noop.code == 250
    assert vrfy_bare.code == 501
    assert vrfy_off.code == 502


async def test_session_quit_mid_transaction_discards_it() -> None:
    """RFC 5321 4.1.1.10: QUIT ends the session; an unfinished transaction
    is dropped, never delivered."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        bye = await client.command("QUIT")
        assert await client.read_until_closed() == b""
    assert bye.code == 221
    assert hooks.messages == []


async def test_session_null_reverse_path_and_postmaster() -> None:
    """RFC 5321 4.5.5 (bounces use MAIL FROM:<>) and 4.5.1 (<Postmaster>
    without a domain is always accepted as a recipient)."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<>")
        postmaster = await client.command("RCPT TO:<Postmaster>")
        await client.command("DATA")
        await client.send(MESSAGE + b".\r\n")
        accepted = await client.read_reply()
    assert postmaster.code == 250
    assert accepted.code == 250
    [received] = hooks.messages
    assert received.envelope.sender is None
    [rcpt] = received.envelope.recipient_addresses
    assert rcpt.local_part.lower() == "postmaster"
    assert rcpt.domain is None
