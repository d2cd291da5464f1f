"""The inline path: on asyncio's plain sockets, what needs no hook is
answered in the transport's callback, without waking the session task.

It must answer exactly as the task path does (which trio, TLS and every
overridden hook use): the property test below sends the same hostile
scripts to asyncio with the inline path, to asyncio without it, and to
trio, and requires the same octets back from all three.  The other tests
cover what a transcript cannot show: the timeouts the inline path keeps
itself, shutdown, and a client that does not read its replies.
"""

from __future__ import annotations

import logging
import shlex
import socket
import struct
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from serverkit import expect_timeout, serving, settings, timeouts, wait_for

from smtp_server import Hooks, _session
from smtp_transport import AsyncioSocketStream

if TYPE_CHECKING:
    from serverkit import Running

    from smtp_server import Settings
    from smtp_testkit.clients import RawClient

#: Lines and pieces a script is made of: valid and invalid commands,
#: bodies with dot-stuffing and bare line endings, BDAT chunks, oversized
#: lines, NUL and 8-bit octets.
PIECES = [
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"LHLO client.example\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"MAIL FROM:<> SIZE=50\r\n",
    b"MAIL FROM:<a@example.com> SIZE=100000\r\n",
    b"MAIL FROM:<a\rb@example.com>\r\n",
    b"RCPT TO:<b@example.net>\r\n",
    b"RCPT TO:<c@example.net> NOTIFY=NEVER\r\n",
    b"RCPT TO:<b\x00@example.net>\r\n",
    b"RCPT TO:<d@example.net>\r\n" * 60,
    b"DATA\r\n",
    b"Subject: x\r\n\r\nbody\r\n",
    b"..stuffed\r\n",
    b".\r\n",
    b"x" * 300 + b"\r\n",
    b"bare\nLF\r\n",
    b"bare\rCR\r\n",
    b"BDAT 5\r\nhello",
    b"BDAT 3 LAST\r\nabc",
    b"BDAT 0 LAST\r\n",
    b"BDAT 400\r\n" + b"y" * 400,
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY someone\r\n",
    b"EXPN list\r\n",
    b"HELP\r\n",
    b"BOGUS command\r\n",
    b"\xff\xfe\r\n",
    b"NOOP " + b"z" * 1100 + b"\r\n",
    b"\r\n",
    b"AUTH PLAIN\r\n",
    b"QUIT\r\n",
]


def _config(lmtp: bool) -> Settings:
    # Small limits, so that scripts reach them: size, recipients, errors,
    # junk commands.
    return settings(
        lmtp=lmtp,
        max_message_size=200,
        max_recipients=100,
        max_errors=6,
        max_junk_commands=8,
    )


async def _transcript(script: list[bytes], lmtp: bool) -> bytes:
    """Everything the server says to ``script`` (sent in its pieces)."""
    async with serving(Hooks(), _config(lmtp)) as srv:
        client = await srv.connect(greeting=False)
        try:
            for piece in script:
                await client.send(piece)
            await client.stream.send_eof()
        except (anyio.BrokenResourceError, OSError):
            pass  # the server closed first (421, QUIT): what it said counts
        return await client.read_until_closed()


def _three_ways(script: list[bytes], lmtp: bool) -> tuple[bytes, bytes, bytes]:
    inline = anyio.run(_transcript, script, lmtp, backend="asyncio")
    _session.INLINE = False
    try:
        task = anyio.run(_transcript, script, lmtp, backend="asyncio")
    finally:
        _session.INLINE = True
    trio = anyio.run(_transcript, script, lmtp, backend="trio")
    return inline, task, trio


@hypothesis_settings(max_examples=60)
@given(script=st.lists(st.sampled_from(PIECES), max_size=25), lmtp=st.booleans())
def test_inline_answers_exactly_as_the_task_path(script: list[bytes], lmtp: bool) -> None:
    """RFC 5321 4.1 and 4.3.2, RFC 2920, RFC 3030, RFC 2033 4.2: for any
    sequence of commands, bodies and garbage, the inline path's replies are
    the task path's, octet for octet (asyncio inline, asyncio task, trio)."""
    inline, task, trio = _three_ways(script, lmtp)
    assert inline == task == trio
    assert inline.startswith(b"220 ")


@pytest.fixture
def feeds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the inline path's callbacks, to show a test went through it."""
    calls = [0]
    original = _session._Driver._feed

    def counting(self: _session._Driver, data: bytes) -> None:
        calls[0] += 1
        original(self, data)

    monkeypatch.setattr(_session._Driver, "_feed", counting)
    return calls


def test_a_pipelined_session_is_answered_inline(feeds: list[int]) -> None:
    """RFC 2920 3.1: a whole pipelined session (two messages by DATA, one
    by BDAT) gets every reply, in order, and on asyncio the inline path
    answered it."""
    script = [
        b"EHLO client.example\r\n",
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
        b"Subject: 1\r\n\r\n..one\r\n.\r\n",
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n",
        b"Subject: 2\r\n\r\ntwo\r\n.\r\n",
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 4 LAST\r\nabcd",
        b"QUIT\r\n",
    ]
    inline, task, trio = _three_ways(script, lmtp=False)
    assert inline == task == trio
    codes = [line[:3] for line in inline.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [
        b"220", b"250",
        b"250", b"250", b"354", b"250",
        b"250", b"250", b"354", b"250",
        b"250", b"250", b"250",
        b"221",
    ]  # fmt: skip
    assert feeds[0] > 0


def test_an_lmtp_message_gets_one_reply_per_recipient_inline(feeds: list[int]) -> None:
    """RFC 2033 4.2: after the body, one reply per accepted recipient, from
    the inline path as from the task path."""
    script = [
        b"LHLO client.example\r\n",
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n",
        b"RCPT TO:<c@example.net>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
    ]
    inline, task, trio = _three_ways(script, lmtp=True)
    assert inline == task == trio
    assert inline.count(b"250 2.0.0 ") == 2
    assert feeds[0] > 0


#: A timeout short enough to wait for; the others stay long.
SHORT = 0.3


_HELLO = b"EHLO c.example\r\n"
_MAIL = b"MAIL FROM:<a@example.com>\r\n"
_RCPT = b"RCPT TO:<b@example.net>\r\n"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("which", "prelude"),
    [
        ("idle", [_HELLO]),
        ("hello", []),
        ("command", [_HELLO, _MAIL]),
        ("data_initiation", [_HELLO, _MAIL, _RCPT, b"DATA\r\n"]),
        ("data_block", [_HELLO, _MAIL, _RCPT, b"DATA\r\n", b"Subject: x\r\n"]),
    ],
)
async def test_timeouts_without_hooks(which: str, prelude: list[bytes]) -> None:
    """RFC 5321 4.5.3.2: every wait is bounded with no hook overridden too
    (on asyncio, by the inline path's own timer): 421 4.4.2, then close."""
    config = settings(timeouts=timeouts(**{which: SHORT}))
    async with serving(Hooks(), config) as srv:
        client = await srv.connect()
        for line in prelude:
            await client.send(line)
            if not line.startswith(b"Subject"):
                await client.read_reply()
        started = anyio.current_time()
        await expect_timeout(client)
        assert anyio.current_time() - started >= SHORT * 0.9


@pytest.mark.anyio
async def test_a_trickled_command_line_does_not_extend_the_deadline() -> None:
    """RFC 5321 4.5.3.2: the timeout bounds the whole command; a client
    sending one octet at a time, each well within it, still times out."""
    config = settings(timeouts=timeouts(idle=SHORT))
    async with serving(Hooks(), config) as srv:
        client = await srv.hello()
        with anyio.fail_after(5):
            for octet in b"NOOP NOOP NOOP NOOP NOOP":
                try:
                    await client.send(bytes([octet]))
                except (anyio.BrokenResourceError, OSError):
                    break
                await anyio.sleep(SHORT / 6)
        reply = await client.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.4.2")


@pytest.mark.anyio
async def test_a_stream_of_commands_keeps_the_session_alive() -> None:
    """RFC 5321 4.5.3.2: the timeout is per command: a session that keeps
    sending commands, for longer than one timeout in all, goes on."""
    config = settings(timeouts=timeouts(idle=SHORT), max_junk_commands=1000)
    async with serving(Hooks(), config) as srv:
        client = await srv.hello()
        for _ in range(8):
            reply = await client.command("NOOP")
            assert reply.code == 250
            await anyio.sleep(SHORT / 3)
        assert (await client.command("QUIT")).code == 221


@pytest.mark.anyio
async def test_shutdown_with_sessions_answered_inline() -> None:
    """RFC 5321 3.8: on shutdown an idle session gets 421 4.3.2 at once; one
    in a transaction finishes its message first, then gets it."""
    config = settings(shutdown_grace=10.0)
    async with serving(Hooks(), config) as srv:
        idle = await srv.hello()
        busy = await srv.hello()
        await busy.command("MAIL FROM:<a@example.com>")
        await busy.command("RCPT TO:<b@example.net>")
        assert (await busy.command("DATA")).code == 354
        await busy.send("Subject: x\r\n")
        await wait_for(lambda: srv.server.statistics.active == 2)
        srv.server.shutdown()
        reply = await idle.read_reply()
        assert (reply.code, reply.enhanced) == (421, "4.3.2")
        # The client pipelines its next transaction behind the body: it is
        # not begun; the 421 comes at once, not after the grace.
        await busy.send("\r\nbody\r\n.\r\nMAIL FROM:<a@example.com>\r\n")
        with anyio.fail_after(3):
            replies = await busy.read_replies(2)
        assert [(r.code, r.enhanced) for r in replies] == [(250, "2.0.0"), (421, "4.3.2")]


@pytest.mark.anyio
async def test_a_client_that_does_not_read_loses_no_reply() -> None:
    """RFC 2920 3.1: a client may pipeline many commands; one that reads
    none of the replies for a while stalls itself, and then gets every
    one of them, in order (the server stops reading meanwhile)."""
    count = 3000
    config = settings(max_junk_commands=2 * count + 10)  # each EHLO and NOOP is junk
    async with serving(Hooks(), config) as srv:
        client = await srv.hello()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                # EHLO's reply is long: thousands fill every buffer between.
                tg.start_soon(client.send, b"EHLO c.example\r\nNOOP\r\n" * count + b"QUIT\r\n")
                await anyio.sleep(0.5)  # let the buffers fill
                data = await client.read_until_closed(wait=20)
        lines = [line for line in data.split(b"\r\n") if line[3:4] == b" "]
        assert len(lines) == 2 * count + 1
        assert lines[-1].startswith(b"221 ")
        assert all(line.startswith(b"250 ") for line in lines[:-1])


def _small_window(client: RawClient) -> None:
    """Keep the client's receive window small, so that replies it does not
    read back up into the server soon (loopback buffers grow to megabytes)."""
    sock = client.stream.extra(anyio.abc.SocketAttribute.raw_socket)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)


def _server_buffered(srv: Running) -> int:
    """Octets the server holds for its clients in user space (asyncio)."""
    total = 0
    for driver in srv.server._drivers:
        stream = driver.send_stream
        if isinstance(stream, AsyncioSocketStream):
            total += stream._transport.get_write_buffer_size()
    return total


@pytest.mark.anyio
async def test_a_client_that_does_not_read_stops_the_server_reading() -> None:
    """RFC 2920 3.1 (the server may stop reading while its replies cannot
    be sent): commands keep coming from a client that reads none of the
    replies, and what the server holds for it stays bounded; then every
    reply arrives."""
    count = 12_000
    async with serving(Hooks(), settings(max_junk_commands=count + 10)) as srv:
        client = await srv.hello()
        _small_window(client)
        peak = 0

        async def send_all() -> None:
            for _ in range(count // 200):
                await client.send(b"EHLO c.example\r\n" * 200)
            await client.send(b"QUIT\r\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(send_all)
            with anyio.move_on_after(1.5):  # read nothing meanwhile
                while True:
                    peak = max(peak, _server_buffered(srv))
                    await anyio.sleep(0.01)
            data = await client.read_until_closed(wait=30)
    assert peak < 1 << 20, peak  # the task path's bound is 16 KiB + buffers
    lines = [line for line in data.split(b"\r\n") if line[3:4] == b" "]
    assert len(lines) == count + 1
    assert lines[-1].startswith(b"221 ")


@pytest.mark.anyio
async def test_bdat_chunks_behind_many_commands_while_the_client_does_not_read() -> None:
    """RFC 3030 2, RFC 2920: commands between BDAT chunks are answered as
    part of the message however the replies back up.  (The repeated EHLOs
    and the NOOPs are junk: the limit is set above them.)"""
    script = (
        b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nBDAT 1\r\nx"
        + b"NOOP\r\n" * 1500
        + b"BDAT 1 LAST\r\ny"
        + b"QUIT\r\n"
    )
    async with serving(Hooks(), settings(max_junk_commands=25_000)) as srv:
        client = await srv.hello()
        _small_window(client)
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send, b"EHLO c.example\r\n" * 20000 + script)
            await anyio.sleep(0.3)  # the replies back up meanwhile
            data = await client.read_until_closed(wait=30)
    last = [line for line in data.split(b"\r\n") if line[3:4] == b" "][-3:]
    assert [line[:9] for line in last] == [b"250 2.0.0", b"250 2.0.0", b"221 2.0.0"]
    assert b"421" not in data


async def _session_end(srv: Running, caplog: pytest.LogCaptureFixture) -> str:
    await wait_for(lambda: srv.server.statistics.active == 0)
    ends = [r.getMessage() for r in caplog.records if " end=" in r.getMessage()]
    assert len(ends) == 1, ends
    # key=value tokens, a value with spaces quoted (logfmt): shlex reads them.
    fields = dict(token.split("=", 1) for token in shlex.split(ends[0]))
    return fields["end"]


@pytest.mark.anyio
async def test_a_rejected_body_that_is_one_error_too_many(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 1870 6.3 and RFC 5321 4.5.3.1: a body over the size limit gets
    552; if that is the session's last allowed error, 421 follows and the
    session ends for too many errors (not as an internal error)."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    config = settings(max_errors=2, max_message_size=100)
    async with serving(Hooks(), config) as srv:
        client = await srv.hello()
        assert (await client.command("BOGUS")).code == 500
        await client.send(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        assert [r.code for r in await client.read_replies(3)] == [250, 250, 354]
        await client.send(b"x" * 300 + b"\r\n.\r\n")
        replies = await client.read_replies(2)
        assert [(r.code, r.enhanced) for r in replies] == [(552, "5.3.4"), (421, "4.7.0")]
        assert await _session_end(srv, caplog) == "too many errors"
    assert "internal error" not in caplog.text


@pytest.mark.anyio
async def test_a_reset_connection_is_logged_as_lost(caplog: pytest.LogCaptureFixture) -> None:
    """A client that resets the connection (RST, not FIN) is "connection
    lost" in the log, on every path."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    async with serving(Hooks(), settings()) as srv:
        client = await srv.hello()
        sock = client.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.aclose()
        assert await _session_end(srv, caplog) == "connection lost"


@pytest.mark.anyio
async def test_a_client_that_half_closes_unread_gets_every_reply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 5321 4.1.1.10: a client may pipeline QUIT and close its sending
    side before reading anything; every reply still reaches it, the 221
    last, however many were queued when the session ended."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    count = 20000
    async with serving(Hooks(), settings(max_junk_commands=count + 10)) as srv:
        client = await srv.connect(greeting=False)
        _small_window(client)
        await wait_for(lambda: srv.server._drivers)
        for driver in srv.server._drivers:  # and a small send buffer
            sock = driver.send_stream.extra(anyio.abc.SocketAttribute.raw_socket)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await client.send(b"EHLO c.example\r\n" * count + b"QUIT\r\n")
        await client.stream.send_eof()
        await anyio.sleep(0.5)  # read nothing meanwhile
        data = await client.read_until_closed(wait=30)
        assert await _session_end(srv, caplog) == "quit"
    lines = [line for line in data.split(b"\r\n") if line[3:4] == b" "]
    assert len(lines) == count + 2  # the greeting, the EHLOs, the 221
    assert lines[-1].startswith(b"221 ")
    assert "crashed" not in caplog.text


@pytest.mark.anyio
async def test_a_client_gone_before_the_221_is_a_quit_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 5321 4.1.1.10: the server sends 221 to QUIT and closes.  A
    client that closes right after sending QUIT (as Postfix's smtp-source
    does) makes that 221 meet a closed socket, which resets the connection
    before the server half-closes; the session still ended by QUIT, and
    nothing crashed."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    async with serving(Hooks(), settings()) as srv:
        for _ in range(5):
            client = await srv.hello()
            await client.send(b"QUIT\r\n")
            await client.aclose()
        await wait_for(lambda: srv.server.statistics.accepted == 5)
        await wait_for(lambda: srv.server.statistics.active == 0)
    lines = [r.getMessage() for r in caplog.records]
    ends = [line.rsplit(" end=", 1)[1] for line in lines if " end=" in line]
    assert ends == ["quit"] * 5
    assert "crashed" not in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("inline", [True, False])
async def test_after_quit_nothing_more_is_answered_and_the_server_closes(
    inline: bool, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 5321 4.1.1.10: the receiver of QUIT sends 221 and closes the
    transmission channel.  Commands pipelined behind QUIT get no reply, and
    a client that neither closes nor stops sending cannot keep the session:
    the server closes after the ``close`` timeout (the linger), and the
    session still ended by QUIT."""
    monkeypatch.setattr(_session, "INLINE", inline)
    caplog.set_level(logging.INFO, logger="smtp_server")
    async with serving(Hooks(), settings(timeouts=timeouts(close=0.5))) as srv:
        client = await srv.hello()
        await client.send(b"QUIT\r\nNOOP\r\nRSET\r\n")
        with anyio.move_on_after(0.2):  # keep sending past the 221
            while True:
                await client.send(b"NOOP\r\n")
                await anyio.sleep(0.01)
        data = await client.read_until_closed(wait=10)
        assert await _session_end(srv, caplog) == "quit"
    assert data.startswith(b"221 "), data[:200]
    assert data.count(b"\r\n") == 1, data[:200]
