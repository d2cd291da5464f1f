"""AUTH (RFC 4954) with PLAIN (RFC 4616) and LOGIN, throttling, and secrecy."""

from __future__ import annotations

import base64
import logging
import smtplib
from typing import TYPE_CHECKING, Any

import aiosmtplib
import anyio
import pytest
from serverkit import MESSAGE, Recorder, serving, settings, transaction

from smtp_message import Reply
from smtp_testkit.clients import run_asyncio, run_swaks

if TYPE_CHECKING:
    from smtp_server import Credentials, Session, Settings

pytestmark = pytest.mark.anyio

PASSWORD = "S3cr3t-Pa55w0rd"
USERS = {"alice": PASSWORD}


def clear(**kwargs: Any) -> Settings:
    """AUTH offered in clear: these tests are about SASL, not TLS (RFC 4954 4
    lets a server offer it; the TLS requirement has its own test)."""
    return settings(auth_mechanisms=("PLAIN", "LOGIN"), auth_requires_tls=False, **kwargs)


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


PLAIN_OK = b64(f"\0alice\0{PASSWORD}")
PLAIN_BAD = b64("\0alice\0wrong")


@pytest.mark.parametrize(
    ("mechanism", "initial_response"),
    [("PLAIN", True), ("PLAIN", False), ("LOGIN", True), ("LOGIN", False)],
)
async def test_auth_smtplib(mechanism: str, initial_response: bool) -> None:
    """RFC 4954 4: PLAIN (RFC 4616 2) and LOGIN, with and without an initial
    response, as smtplib does them; the identity reaches the message hook."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear()) as srv:

        def send() -> tuple[int, bytes]:
            with smtplib.SMTP(srv.host, srv.port) as s:
                s.ehlo()
                s.user, s.password = "alice", PASSWORD
                method = s.auth_plain if mechanism == "PLAIN" else s.auth_login
                code, text = s.auth(mechanism, method, initial_response_ok=initial_response)
                s.sendmail("a@example.com", ["b@example.net"], MESSAGE)
                return code, text

        code, text = await anyio.to_thread.run_sync(send)
    assert (code, text) == (235, b"2.7.0 Authentication successful")
    [credentials] = hooks.auths
    assert credentials.mechanism == mechanism
    assert (credentials.username, credentials.password) == ("alice", PASSWORD)
    assert hooks.messages[0].session.auth_identity == "alice"


async def test_auth_aiosmtplib_login() -> None:
    """RFC 4954 4: aiosmtplib's login() succeeds and a wrong password fails 535."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear()) as srv:

        async def login() -> tuple[int, int]:
            bad = aiosmtplib.SMTP(hostname=srv.host, port=srv.port, timeout=30)
            async with bad:
                try:
                    await bad.login("alice", "wrong")
                except aiosmtplib.SMTPAuthenticationError as exc:
                    failed = exc.code
                else:  # pragma: no cover - the test fails below
                    failed = 0
            good = aiosmtplib.SMTP(hostname=srv.host, port=srv.port, timeout=30)
            async with good:
                response = await good.login("alice", PASSWORD)
            return failed, response.code

        failed, succeeded = await run_asyncio(login)
    assert (failed, succeeded) == (535, 235)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_swaks_in_clear_when_allowed(mechanism: str) -> None:
    """RFC 4954 4: with auth_requires_tls=False, AUTH works without TLS."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear()) as srv:
        result = await run_swaks(
            "--server", f"{srv.host}:{srv.port}",
            "--auth", mechanism,
            "--auth-user", "alice",
            "--auth-password", PASSWORD,
            "--from", "a@example.com",
            "--to", "b@example.net",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.server_lines()
    assert [c.mechanism for c in hooks.auths] == [mechanism]
    assert hooks.messages[0].session.auth_identity == "alice"


async def test_auth_refused_before_tls_by_default() -> None:
    """RFC 4954 4 / 6: by default AUTH is not offered in clear; trying it
    anyway gets 538 5.7.11 (encryption required)."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, settings(auth_mechanisms=("PLAIN",))) as srv:
        client = await srv.connect()
        ehlo = await client.command("EHLO client.example")
        reply = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert not any(b"AUTH" in line for line in ehlo.lines)
    assert (reply.code, reply.enhanced) == (538, "5.7.11")
    assert hooks.auths == []


async def test_auth_not_configured_or_after_helo() -> None:
    """RFC 4954 3: AUTH needs EHLO and configured mechanisms, else 502."""
    async with serving() as srv:
        client = await srv.hello()
        none = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    async with serving(Recorder(users=USERS), clear()) as srv:
        client = await srv.connect()
        await client.command("HELO client.example")
        helo = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert (none.code, none.enhanced) == (502, "5.5.1")
    assert (helo.code, helo.enhanced) == (502, "5.5.1")


async def test_auth_cancelled_with_star() -> None:
    """RFC 4954 4: a "*" response cancels the exchange; the server MUST
    answer 501, and a later AUTH may succeed."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear()) as srv:
        client = await srv.hello()
        plain = await client.command("AUTH PLAIN")
        cancel_plain = await client.command("*")
        login = await client.command("AUTH LOGIN")
        user = await client.command(b64("alice"))
        cancel_login = await client.command("*")
        ok = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert plain.lines == (b"334 ",)
    assert login.lines == (f"334 {b64('Username:')}".encode(),)
    assert user.lines == (f"334 {b64('Password:')}".encode(),)
    assert cancel_plain.code == 501
    assert cancel_login.code == 501
    assert ok.code == 235
    assert len(hooks.auths) == 1


async def test_auth_bad_base64_and_malformed_responses() -> None:
    """RFC 4954 4: undecodable base64 is 501 5.5.2, in the AUTH line or a
    response; RFC 4616 2: a PLAIN message without two NULs, or with an empty
    user name or password, is malformed (and an empty LOGIN password)."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear()) as srv:
        client = await srv.hello()
        initial = await client.command("AUTH PLAIN not*base64!")
        await client.command("AUTH PLAIN")
        response = await client.command("%%%")
        no_nul = await client.command(f"AUTH PLAIN {b64('alice-password')}")
        empty_user = await client.command("AUTH PLAIN " + b64("\0\0pw"))
        control = await client.command("AUTH PLAIN " + b64("\0al\rice\0pw"))
        empty_password = await client.command("AUTH PLAIN " + b64("\0alice\0"))
        await client.command("AUTH LOGIN " + b64("alice"))
        empty_login_password = await client.command("")  # an empty response
        unknown = await client.command("AUTH CRAM-MD5")
        still_fine = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert (initial.code, initial.enhanced) == (501, "5.5.2")
    assert (response.code, response.enhanced) == (501, "5.5.2")
    assert (no_nul.code, no_nul.enhanced) == (501, "5.5.2")
    assert empty_user.code == 501
    assert control.code == 501
    # RFC 4616 2 (passwd = 1*SAFE), and LOGIN alike.
    assert empty_password.code == 501
    assert empty_login_password.code == 501
    assert (unknown.code, unknown.enhanced) == (504, "5.5.4")
    assert still_fine.code == 235
    # Nothing malformed reached the hook.
    assert [c.username for c in hooks.auths] == ["alice"]


async def test_auth_overlong_response_ends_the_exchange() -> None:
    """RFC 4954 4 (responses up to 12288 octets) and RFC 5321 4.5.3.1.10: a
    longer response gets 500 5.5.6 and ends the exchange, so the next line
    is a command again, not a SASL response."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear()) as srv:
        client = await srv.hello()
        assert (await client.command("AUTH PLAIN")).code == 334
        too_long = await client.command(b"QUFB" * 4000)
        noop = await client.command("NOOP")
        ok = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert (too_long.code, too_long.enhanced) == (500, "5.5.6")
    assert str(noop) == "250 2.0.0 OK"
    assert ok.code == 235


async def test_auth_second_auth_and_auth_in_transaction_refused() -> None:
    """RFC 4954 4: after a successful AUTH, AUTH gets 503; AUTH is also not
    permitted during a mail transaction (503)."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear()) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        in_transaction = await client.command(f"AUTH PLAIN {PLAIN_OK}")
        await client.command("RSET")
        first = await client.command(f"AUTH PLAIN {PLAIN_OK}")
        second = await client.command(f"AUTH PLAIN {PLAIN_OK}")
        ehlo = await client.command("EHLO client.example")
    assert (in_transaction.code, in_transaction.enhanced) == (503, "5.5.1")
    assert first.code == 235
    assert (second.code, second.enhanced) == (503, "5.5.1")
    # Once authenticated, AUTH is no longer advertised.
    assert not any(b"AUTH" in line for line in ehlo.lines)
    assert len(hooks.auths) == 1


async def test_auth_authzid_granted_by_the_hook() -> None:
    """RFC 4616 2: PLAIN's authorization identity is handed to the hook, which
    grants it by returning it."""

    class Admin(Recorder):
        async def on_auth(self, session: Session, credentials: Credentials) -> bool | str:
            self.auths.append(credentials)
            if credentials.username == "alice" and credentials.authzid == "bob":
                return "bob"  # alice may act as bob
            return False

    hooks = Admin()
    async with serving(hooks, clear()) as srv:
        client = await srv.hello()
        reply = await client.command("AUTH PLAIN " + b64(f"bob\0alice\0{PASSWORD}"))
        await transaction(client)
    assert reply.code == 235
    assert hooks.auths[0].authzid == "bob"
    assert hooks.messages[0].session.auth_identity == "bob"


async def test_auth_password_alone_does_not_grant_another_identity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 4616 2: the server "MUST verify that the authentication identity
    is permitted to act as the authorization identity".  A hook that checks
    only the password (returns True) lets alice in as alice, never as bob:
    ``AUTH PLAIN bob<NUL>alice<NUL>pw`` is refused 535 5.7.8, and counts as
    a failed attempt."""

    class PasswordOnly(Recorder):
        async def on_auth(self, session: Session, credentials: Credentials) -> bool:
            self.auths.append(credentials)
            return credentials.username == "alice" and credentials.password == PASSWORD

    caplog.set_level(logging.INFO, logger="smtp_server")
    hooks = PasswordOnly()
    async with serving(hooks, clear()) as srv:
        client = await srv.hello()
        as_bob = await client.command("AUTH PLAIN " + b64(f"bob\0alice\0{PASSWORD}"))
        as_alice = await client.command("AUTH PLAIN " + b64(f"alice\0alice\0{PASSWORD}"))
        await transaction(client)
    assert (as_bob.code, as_bob.enhanced) == (535, "5.7.8")
    assert as_alice.code == 235
    assert hooks.messages[0].session.auth_identity == "alice"
    assert "AUTH PLAIN failed for 'alice' (1)" in caplog.text


async def test_auth_hook_reply_sent_as_is() -> None:
    """RFC 4954 6: a hook may answer 454 4.7.0 (temporary failure) itself."""

    class Down(Recorder):
        async def on_auth(self, session: Session, credentials: Credentials) -> bool | Reply:
            return Reply(454, "4.7.0", "Credentials store unavailable")

    async with serving(Down(), clear()) as srv:
        client = await srv.hello()
        reply = await client.command(f"AUTH PLAIN {PLAIN_OK}")
    assert str(reply) == "454 4.7.0 Credentials store unavailable"


@pytest.mark.parametrize("code", [235, 250, 334, 354])
async def test_auth_hook_positive_or_intermediate_reply_is_a_hook_error(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 4954 4 and 6: only the server says 235 (after its own checks) or
    334 (in its own SASL exchange).  A hook answering 2xx or 3xx is a bug of
    the hook: the client gets 454 4.7.0, the log says why, and the session
    goes on in step (the next command is a command, not a SASL response)."""

    class Confused(Recorder):
        async def on_auth(self, session: Session, credentials: Credentials) -> bool | Reply:
            return Reply(code, None, "confused")

    async with serving(Confused(), clear()) as srv:
        client = await srv.hello()
        reply = await client.command(f"AUTH PLAIN {PLAIN_OK}")
        noop = await client.command("NOOP")
        accepted = await transaction(client)
    assert (reply.code, reply.enhanced) == (454, "4.7.0")
    assert noop.code == 250
    assert accepted.code == 250
    assert "on_auth returned" in caplog.text
    assert "internal error" not in caplog.text


async def test_auth_required_for_mail() -> None:
    """RFC 4954 6 / RFC 6409 4.3: with require_auth, MAIL before AUTH is 530."""
    hooks = Recorder(users=USERS)
    async with serving(hooks, clear(require_auth=True)) as srv:
        client = await srv.hello()
        before = await client.command("MAIL FROM:<a@example.com>")
        await client.command(f"AUTH PLAIN {PLAIN_OK}")
        after = await transaction(client)
    assert (before.code, before.enhanced) == (530, "5.7.0")
    assert after.code == 250


async def test_auth_failures_throttled_then_421() -> None:
    """RFC 4954 4 ("limit the number of AUTH failures") and RFC 5321 3.8:
    each failure is answered later than the one before, and after
    max_auth_failures the server says 421 and closes."""
    hooks = Recorder(users=USERS)
    delay = 0.2
    config = clear(auth_failure_delay=delay, max_auth_failures=3)
    async with serving(hooks, config) as srv:
        client = await srv.hello()
        took = []
        replies = []
        for _ in range(3):
            start = anyio.current_time()
            replies.append(await client.command(f"AUTH PLAIN {PLAIN_BAD}"))
            took.append(anyio.current_time() - start)
        rest = await client.read_until_closed()
    assert [(r.code, r.enhanced) for r in replies] == [
        (535, "5.7.8"),
        (535, "5.7.8"),
        (421, "4.7.0"),
    ]
    assert rest == b""
    # The delay doubles: at least 0.2 s, 0.4 s, 0.8 s (sleeps never end
    # early; the 5% is clock granularity).  No upper bound: the machine is
    # shared and slow.
    for i, seconds in enumerate(took):
        assert seconds >= delay * 2**i * 0.95, took


async def test_auth_password_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """RFC 4954 15 (security): passwords never reach a log, at any level,
    whether AUTH fails, succeeds, is malformed, or the hook raises."""
    caplog.set_level(logging.DEBUG)

    class Flaky(Recorder):
        async def on_auth(self, session: Session, credentials: Credentials) -> bool | str | Reply:
            if credentials.username == "crash":
                raise RuntimeError(f"credentials store failed for {credentials!r}")
            return await super().on_auth(session, credentials)

    hooks = Flaky(users=USERS)
    async with serving(hooks, clear()) as srv:
        client = await srv.hello()
        await client.command("AUTH PLAIN " + b64(f"\0alice\0{PASSWORD}x"))
        await client.command("AUTH PLAIN " + b64(f"\0crash\0{PASSWORD}"))
        await client.command("AUTH LOGIN")
        await client.command(b64("alice"))
        await client.command(b64(PASSWORD + "\x01"))
        await client.command(f"AUTH PLAIN {PLAIN_OK}")
        await client.command("QUIT")
    records = caplog.records
    assert any(r.exc_info for r in records)  # the hook's failure was logged
    secrets = [PASSWORD, b64(PASSWORD), PLAIN_OK]
    for record in records:
        text = record.getMessage() + (
            logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        )
        for secret in secrets:
            assert secret not in text, text
