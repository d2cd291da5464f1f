"""The ESMTP extensions, each shown over a real socket.

PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
(RFC 6531), ENHANCEDSTATUSCODES (RFC 2034), CHUNKING and BINARYMIME
(RFC 3030), DSN (RFC 3461).
"""

from __future__ import annotations

import base64
import smtplib
from typing import TYPE_CHECKING

import anyio
import pytest
from serverkit import (
    MESSAGE,
    Recorder,
    assert_enhanced,
    bdat,
    serving,
    settings,
    transaction,
    wait_for,
)

from smtp_message import Notify, OriginalRecipient, RcptTo, Reply, Ret

if TYPE_CHECKING:
    import ssl

    from smtp_server import Session
    from smtp_testkit.clients import RawReply

pytestmark = pytest.mark.anyio


def _keywords(reply: RawReply) -> list[str]:
    return [line[4:].decode() for line in reply.lines[1:]]


async def test_ehlo_advertises_every_extension() -> None:
    """RFC 5321 4.1.1.1: the EHLO reply lists the extensions, one per line."""
    async with serving(config=settings(max_message_size=1000)) as srv:
        client = await srv.connect()
        reply = await client.command("EHLO client.example")
    assert reply.code == 250
    assert reply.lines[0] == b"250-mx.test.example Hello client.example"
    assert _keywords(reply) == [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
        "DSN",
    ]


# -- PIPELINING -----------------------------------------------------------------


async def test_pipelining_whole_transaction_in_one_write() -> None:
    """RFC 2920 3.1: commands sent in one write are answered in order."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.connect()
        await client.send(
            b"EHLO client.example\r\n"
            b"MAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.net>\r\n"
            b"RCPT TO:<not an address>\r\n"
            b"RCPT TO:<c@example.net>\r\n"
            b"DATA\r\n" + MESSAGE + b".\r\n"
            b"NOOP\r\n"
            b"QUIT\r\n"
        )
        replies = await client.read_replies(8)
        rest = await client.read_until_closed()
    assert [r.code for r in replies] == [250, 250, 250, 501, 250, 354, 250, 250]
    # Not one reply more: the connection closes after the 221.
    assert rest == b"221 2.0.0 Bye\r\n"
    [received] = hooks.messages
    assert received.body == MESSAGE
    assert [str(r) for r in received.envelope.recipient_addresses] == [
        "b@example.net",
        "c@example.net",
    ]


async def test_pipelining_chunked_transaction_in_one_write() -> None:
    """RFC 3030 4.2 and RFC 2920: BDAT needs no wait, so everything goes at once."""
    hooks = Recorder()
    body = b"Subject: chunks\r\n\r\npart one, "
    body2 = b"part two\r\n"
    async with serving(hooks) as srv:
        client = await srv.connect()
        await client.send(
            b"EHLO client.example\r\nMAIL FROM:<a@example.com>\r\n"
            b"RCPT TO:<b@example.net>\r\n"
            + f"BDAT {len(body)}\r\n".encode()
            + body
            + f"BDAT {len(body2)} LAST\r\n".encode()
            + body2
            + b"MAIL FROM:<c@example.com>\r\nRCPT TO:<d@example.net>\r\n"
            b"BDAT 0 LAST\r\nQUIT\r\n"
        )
        replies = await client.read_replies(9)
        assert await client.read_until_closed() == b""
    assert [(r.code, r.enhanced) for r in replies] == [
        (250, None),
        (250, "2.1.0"),
        (250, "2.1.5"),
        (250, "2.0.0"),
        (250, "2.0.0"),
        (250, "2.1.0"),
        (250, "2.1.5"),
        (250, "2.0.0"),
        (221, "2.0.0"),
    ]
    assert replies[3].text == f"2.0.0 {len(body)} octets received"
    assert [m.body for m in hooks.messages] == [body + body2, b""]


async def test_pipelining_replies_in_order_when_hooks_are_slow() -> None:
    """RFC 2920 3.1: a slow hook delays replies but never reorders them."""

    class Slow(Recorder):
        async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
            await anyio.sleep(0.01 * (3 - len(self.rcpts)))
            await super().on_rcpt(session, command)
            if command.forward_path.local_part == "refuse":
                return Reply(550, "5.1.1", "Unknown user refuse")
            return None

    hooks = Slow()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<one@example.net>\r\n"
            b"RCPT TO:<refuse@example.net>\r\nRCPT TO:<three@example.net>\r\n"
            b"RSET\r\n"
        )
        replies = await client.read_replies(5)
    assert [str(r) for r in replies] == [
        "250 2.1.0 Sender OK",
        "250 2.1.5 Recipient OK",
        "550 5.1.1 Unknown user refuse",
        "250 2.1.5 Recipient OK",
        "250 2.0.0 OK",
    ]


# -- SIZE ---------------------------------------------------------------------


async def test_size_parameter_over_limit_refused() -> None:
    """RFC 1870 6.1: MAIL with SIZE= over the limit gets 552 5.3.4."""
    hooks = Recorder()
    async with serving(hooks, settings(max_message_size=1000)) as srv:
        client = await srv.hello()
        over = await client.command("MAIL FROM:<a@example.com> SIZE=1001")
        at = await client.command("MAIL FROM:<a@example.com> SIZE=1000")
    assert over.code == 552
    assert over.enhanced == "5.3.4"
    assert at.code == 250
    # The refused MAIL never reached the hook.
    assert [m.params.size for m in hooks.mails] == [1000]


async def test_size_without_limit_advertised_bare() -> None:
    """RFC 1870 4: "SIZE" with no number means no fixed limit."""
    async with serving(config=settings(max_message_size=None)) as srv:
        client = await srv.connect()
        reply = await client.command("EHLO client.example")
        mail = await client.command(f"MAIL FROM:<a@example.com> SIZE={10**15}")
    assert "SIZE" in _keywords(reply)
    assert mail.code == 250


@pytest.mark.parametrize("command", ["DATA", "BDAT"])
async def test_size_actual_octets_over_limit_refused(command: str) -> None:
    """RFC 1870 6.3: a message whose octets exceed the limit gets 552 5.3.4.

    The declared SIZE is honest-looking (or absent); the octets decide.  The
    message is not accepted and the session stays usable.
    """
    limit = 1000
    hooks = Recorder()
    body = b"x" * 998 + b"\r\n"  # exactly the limit
    async with serving(hooks, settings(max_message_size=limit)) as srv:
        client = await srv.hello()
        assert (await client.command("MAIL FROM:<a@example.com> SIZE=100")).code == 250
        assert (await client.command("RCPT TO:<b@example.net>")).code == 250
        if command == "DATA":
            assert (await client.command("DATA")).code == 354
            await client.send(b"y" + body + b".\r\n")
            over = await client.read_reply()
        else:
            # Two chunks: each small, together one octet too many.
            assert (await bdat(client, body)).code == 250
            over = await bdat(client, b"y", last=True)
        # At exactly the limit the message is accepted.
        accepted = await transaction(client, body)
    assert (over.code, over.enhanced) == (552, "5.3.4")
    assert accepted.code == 250
    assert [m.body for m in hooks.messages] == [body]
    assert len(hooks.aborted) == 1


async def test_size_huge_bdat_declaration_refused_and_skipped() -> None:
    """RFC 3030 2 / RFC 1870: a chunk declared over the limit is refused; its
    octets are read and dropped, never parsed as commands."""
    hooks = Recorder()
    async with serving(hooks, settings(max_message_size=100)) as srv:
        client = await srv.hello()
        await client.send(
            b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
            b"BDAT 120 LAST\r\n" + b"MAIL FROM:<evil@example.com>\r\n" * 4 + b"NOOP\r\n"
        )
        replies = await client.read_replies(4)
    assert [(r.code, r.enhanced) for r in replies] == [
        (250, "2.1.0"),
        (250, "2.1.5"),
        (552, "5.3.4"),
        (250, "2.0.0"),
    ]
    assert len(hooks.mails) == 1


# -- 8BITMIME ---------------------------------------------------------------------


async def test_8bitmime_body_delivered_verbatim() -> None:
    """RFC 6152 3: with BODY=8BITMIME, 8-bit octets in the body arrive unchanged."""
    hooks = Recorder()
    body = "Subject: caf\u00e9\r\n\r\nna\u00efve r\u00e9sum\u00e9 \u20ac\r\n".encode()
    async with serving(hooks) as srv:

        def send() -> None:
            with smtplib.SMTP(srv.host, srv.port) as s:
                s.sendmail(
                    "a@example.com",
                    ["b@example.net"],
                    body,
                    mail_options=["BODY=8BITMIME"],
                )

        await anyio.to_thread.run_sync(send)
    [received] = hooks.messages
    assert received.body == body
    assert received.envelope.mail_from.params.body is not None
    assert received.envelope.mail_from.params.body.value == "8BITMIME"


async def test_8bitmime_not_offered_parameter_refused() -> None:
    """RFC 6152 / RFC 5321 4.1.1.11: BODY=8BITMIME not advertised gets 555."""
    async with serving(config=settings(eightbitmime=False)) as srv:
        client = await srv.connect()
        ehlo = await client.command("EHLO client.example")
        reply = await client.command("MAIL FROM:<a@example.com> BODY=8BITMIME")
        seven = await client.command("MAIL FROM:<a@example.com> BODY=7BIT")
    assert "8BITMIME" not in _keywords(ehlo)
    assert (reply.code, reply.enhanced) == (555, "5.5.4")
    assert seven.code == 250


async def test_parameters_after_helo_refused() -> None:
    """RFC 5321 4.1.1.11: ESMTP parameters need EHLO; after HELO they get 555."""
    async with serving() as srv:
        client = await srv.connect()
        helo = await client.command("HELO client.example")
        reply = await client.command("MAIL FROM:<a@example.com> BODY=8BITMIME")
        plain = await client.command("MAIL FROM:<a@example.com>")
    assert helo.lines == (b"250 mx.test.example Hello client.example",)
    assert reply.code == 555
    assert plain.code == 250


# -- SMTPUTF8 -----------------------------------------------------------------


async def test_smtputf8_addresses_with_parameter() -> None:
    """RFC 6531 3.4: UTF-8 addresses are accepted with the SMTPUTF8 parameter."""
    hooks = Recorder()
    sender = "\u7528\u6237@\u4f8b\u5b50.\u5e7f\u544a"
    rcpt = (
        "\u03b4\u03bf\u03ba\u03b9\u03bc\u03ae@"
        "\u03c0\u03b1\u03c1\u03ac\u03b4\u03b5\u03b9\u03b3\u03bc\u03b1.gr"
    )
    body = "Subject: \u00fcnic\u00f6de\r\n\r\nbody\r\n".encode()
    async with serving(hooks) as srv:

        def send() -> None:
            with smtplib.SMTP(srv.host, srv.port) as s:
                s.sendmail(sender, [rcpt], body, mail_options=["SMTPUTF8"])

        await anyio.to_thread.run_sync(send)
    [received] = hooks.messages
    assert received.envelope.mail_from.params.smtputf8
    assert str(received.envelope.sender) == sender
    assert [str(r) for r in received.envelope.recipient_addresses] == [rcpt]
    assert received.body == body


async def test_smtputf8_addresses_without_parameter_refused() -> None:
    """RFC 6531 3.7.4.1: a UTF-8 address without SMTPUTF8 gets 553 5.6.7."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        mail = await client.command("MAIL FROM:<j\u00f6rg@example.com>")
        ok = await client.command("MAIL FROM:<a@example.com>")
        rcpt = await client.command("RCPT TO:<j\u00f6rg@example.net>")
        rcpt_domain = await client.command("RCPT TO:<b@\u00e9xample.net>")
    assert (mail.code, mail.enhanced) == (553, "5.6.7")
    assert ok.code == 250
    assert (rcpt.code, rcpt.enhanced) == (553, "5.6.7")
    assert (rcpt_domain.code, rcpt_domain.enhanced) == (553, "5.6.7")
    assert [str(m.reverse_path) for m in hooks.mails] == ["a@example.com"]
    assert hooks.rcpts == []


async def test_smtputf8_not_offered_parameter_refused() -> None:
    """RFC 6531 3.4 / RFC 5321 4.1.1.11: SMTPUTF8 not advertised gets 555."""
    async with serving(config=settings(smtputf8=False)) as srv:
        client = await srv.connect()
        ehlo = await client.command("EHLO client.example")
        reply = await client.command("MAIL FROM:<j\u00f6rg@example.com> SMTPUTF8")
    assert "SMTPUTF8" not in _keywords(ehlo)
    assert reply.code == 555


# -- ENHANCEDSTATUSCODES ----------------------------------------------------------


async def test_enhanced_status_codes_on_every_line_of_every_reply() -> None:
    """RFC 2034 3: every 2xx/4xx/5xx reply line, except the greeting and the
    HELO/EHLO replies, starts with an enhanced code of the same class."""

    class Multiline(Recorder):
        async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
            if command.forward_path.local_part == "multi":
                # No enhanced code from the hook: the server adds one.
                return Reply(550, None, ["first line", "second line", "third"])
            if command.forward_path.local_part == "later":
                return Reply(450, None, "Try later")
            return None

    big = b"x" * 2000
    # Each item is sent verbatim, and answered by exactly one reply.
    dialogue = [
        b"HELO client.example\r\n",
        b"EHLO client.example\r\n",
        b"NOOP\r\n",
        b"HELP\r\n",
        b"VRFY postmaster\r\n",
        b"EXPN list\r\n",
        b"XYZZY\r\n",
        b"MAIL FROM:<a@example.com> FOO=BAR\r\n",
        b"RCPT TO:<b@example.net>\r\n",
        b"MAIL FROM:<a@example.com> SIZE=100\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<multi@example.net>\r\n",
        b"RCPT TO:<later@example.net>\r\n",
        b"RCPT TO:<broken\r\n",
        b"DATA\r\n",
        b"RCPT TO:<b@example.net>\r\n",
        b"RCPT TO:<c@example.net> NOTIFY=NEVER\r\n",
        b"DATA\r\n",
        b"body\r\n.\r\n",
        b"MAIL FROM:<a@example.com> BODY=BINARYMIME\r\n",
        b"RCPT TO:<b@example.net>\r\n",
        b"DATA\r\n",
        b"BDAT 6\r\nchunk1",
        b"BDAT 4 LAST\r\nend!",
        b"RSET\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.net>\r\n",
        b"BDAT 4\r\nabcd",
        b"NOOP\r\n",
        b"RSET\r\n",
        b"STARTTLS\r\n",
        b"AUTH PLAIN\r\n",
        b"NOOP " + big + b"\r\n",
        "MAIL FROM:<\u00e9@example.com>\r\n".encode(),
        b"\x00\x01\r\n",
        b"MAIL FROM:<a@example.com>\r\n",
        b"RCPT TO:<b@example.net>\r\n",
        b"DATA\r\n",
        b"bare\nline feed\r\n.\r\n",
        b"QUIT\r\n",
    ]
    seen: list[str] = []
    async with serving(Multiline(), settings(max_errors=100)) as srv:
        client = await srv.connect(greeting=False)
        greeting = await client.read_reply()
        assert greeting.code == 220
        for item in dialogue:
            await client.send(item)
            reply = await client.read_reply()
            seen.append(f"{item[:40]!r} -> {reply}")
            if item.startswith((b"HELO", b"EHLO")):
                assert reply.code == 250
            elif reply.code != 354:
                assert_enhanced(reply)
    assert len(seen) == len(dialogue)
    text = "\n".join(seen)
    # The dialogue covered each class, multi-line replies, and a 421-free end.
    assert "550-5.0.0 first line" in text
    assert "550 5.0.0 third" in text
    assert "450 4.0.0 Try later" in text
    assert "221 2.0.0" in text


async def test_enhanced_status_codes_with_tls_and_auth(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """RFC 2034 3 with RFC 3207 and RFC 4954 6: the replies of STARTTLS and
    AUTH (538, 530, 235, 535, 501, 504, 503, 421) carry enhanced codes of
    their class on every line too; only 334 challenges (3xx) and the EHLO
    reply go without."""
    hooks = Recorder(users={"alice": "pw"})
    config = settings(
        ssl_context=tls_server_context,
        auth_mechanisms=("PLAIN", "LOGIN"),
        require_auth=True,
        max_auth_failures=3,
    )
    ok = base64.b64encode(b"\0alice\0pw").decode()
    bad = base64.b64encode(b"\0alice\0bad").decode()
    in_clear = [f"AUTH PLAIN {ok}", "MAIL FROM:<a@example.com>", "STARTTLS"]
    under_tls = [
        "MAIL FROM:<a@example.com>",  # EHLO needed again (503)
        "EHLO client.example",
        "MAIL FROM:<a@example.com>",  # AUTH needed (530)
        f"AUTH PLAIN {bad}",
        "AUTH PLAIN not-base64!",
        "AUTH CRAM-MD5",
        "AUTH PLAIN",
        "*",
        f"AUTH PLAIN {ok}",
        f"AUTH PLAIN {ok}",  # already authenticated (503)
        "STARTTLS",  # TLS already active (503)
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.net>",
        "DATA",
        MESSAGE.decode() + ".",
        "QUIT",
    ]
    seen = []
    async with serving(hooks, config) as srv:
        client = await srv.hello()
        for line in in_clear:
            seen.append(await client.command(line))
        await client.start_tls(tls_client_context)
        for line in under_tls:
            seen.append(await client.command(line))
        # A second session fails AUTH until the server gives up (421).
        other = await srv.hello()
        await other.command("STARTTLS")
        await other.start_tls(tls_client_context)
        await other.command("EHLO client.example")
        for _ in range(3):
            seen.append(await other.command(f"AUTH PLAIN {bad}"))
    codes = []
    for reply in seen:
        codes.append(reply.code)
        if reply.lines[0].startswith(b"250-mx.test.example") or reply.code in (334, 354):
            continue
        assert_enhanced(reply)
    assert {538, 530, 220, 503, 535, 501, 504, 235, 250, 221, 421} <= set(codes), codes
    assert len(hooks.messages) == 1


async def test_enhanced_status_codes_in_lmtp() -> None:
    """RFC 2033 5 (LMTP servers MUST support ENHANCEDSTATUSCODES) and RFC
    2034 3: the 500 to HELO/EHLO and every per-recipient reply after the
    body, accepted or refused, carries an enhanced code of its class."""
    hooks = Recorder()
    async with serving(hooks, settings(lmtp=True, max_message_size=100)) as srv:
        client = await srv.connect()
        seen = [await client.command("HELO client.example")]
        seen.append(await client.command("EHLO client.example"))
        assert (await client.command("LHLO client.example")).code == 250
        for body in (b"x" * 200 + b"\r\n", b"hi\r\n"):
            await client.send(
                b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n"
                b"RCPT TO:<c@example.net>\r\nDATA\r\n"
            )
            seen += (await client.read_replies(4))[:3]
            await client.send(body + b".\r\n")
            seen += await client.read_replies(2)
        seen.append(await client.command("QUIT"))
    for reply in seen:
        assert_enhanced(reply)
    assert [r.code for r in seen] == [500, 500, *[250] * 3, 552, 552, *[250] * 5, 221]
    assert len(hooks.messages) == 1


# -- CHUNKING and BINARYMIME ---------------------------------------------------------


async def test_chunking_several_chunks_and_empty_last() -> None:
    """RFC 3030 2: the message is the chunks in order; "BDAT 0 LAST" ends it."""
    hooks = Recorder()
    chunks = [b"Subject: c\r\n", b"\r\n", b"one ", b"two ", b"three\r\n"]
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        for chunk in chunks:
            reply = await bdat(client, chunk)
            assert str(reply) == f"250 2.0.0 {len(chunk)} octets received"
        last = await bdat(client, b"", last=True)
    assert str(last) == "250 2.0.0 Message accepted"
    [received] = hooks.messages
    assert received.body == b"".join(chunks)
    assert received.envelope.body_command == "BDAT"


async def test_binarymime_octets_kept_verbatim() -> None:
    """RFC 3030 3: BINARYMIME content, NUL, bare CR and LF, and a line with a
    lone dot included, is passed through untouched by BDAT."""
    hooks = Recorder()
    payload = bytes(range(256)) + b"\r\n.\r\n" + b"\n.\n" + b"\r" + b"\x00" * 10 + b"."
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com> BODY=BINARYMIME")
        await client.command("RCPT TO:<b@example.net>")
        half = len(payload) // 2
        r1 = await bdat(client, payload[:half])
        r2 = await bdat(client, payload[half:], last=True)
    assert (r1.code, r2.code) == (250, 250)
    [received] = hooks.messages
    assert received.body == payload
    assert received.envelope.mail_from.params.body is not None
    assert received.envelope.mail_from.params.body.value == "BINARYMIME"


async def test_binarymime_with_data_refused() -> None:
    """RFC 3030 3: BODY=BINARYMIME cannot use DATA (503 5.5.1); BDAT works."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com> BODY=BINARYMIME")
        await client.command("RCPT TO:<b@example.net>")
        data = await client.command("DATA")
        chunk = await bdat(client, b"\x00\x01\x02", last=True)
    assert (data.code, data.enhanced) == (503, "5.5.1")
    assert chunk.code == 250
    assert [m.body for m in hooks.messages] == [b"\x00\x01\x02"]


async def test_chunking_rset_between_chunks_aborts() -> None:
    """RFC 3030 2 / RFC 5321 4.1.1.5: RSET between chunks abandons the message."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        first = await bdat(client, b"hello")
        rset = await client.command("RSET")
        late = await bdat(client, b"world", last=True)
        # The session goes on: a fresh transaction works.
        again = await transaction(client)
    assert first.code == 250
    assert str(rset) == "250 2.0.0 OK"
    assert (late.code, late.enhanced) == (503, "5.5.1")
    assert again.code == 250
    assert hooks.aborted == ["aborted by RSET"]
    assert [m.body for m in hooks.messages] == [MESSAGE]


async def test_chunking_commands_between_chunks() -> None:
    """RFC 3030 2: NOOP between chunks is answered; the message goes on.
    A MAIL between chunks is out of sequence (503) and changes nothing."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        await bdat(client, b"abcd")
        noop = await client.command("NOOP")
        mail = await client.command("MAIL FROM:<x@example.com>")
        last = await bdat(client, b"efgh", last=True)
    assert noop.code == 250
    assert mail.code == 503
    assert last.code == 250
    assert [m.body for m in hooks.messages] == [b"abcdefgh"]


async def test_chunking_chunk_after_failure_refused_and_skipped() -> None:
    """RFC 3030 2: after a failed chunk the transaction is over; later chunks
    get 503 and their octets are skipped, not run as commands."""
    hooks = Recorder()
    async with serving(hooks, settings(max_message_size=10)) as srv:
        client = await srv.hello()
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        ok = await bdat(client, b"123456")
        too_big = await bdat(client, b"789012")
        payload = b"RSET\r\nQUIT\r\n"
        after = await bdat(client, payload, last=True)
        noop = await client.command("NOOP")
    assert ok.code == 250
    assert (too_big.code, too_big.enhanced) == (552, "5.3.4")
    assert (after.code, after.enhanced) == (503, "5.5.1")
    assert noop.code == 250  # QUIT inside the chunk was never obeyed
    assert hooks.messages == []
    await wait_for(lambda: hooks.aborted)
    assert hooks.aborted[0].startswith("chunk refused")


async def test_chunking_not_offered_bdat_refused_and_skipped() -> None:
    """RFC 3030 2: without CHUNKING, BDAT gets 502 and its octets are skipped."""
    hooks = Recorder()
    async with serving(hooks, settings(chunking=False, binarymime=False)) as srv:
        client = await srv.connect()
        ehlo = await client.command("EHLO client.example")
        await client.command("MAIL FROM:<a@example.com>")
        await client.command("RCPT TO:<b@example.net>")
        refused = await bdat(client, b"QUIT\r\n", last=True)
        noop = await client.command("NOOP")
    assert "CHUNKING" not in _keywords(ehlo)
    assert "BINARYMIME" not in _keywords(ehlo)
    assert (refused.code, refused.enhanced) == (502, "5.5.1")
    assert noop.code == 250
    assert hooks.messages == []


# -- DSN ------------------------------------------------------------------------


async def test_dsn_parameters_reach_the_hook() -> None:
    """RFC 3461 4.1-4.4: RET, ENVID, NOTIFY and ORCPT are parsed (xtext
    decoded) and handed to the message hook with the envelope."""
    hooks = Recorder()
    async with serving(hooks) as srv:

        def send() -> None:
            with smtplib.SMTP(srv.host, srv.port) as s:
                s.ehlo()
                assert s.has_extn("dsn")
                s.sendmail(
                    "a@example.com",
                    ["b@example.net"],
                    MESSAGE,
                    mail_options=["RET=HDRS", "ENVID=QQ314159+2Bx"],
                    rcpt_options=[
                        "NOTIFY=SUCCESS,FAILURE",
                        "ORCPT=rfc822;b+2Bdsn@example.net",
                    ],
                )

        await anyio.to_thread.run_sync(send)
    [received] = hooks.messages
    params = received.envelope.mail_from.params
    assert params.ret is Ret.HDRS
    assert params.envid == "QQ314159+x"
    [rcpt] = received.envelope.recipients
    assert rcpt.params.notify == frozenset({Notify.SUCCESS, Notify.FAILURE})
    assert rcpt.params.orcpt == OriginalRecipient("rfc822", "b+dsn@example.net")


async def test_dsn_malformed_parameters_refused() -> None:
    """RFC 3461 4.1: NOTIFY=NEVER cannot be combined; bad values get 501."""
    hooks = Recorder()
    async with serving(hooks) as srv:
        client = await srv.hello()
        bad_ret = await client.command("MAIL FROM:<a@example.com> RET=SOME")
        await client.command("MAIL FROM:<a@example.com>")
        never = await client.command("RCPT TO:<b@example.net> NOTIFY=NEVER,SUCCESS")
        orcpt = await client.command("RCPT TO:<b@example.net> ORCPT=rfc822")
    assert bad_ret.code == 501
    assert never.code == 501
    assert orcpt.code == 501
    assert hooks.rcpts == []


async def test_dsn_not_offered_parameters_refused() -> None:
    """RFC 3461 / RFC 5321 4.1.1.11: without DSN advertised, RET gets 555."""
    async with serving(config=settings(dsn=False)) as srv:
        client = await srv.connect()
        ehlo = await client.command("EHLO client.example")
        ret = await client.command("MAIL FROM:<a@example.com> RET=FULL")
        await client.command("MAIL FROM:<a@example.com>")
        notify = await client.command("RCPT TO:<b@example.net> NOTIFY=NEVER")
    assert "DSN" not in _keywords(ehlo)
    assert ret.code == 555
    assert notify.code == 555
