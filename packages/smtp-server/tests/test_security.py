"""Hostile input: smuggling, control characters, injection, unknown commands."""

from __future__ import annotations

import logging
import re
import socket

import anyio
import anyio.abc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from serverkit import HOSTNAME, Recorder, serving, settings

from smtp_message import BareLineEndings
from smtp_server import interact

pytestmark = pytest.mark.anyio

EVIL = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
SMUGGLED = EVIL + b"Subject: smuggled\r\n\r\nforged\r\n"


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = []
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        out.append(text)
    return out


@pytest.mark.parametrize(
    "terminator",
    [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF", "CR.CRLF"],
)
@pytest.mark.parametrize("policy", [BareLineEndings.REJECT, BareLineEndings.KEEP])
async def test_smuggling_bare_terminators_never_split_a_message(
    terminator: bytes, policy: BareLineEndings
) -> None:
    """SMTP smuggling (SEC Consult 2023; aiosmtpd CVE-2024-27305), RFC 5321
    4.1.1.4 and 2.3.8: only CRLF.CRLF ends DATA.  A body carrying a bare
    variant followed by a second transaction is one message (KEEP) or none
    (REJECT: 554 5.6.0), never two; the smuggled MAIL is never a command."""
    hooks = Recorder()
    async with serving(hooks, settings(bare_line_endings=policy)) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        assert (await client.command("DATA")).code == 354
        await client.send(b"Subject: legit\r\n\r\nlegit" + terminator + SMUGGLED + b".\r\nQUIT\r\n")
        outcome = await client.read_reply()
        bye = await client.read_reply()
        rest = await client.read_until_closed()
    assert bye.code == 221
    assert rest == b""
    assert [str(m.reverse_path) for m in hooks.mails] == ["a@example.com"]
    assert [str(r.forward_path) for r in hooks.rcpts] == ["b@example.net"]
    if policy is BareLineEndings.REJECT:
        assert (outcome.code, outcome.enhanced) == (554, "5.6.0")
        assert hooks.messages == []
    else:
        assert outcome.code == 250
        [message] = hooks.messages
        assert b"MAIL FROM:<evil@attacker.example>" in message.body
        assert message.body.endswith(b"forged\r\n")


async def test_smuggling_bare_lf_in_bdat_is_data() -> None:
    """RFC 3030 2: a chunk is counted octets; line endings inside mean nothing."""
    hooks = Recorder()
    payload = b"legit\n.\n" + SMUGGLED
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com> BODY=BINARYMIME")
        await client.command("RCPT TO:<b@example.net>")
        await client.send(f"BDAT {len(payload)} LAST\r\n".encode() + payload)
        reply = await client.read_reply()
        noop = await client.command("NOOP")
    assert reply.code == 250
    assert noop.code == 250
    assert [m.body for m in hooks.messages] == [payload]
    assert len(hooks.mails) == 1


async def test_bare_lf_is_not_a_command_terminator() -> None:
    """RFC 5321 2.3.8 and 4.1.1: commands end with CRLF only; a bare LF (or
    CR) inside a line makes it one malformed command, not two commands."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        lf = await client.command(b"MAIL FROM:<a@example.com>\nRCPT TO:<b@example.net>")
        cr = await client.command(b"NOOP\rRSET")
        # An LF alone never completes a command: the reply comes only at CRLF.
        await client.send(b"NOOP\n")
        await client.send(b"\r\n")
        split = await client.read_reply()
        noop = await client.command("NOOP")
    assert (lf.code, lf.enhanced) == (500, "5.5.2")
    assert (cr.code, cr.enhanced) == (500, "5.5.2")
    assert (split.code, split.enhanced) == (500, "5.5.2")
    assert str(noop) == "250 2.0.0 OK"
    assert hooks.mails == []


@pytest.mark.parametrize(
    "line",
    [
        b"NOOP a\x00b",
        b"\x00EHLO client.example",
        b"HELO cli\xc3\xa9nt.example",
        b"NOOP caf\xc3\xa9",
        b"VRFY \xff\xfe",
        b"MAIL FROM:<a@example.com> \xff",
    ],
)
async def test_nul_and_8bit_in_commands_rejected(line: bytes) -> None:
    """RFC 5321 2.4 (commands are US-ASCII) and RFC 6531 3.3 (UTF-8 only in
    MAIL/RCPT with SMTPUTF8): NUL and 8-bit octets get 500 5.5.2."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        reply = await client.command(line)
        noop = await client.command("NOOP")
    assert (reply.code, reply.enhanced) == (500, "5.5.2")
    assert noop.code == 250
    assert hooks.mails == []
    assert len(hooks.hellos) == 1


async def test_unknown_commands_never_echoed(caplog: pytest.LogCaptureFixture) -> None:
    """RFC 5321 4.2.4: unknown commands get 500 5.5.1; their text never comes
    back in a reply or goes into a log line (a reflected or log injection)."""
    caplog.set_level(logging.DEBUG)
    marker = "zq-unique-marker-41"
    async with serving() as srv:
        client = await srv.hello()
        replies = [
            await client.command(f"XPLOIT <script>{marker}</script>"),
            await client.command(f"{marker}"),
            await client.command(f"MAIL{marker} FROM:<a@example.com>"),
            await client.command(f"VRFY {marker}"),
            await client.command(f"HELP {marker}"),
            await client.command(f"NOOP {marker}"),
        ]
    assert [(r.code, r.enhanced) for r in replies[:3]] == [(500, "5.5.1")] * 3
    for reply in replies:
        assert marker not in str(reply)
        assert b"XPLOIT" not in b"".join(reply.lines)
    for text in _messages(caplog):
        assert marker not in text


CONTROL = [bytes([c]) for c in [*range(0x20), 0x7F] if c not in (0x0A, 0x0D)]


async def test_control_characters_never_reach_hooks_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 5321 4.1.2 (Mailbox grammar) and 2.4: no NUL, CR, LF or other
    control octet in a HELO name, a path, a quoted local part or a parameter
    ever reaches a hook or a log (aiosmtpd passes a\\rb@example.com on)."""
    caplog.set_level(logging.DEBUG)
    hooks = Recorder()
    bad_lines: list[bytes] = []
    for ch in [*CONTROL, b"\r", b"\n", b"\r\r", b"\n\n"]:
        bad_lines += [
            b"EHLO cli" + ch + b"ent.example",
            b"MAIL FROM:<a" + ch + b"b@example.com>",
            b"MAIL FROM:<ab@exam" + ch + b"ple.com>",
            b'MAIL FROM:<"a' + ch + b'b"@example.com>',
            b'MAIL FROM:<"a\\' + ch + b'b"@example.com>',
            b"MAIL FROM:<a@example.com> ENVID=x" + ch + b"y",
            b"RCPT TO:<a" + ch + b"b@example.net>",
            b"RCPT TO:<b@example.net> ORCPT=rfc822;a" + ch + b"b@example.net",
        ]
    async with serving(hooks, settings(max_errors=10_000)) as srv:
        client = await srv.hello()
        assert (await client.command("MAIL FROM:<ok@example.com>")).code == 250
        for line in bad_lines:
            reply = await client.command(line)
            if line.startswith(b"MAIL") and reply.code == 503:
                continue  # nested MAIL: refused before parsing, equally safe
            assert reply.code in (500, 501, 553, 555), (line, reply)
        assert (await client.command("RCPT TO:<ok@example.net>")).code == 250
    # Only the well-formed commands reached the hooks.
    assert [str(m.reverse_path) for m in hooks.mails] == ["ok@example.com"]
    assert [str(r.forward_path) for r in hooks.rcpts] == ["ok@example.net"]
    assert [h.domain for h in hooks.hellos] == ["client.example"]
    control = re.compile("[\x00-\x09\x0b-\x1f\x7f]")
    for text in _messages(caplog):
        assert not control.search(text), repr(text)


async def test_mail_with_control_character_rejected_outside_transaction() -> None:
    """RFC 5321 4.1.2: MAIL FROM:<a\\rb@example.com> is refused outright and
    never opens a transaction (the aiosmtpd case, on its own)."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        reply = await client.command(b"MAIL FROM:<a\rb@example.com>")
        rcpt = await client.command("RCPT TO:<b@example.net>")
    assert reply.code == 500
    assert rcpt.code == 503
    assert hooks.mails == []


# -- A property: whatever the client sends, the server stays well-behaved ----

_VOCABULARY = [
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"MAIL FROM:<a@example.com> BODY=BINARYMIME SIZE=10\r\n",
    b"RCPT TO:<b@example.net>\r\n",
    b"RCPT TO:<b@example.net> NOTIFY=SUCCESS\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN dXNlcg==\r\n",
    b"*\r\n",
    b".\r\n",
    b"\r\n.\r\n",
    b"..\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"x" * 600,
]

_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -]?.*")
_ENHANCED = re.compile(rb"([245])[0-9][0-9][ -]([245])\.[0-9]{1,3}\.[0-9]{1,3}(?: |$)")
_EHLO_KEYWORDS = re.compile(rb"250[ -][A-Z0-9][A-Z0-9-]*( .*)?")


async def _run_session(chunks: list[bytes]) -> tuple[bytes, Recorder]:
    hooks = Recorder(users={"user": "pw"})
    config = settings(
        auth_mechanisms=("PLAIN", "LOGIN"),
        auth_requires_tls=False,
        max_errors=10_000,
        max_message_size=2000,
    )
    a, b = socket.socketpair()
    server_stream = await anyio.abc.SocketStream.from_socket(a)
    client_stream = await anyio.abc.SocketStream.from_socket(b)
    received = bytearray()
    async with client_stream, anyio.create_task_group() as tg:
        tg.start_soon(interact, server_stream, server_stream, hooks, config)
        with anyio.fail_after(30):

            async def read_all() -> None:
                try:
                    while True:
                        received.extend(await client_stream.receive())
                except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    pass

            tg.start_soon(read_all)
            try:
                for chunk in chunks:
                    await client_stream.send(chunk)
                await client_stream.send_eof()
            except (anyio.BrokenResourceError, OSError):
                pass  # the server closed first (421, QUIT): fine
    return bytes(received), hooks


@given(
    chunks=st.lists(
        st.one_of(st.sampled_from(_VOCABULARY), st.binary(max_size=40)),
        max_size=25,
    )
)
async def test_property_any_input_gets_well_formed_replies(
    chunks: list[bytes],
) -> None:
    """RFC 5321 4.2 and RFC 2034 3, under arbitrary input: every reply line is
    well formed and carries an enhanced code of its class (except greeting
    and HELO/EHLO lines), no exception escapes or is logged as internal, and
    the session ends when the client closes."""
    logger = logging.getLogger("smtp_server")
    errors: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record)

    handler = Collect()
    logger.addHandler(handler)
    try:
        received, hooks = await _run_session(chunks)
    finally:
        logger.removeHandler(handler)
    assert errors == [], [r.getMessage() for r in errors]
    lines = received.split(b"\r\n")
    assert lines[-1] == b""  # nothing but complete lines
    for line in lines[:-1]:
        assert _REPLY_LINE.fullmatch(line), line
        if line.startswith((b"220 " + HOSTNAME.encode(), b"250-" + HOSTNAME.encode())):
            continue  # greeting, EHLO first line
        if line.startswith((b"250 " + HOSTNAME.encode(), b"354", b"334")):
            continue  # HELO reply, DATA and AUTH go-aheads
        if _ENHANCED.match(line) is None:
            assert _EHLO_KEYWORDS.fullmatch(line), line
        else:
            m = _ENHANCED.match(line)
            assert m is not None
            assert m[1] == m[2], line
    assert len(hooks.disconnected) == 1
