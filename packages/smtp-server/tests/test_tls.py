"""STARTTLS (RFC 3207) and implicit TLS (RFC 8314), with trustme certificates."""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import time

import aiosmtplib
import anyio
import pytest
from serverkit import MESSAGE, Recorder, serving, settings, transaction, wait_for

from smtp_testkit.clients import RawClient, run_asyncio

pytestmark = pytest.mark.anyio

INJECTED = b"RSET\r\nMAIL FROM:<evil@attacker.example>\r\n"


def _keywords(lines: tuple[bytes, ...]) -> list[str]:
    return [line[4:].decode() for line in lines[1:]]


async def test_starttls_smtplib_then_auth_and_mail(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """RFC 3207 4 and 4.2, RFC 4954 4: STARTTLS, a fresh EHLO, AUTH, a message.

    Before TLS the server offers STARTTLS and no AUTH; after, AUTH and no
    STARTTLS (the extension list changes with the session's state).
    """
    hooks = Recorder(users={"alice": "wonderland"})
    config = settings(ssl_context=tls_server_context, auth_mechanisms=("PLAIN", "LOGIN"))
    async with serving(hooks, config) as srv:

        def send() -> tuple[dict[str, str], dict[str, str]]:
            with smtplib.SMTP(srv.host, srv.port) as s:
                s.ehlo()
                before = dict(s.esmtp_features)
                s.starttls(context=tls_client_context)
                s.ehlo()
                after = dict(s.esmtp_features)
                s.login("alice", "wonderland")
                s.sendmail("a@example.com", ["b@example.net"], MESSAGE)
            return before, after

        before, after = await anyio.to_thread.run_sync(send)
    assert "starttls" in before
    assert "auth" not in before
    assert "starttls" not in after
    assert after["auth"].split() == ["PLAIN", "LOGIN"]
    [received] = hooks.messages
    assert received.body == MESSAGE
    assert received.session.tls is not None
    assert received.session.tls.version in ("TLSv1.2", "TLSv1.3")
    assert received.session.tls.cipher
    assert received.session.auth_identity == "alice"
    # Two EHLOs reached the hook: one in clear, one under TLS.
    assert len(hooks.hellos) == 2


async def test_starttls_aiosmtplib(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """RFC 3207 4: aiosmtplib upgrades with STARTTLS and delivers."""
    hooks = Recorder()
    async with serving(hooks, settings(ssl_context=tls_server_context)) as srv:

        async def send() -> None:
            await aiosmtplib.send(
                MESSAGE,
                sender="a@example.com",
                recipients=["b@example.net"],
                hostname="localhost",
                port=srv.port,
                start_tls=True,
                tls_context=tls_client_context,
                timeout=30,
            )

        await run_asyncio(send)
    [received] = hooks.messages
    assert received.session.tls is not None
    assert received.body == MESSAGE


async def test_starttls_discards_pipelined_commands(
    tls_server_context: ssl.SSLContext,
    tls_client_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CVE-2011-0411 (and aiosmtpd CVE-2024-34083): commands sent in the same
    write as STARTTLS, before the handshake, are discarded, never acted on."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    hooks = Recorder()
    async with serving(hooks, settings(ssl_context=tls_server_context)) as srv:
        client = await srv.hello()
        await client.send(b"STARTTLS\r\n" + INJECTED)
        ready = await client.read_reply()
        assert str(ready) == "220 2.0.0 Ready to start TLS"
        # No plaintext reply to the injected commands came before the
        # handshake (start_tls fails on unread plaintext), and none after:
        await client.start_tls(tls_client_context)
        ehlo = await client.command("EHLO client.example")
        # Had the injected MAIL been obeyed, RCPT would be accepted now.
        rcpt = await client.command("RCPT TO:<victim@example.net>")
        quit_ = await client.command("QUIT")
    assert ehlo.code == 250
    assert ehlo.lines[0] == b"250-mx.test.example Hello client.example"
    assert (rcpt.code, rcpt.enhanced) == (503, "5.5.1")
    assert str(quit_) == "221 2.0.0 Bye"
    assert hooks.mails == []
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"discarded {len(INJECTED)} octets" in m for m in messages), messages
    # What was discarded is not logged.
    assert not any("attacker" in m for m in messages)


async def test_starttls_plaintext_after_the_go_ahead_is_never_a_command(
    tls_server_context: ssl.SSLContext,
) -> None:
    """CVE-2011-0411, the other timing: commands sent in clear after the 220
    but before the handshake reach the TLS layer, not the SMTP one.  They
    fail the handshake; the session ends without another reply in clear
    and no command is obeyed."""
    hooks = Recorder()
    async with serving(hooks, settings(ssl_context=tls_server_context)) as srv:
        client = await srv.hello()
        ready = await client.command("STARTTLS")
        await client.send(INJECTED + b"RCPT TO:<victim@example.net>\r\n")
        rest = await client.read_until_closed()
        await wait_for(lambda: hooks.disconnected)
    assert ready.code == 220
    # Perhaps a TLS alert; never an SMTP reply.
    assert not re.search(rb"(^|\r\n)[2-5][0-9][0-9][ -]", rest), rest
    assert hooks.mails == []
    assert hooks.disconnected[0].tls is None


async def test_starttls_resets_the_session(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """RFC 3207 4.2: after the handshake the server forgets what it knew:
    EHLO is required again, and an AUTH done in clear no longer counts."""
    hooks = Recorder(users={"alice": "pw"})
    config = settings(
        ssl_context=tls_server_context,
        auth_mechanisms=("PLAIN",),
        auth_requires_tls=False,
    )
    async with serving(hooks, config) as srv:
        client = await srv.hello()
        auth = await client.command("AUTH PLAIN AGFsaWNlAHB3")  # \0alice\0pw
        assert auth.code == 235
        assert (await client.command("STARTTLS")).code == 220
        await client.start_tls(tls_client_context)
        mail_first = await client.command("MAIL FROM:<a@example.com>")
        ehlo = await client.command("EHLO client.example")
        again = await client.command("STARTTLS")
        # Authenticated before TLS: after it, AUTH is allowed (not 503).
        auth_again = await client.command("AUTH PLAIN AGFsaWNlAHB3")
        accepted = await transaction(client)
    assert (mail_first.code, mail_first.enhanced) == (503, "5.5.1")
    assert "STARTTLS" not in _keywords(ehlo.lines)
    assert "AUTH PLAIN" in _keywords(ehlo.lines)
    assert again.code == 503
    assert auth_again.code == 235
    assert accepted.code == 250
    [received] = hooks.messages
    assert received.session.tls is not None
    assert len(hooks.auths) == 2


async def test_starttls_refused_when_not_offered_or_in_transaction(
    tls_server_context: ssl.SSLContext,
) -> None:
    """RFC 3207 4: STARTTLS without a certificate is 502 (not offered); inside a
    mail transaction it is out of sequence (503), and the transaction stands."""
    async with serving() as srv:
        client = await srv.hello()
        without = await client.command("STARTTLS")
    async with serving(config=settings(ssl_context=tls_server_context)) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        inside = await client.command("STARTTLS")
        rcpt = await client.command("RCPT TO:<b@example.net>")
        with_args = await client.command("STARTTLS now")
    assert (without.code, without.enhanced) == (502, "5.5.1")
    assert (inside.code, inside.enhanced) == (503, "5.5.1")
    assert rcpt.code == 250
    assert with_args.code == 501


async def test_starttls_failed_handshake_closes_only_that_session(
    tls_server_context: ssl.SSLContext,
) -> None:
    """RFC 3207 4.1: a handshake that fails ends the session; the server goes on."""
    hooks = Recorder()
    async with serving(hooks, settings(ssl_context=tls_server_context)) as srv:
        client = await srv.hello()
        assert (await client.command("STARTTLS")).code == 220
        await client.send(b"this is not a TLS ClientHello\r\n" * 4)
        assert await client.read_until_closed() == b""
        other = await srv.hello()
        accepted = await transaction(other)
    assert accepted.code == 250
    assert len(hooks.messages) == 1


async def test_starttls_require_tls_refuses_mail_in_clear(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """RFC 3207 4: a server may require TLS: MAIL in clear gets 530 5.7.0."""
    hooks = Recorder()
    config = settings(ssl_context=tls_server_context, require_tls=True)
    async with serving(hooks, config) as srv:
        client = await srv.hello()
        clear = await client.command("MAIL FROM:<a@example.com>")
        await client.command("STARTTLS")
        await client.start_tls(tls_client_context)
        await client.command("EHLO client.example")
        accepted = await transaction(client)
    assert (clear.code, clear.enhanced) == (530, "5.7.0")
    assert accepted.code == 250
    assert len(hooks.messages) == 1


async def test_implicit_tls_smtplib(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """RFC 8314 3.3: TLS from the first octet; no STARTTLS offered, AUTH is."""
    hooks = Recorder(users={"bob": "secret"})
    config = settings(
        ssl_context=tls_server_context,
        implicit_tls=True,
        auth_mechanisms=("PLAIN",),
    )
    async with serving(hooks, config) as srv:

        def send() -> dict[str, str]:
            with smtplib.SMTP_SSL(srv.host, srv.port, context=tls_client_context) as s:
                s.ehlo()
                features = dict(s.esmtp_features)
                s.login("bob", "secret")
                s.sendmail("a@example.com", ["b@example.net"], MESSAGE)
            return features

        features = await anyio.to_thread.run_sync(send)
    assert "starttls" not in features
    assert features["auth"].strip() == "PLAIN"
    [received] = hooks.messages
    assert received.session.tls is not None
    assert received.session.auth_identity == "bob"
    # The connect hook already saw the TLS session.
    assert hooks.connects[0].tls is not None


async def test_implicit_tls_aiosmtplib(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """RFC 8314 3.3: aiosmtplib with use_tls delivers over implicit TLS."""
    hooks = Recorder()
    config = settings(ssl_context=tls_server_context, implicit_tls=True)
    async with serving(hooks, config) as srv:

        async def send() -> None:
            await aiosmtplib.send(
                MESSAGE,
                sender="a@example.com",
                recipients=["b@example.net"],
                hostname="127.0.0.1",
                port=srv.port,
                use_tls=True,
                tls_context=tls_client_context,
                timeout=30,
            )

        await run_asyncio(send)
    assert len(hooks.messages) == 1


async def test_implicit_tls_plaintext_client_gets_no_greeting(
    tls_server_context: ssl.SSLContext,
) -> None:
    """RFC 8314 3.3: on an implicit-TLS port nothing is sent in clear."""
    hooks = Recorder()
    config = settings(ssl_context=tls_server_context, implicit_tls=True)
    async with serving(hooks, config) as srv:
        client = await RawClient.connect(srv.host, srv.port)
        async with client:
            await client.send(b"EHLO client.example\r\n")
            received = await client.read_until_closed()
    assert b"220" not in received
    assert b"EHLO" not in received
    assert hooks.connects == []


def _tls_session(
    host: str, port: int, context: ssl.SSLContext, implicit: bool, rcvbuf: int | None = None
) -> ssl.SSLSocket:
    """A client socket under TLS, past the greeting (implicit) or STARTTLS."""
    raw = socket.socket()
    if rcvbuf is not None:  # a slow reader: the server's replies queue up
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(10)
    raw.connect((host, port))
    if not implicit:
        for command in (None, b"EHLO c.example\r\n", b"STARTTLS\r\n"):
            if command:
                raw.sendall(command)
            reply = b""
            while not re.search(rb"(^|\n)\d{3} [^\n]*\n", reply):
                reply += raw.recv(4096)
    # suppress_ragged_eofs=False: a close without close_notify is an error.
    tls = context.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    if implicit:
        assert tls.recv(4096).startswith(b"220 ")
    return tls


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "starttls"])
async def test_tls_session_ends_with_close_notify(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext, implicit: bool
) -> None:
    """RFC 8446 6.1: each side "MUST send a close_notify alert before closing
    its write side"; after the 221 (RFC 5321 4.1.1.10) the client reads a
    clean TLS end, not a truncation (UNEXPECTED_EOF_WHILE_READING)."""
    config = settings(ssl_context=tls_server_context, implicit_tls=implicit)
    async with serving(Recorder(), config) as srv:

        def session() -> bytes:
            with _tls_session(srv.host, srv.port, tls_client_context, implicit) as tls:
                tls.sendall(b"EHLO c.example\r\nQUIT\r\n")
                received = b""
                while chunk := tls.recv(4096):  # b"" only at close_notify
                    received += chunk
                return received

        received = await anyio.to_thread.run_sync(session)
    assert received.endswith(b"221 2.0.0 Bye\r\n")


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "starttls"])
async def test_tls_replies_survive_input_after_quit_to_a_slow_reader(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext, implicit: bool
) -> None:
    """RFC 5321 4.1.1.10 and RFC 2920: a client pipelines 40 EHLOs and QUIT,
    sends one more command, and reads late through a small window.  The
    server must not close on that unread input: the reset it makes would
    destroy the replies still queued, the 221 with them.  Under TLS the
    server says close_notify and then drains, as it half-closes in clear."""
    config = settings(ssl_context=tls_server_context, implicit_tls=implicit)
    async with serving(Recorder(), config) as srv:

        def session() -> bytes:
            tls = _tls_session(srv.host, srv.port, tls_client_context, implicit, rcvbuf=4096)
            with tls:
                tls.sendall(b"EHLO c.example\r\n" * 40 + b"QUIT\r\n")
                time.sleep(0.05)
                tls.sendall(b"NOOP\r\n")
                time.sleep(0.3)  # the server has answered and ended by now
                received = b""
                try:
                    while chunk := tls.recv(65536):
                        received += chunk
                except (ssl.SSLError, OSError) as exc:
                    received += f"<{type(exc).__name__}>".encode()
                return received

        received = await anyio.to_thread.run_sync(session)
    assert received.count(b"250 ") == 40, received[-200:]
    assert received.endswith(b"221 2.0.0 Bye\r\n"), received[-200:]


def test_settings_refuse_tls_offers_without_a_context() -> None:
    """RFC 3207 4 and RFC 8314 3.3: STARTTLS (or implicit TLS) without a TLS
    context cannot work, so such settings are refused when built, rather
    than advertising STARTTLS and failing the session after its 220."""
    with pytest.raises(ValueError, match="ssl_context"):
        settings(starttls=True)
    with pytest.raises(ValueError, match="ssl_context"):
        settings(implicit_tls=True)
