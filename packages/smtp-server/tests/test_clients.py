"""Real clients against a real server: smtplib, aiosmtplib and swaks."""

from __future__ import annotations

import os
import smtplib
from email.message import EmailMessage
from typing import TYPE_CHECKING

import aiosmtplib
import anyio
import pytest
from serverkit import MESSAGE, Recorder, serving, settings, wait_for

from smtp_message import MailFrom, RcptTo, Reply
from smtp_testkit.clients import run_asyncio, run_swaks

if TYPE_CHECKING:
    from pathlib import Path

    from smtp_server import Session

pytestmark = pytest.mark.anyio


async def test_smtplib_sendmail_delivers_envelope_and_body() -> None:
    """RFC 5321 3.3: a mail transaction by Python's smtplib reaches the hook whole."""
    hooks = Recorder()
    async with serving(hooks) as srv:

        def send() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP(srv.host, srv.port, local_hostname="client.example") as s:
                return s.sendmail("a@example.com", ["b@example.net", "c@example.org"], MESSAGE)

        refused = await anyio.to_thread.run_sync(send)
    assert refused == {}
    [received] = hooks.messages
    env = received.envelope
    assert str(env.sender) == "a@example.com"
    assert [str(r) for r in env.recipient_addresses] == [
        "b@example.net",
        "c@example.org",
    ]
    assert env.body_command == "DATA"
    assert received.body == MESSAGE
    # smtplib declares SIZE because the server advertises it (RFC 1870).
    assert env.mail_from.params.size == len(MESSAGE)
    assert received.session.hello is not None
    assert received.session.hello.domain == "client.example"
    assert received.session.peer is not None
    assert received.session.peer[0] == "127.0.0.1"


async def test_smtplib_several_messages_in_one_session() -> None:
    """RFC 5321 3.3: after a transaction the session accepts the next one."""
    hooks = Recorder()
    async with serving(hooks) as srv:

        def send() -> None:
            with smtplib.SMTP(srv.host, srv.port) as s:
                for i in range(3):
                    s.sendmail("a@example.com", [f"r{i}@example.net"], MESSAGE)
                s.rset()
                assert s.noop()[0] == 250

        await anyio.to_thread.run_sync(send)
        await wait_for(lambda: hooks.disconnected)
    assert [str(m.envelope.recipient_addresses[0]) for m in hooks.messages] == [
        "r0@example.net",
        "r1@example.net",
        "r2@example.net",
    ]
    # One session, which counted three accepted messages.
    assert len({id(m.session) for m in hooks.messages}) == 1
    assert hooks.disconnected[0].messages == 3


async def test_smtplib_send_message_dot_stuffing_round_trips() -> None:
    """RFC 5321 4.5.2: lines starting with a dot arrive unstuffed, as written."""
    hooks = Recorder()
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.net"
    msg["Subject"] = "dots"
    msg.set_content(".leading dot\n..two dots\n.\nend\n")
    async with serving(hooks) as srv:

        def send() -> None:
            with smtplib.SMTP(srv.host, srv.port) as s:
                s.send_message(msg)

        await anyio.to_thread.run_sync(send)
    [received] = hooks.messages
    assert b"\r\n.leading dot\r\n..two dots\r\n.\r\nend\r\n" in received.body


async def test_aiosmtplib_send_delivers() -> None:
    """RFC 5321 3.3 and RFC 2920: aiosmtplib (which pipelines) delivers a message."""
    hooks = Recorder()
    async with serving(hooks) as srv:

        async def send() -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
            return await aiosmtplib.send(
                MESSAGE,
                sender="a@example.com",
                recipients=["b@example.net", "c@example.net"],
                hostname=srv.host,
                port=srv.port,
                start_tls=False,
                timeout=30,
            )

        errors, response = await run_asyncio(send)
    assert errors == {}
    assert response.startswith("2.0.0")
    [received] = hooks.messages
    assert received.body == MESSAGE
    assert len(received.envelope.recipients) == 2


async def test_aiosmtplib_reports_refused_recipient() -> None:
    """RFC 5321 4.1.1.3: a refused recipient is reported, the others served."""

    class Refuse(Recorder):
        async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
            if command.forward_path.local_part == "nobody":
                return Reply(550, "5.1.1", "No such user")
            return await super().on_rcpt(session, command)

    hooks = Refuse()
    async with serving(hooks) as srv:

        async def send() -> dict[str, aiosmtplib.SMTPResponse]:
            client = aiosmtplib.SMTP(hostname=srv.host, port=srv.port, timeout=30)
            async with client:
                errors, _ = await client.sendmail(
                    "a@example.com", ["nobody@example.net", "b@example.net"], MESSAGE
                )
            return dict(errors)

        errors = await run_asyncio(send)
    assert list(errors) == ["nobody@example.net"]
    assert "5.1.1" in str(errors["nobody@example.net"])
    [received] = hooks.messages
    assert [str(r) for r in received.envelope.recipient_addresses] == ["b@example.net"]


async def test_swaks_delivers() -> None:
    """RFC 5321 3.3: swaks sends a message; the hook gets headers and body."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        result = await run_swaks(
            "--server", f"{srv.host}:{srv.port}",
            "--helo", "swaks.example",
            "--from", "a@example.com",
            "--to", "b@example.net,c@example.net",
            "--header", "Subject: from swaks",
            "--body", "Hello from swaks.",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [received] = hooks.messages
    assert received.envelope.mail_from.reverse_path is not None
    assert [str(r) for r in received.envelope.recipient_addresses] == [
        "b@example.net",
        "c@example.net",
    ]
    assert b"Subject: from swaks\r\n" in received.body
    assert b"\r\n\r\nHello from swaks.\r\n" in received.body
    assert hooks.hellos[0].domain == "swaks.example"
    assert any(line.startswith("250 2.0.0") for line in result.server_lines())


async def test_swaks_pipelining() -> None:
    """RFC 2920: swaks --pipeline sends MAIL, RCPTs and DATA in one group."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        result = await run_swaks(
            "--server", f"{srv.host}:{srv.port}",
            "--pipeline",
            "--from", "a@example.com",
            "--to", "b@example.net,c@example.net",
            "--body", "pipelined",
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # swaks refuses --pipeline unless the server advertises PIPELINING.
    assert "PIPELINING" in result.stdout
    [received] = hooks.messages
    assert len(received.envelope.recipients) == 2
    assert b"pipelined" in received.body


async def test_swaks_sees_a_refused_sender() -> None:
    """RFC 5321 4.2.5: a 550 to MAIL makes swaks fail, and nothing is accepted."""

    class RefuseSender(Recorder):
        async def on_mail(self, session: Session, command: MailFrom) -> Reply | None:
            return Reply(550, "5.7.1", "Sender refused by policy")

    hooks = RefuseSender()
    async with serving(hooks, settings()) as srv:
        result = await run_swaks(
            "--server", f"{srv.host}:{srv.port}",
            "--from", "spam@example.com",
            "--to", "b@example.net",
        )  # fmt: skip
    assert result.returncode != 0
    assert "550 5.7.1 Sender refused by policy" in result.server_lines()
    assert hooks.messages == []


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [("true", pytest.fail.Exception), (None, pytest.skip.Exception)],
    ids=["ci", "local"],
)
async def test_swaks_missing_fails_under_ci(
    ci: str | None, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A test that needs swaks fails, never skips, when swaks is missing
    under CI=true (a skip would hide a missing install step in .ci/run);
    on a developer's machine it skips."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(os.path, "exists", lambda _path: False)  # not in /usr/sbin either
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="swaks is not installed"):
        await run_swaks("--version")
