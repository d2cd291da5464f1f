"""The state machines against real peers, over real sockets on 127.0.0.1.

A few lines of anyio play the I/O layer (what smtp-server and smtp-client
do for real): the server side is driven by Python's ``smtplib`` and by
``swaks``; the client side talks to Postfix's ``smtp-sink``, in SMTP and in
LMTP mode.  Every test runs on asyncio and on trio.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import pytest

from smtp_message import (
    NEED_DATA,
    BodyChunk,
    ClientConnection,
    ConnectionClosed,
    Data,
    DataResponse,
    Ehlo,
    EndOfData,
    Greeting,
    Lhlo,
    Mailbox,
    MailFrom,
    Quit,
    RcptTo,
    RemoteProtocolError,
    Response,
    ServerConnection,
    ServerSettings,
    ServerState,
)
from smtp_testkit.plugin import require_program

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio


async def serve_one(stream: anyio.abc.ByteStream, conn: ServerConnection) -> list[Any]:
    """Drive one server session over ``stream``; return its events."""
    events: list[Any] = []
    await stream.send(conn.send(conn.greeting()))
    while conn.state is not ServerState.CLOSED:
        try:
            event: Any = conn.next_event()
        except RemoteProtocolError as exc:
            event = exc
        if isinstance(event, RemoteProtocolError):
            assert event.reply is not None
            events.append(("error", event.reply))
            await stream.send(conn.send(event.reply))
            continue
        if event is NEED_DATA:
            try:
                conn.receive_data(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                conn.receive_data(b"")
            continue
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
        while conn.reply_due:
            await stream.send(conn.send(conn.default_reply(event)))
    return events


def bodies(events: list[Any]) -> list[bytes]:
    out, current = [], bytearray()
    for event in events:
        if isinstance(event, BodyChunk):
            current += event.data
        elif isinstance(event, EndOfData):
            out.append(bytes(current))
            current.clear()
    return out


async def with_server(client: Any, settings: ServerSettings | None = None) -> tuple[list[Any], Any]:
    """Run ``client(port)`` in a thread against one ServerConnection session."""
    conn = ServerConnection(settings or ServerSettings(hostname="mx.example"))
    result: dict[str, Any] = {}
    served = anyio.Event()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            result["events"] = await serve_one(stream, conn)
        served.set()

    with anyio.fail_after(60):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            result["client"] = await anyio.to_thread.run_sync(client, port)
            await served.wait()
            tg.cancel_scope.cancel()
    return result["events"], result["client"]


MESSAGE = (
    "From: a@b.example\r\nTo: c@d.example\r\nSubject: interop\r\n\r\n"
    ".a line starting with a dot\r\n..two dots\r\n.\r\n"
    "the line above was a lone dot\r\n"
)


async def test_interop_smtplib_client_to_server_connection() -> None:
    """RFC 5321 D.1 with Python's smtplib as the client: EHLO, MAIL, two
    RCPT, DATA with dot-stuffed lines (4.5.2) and a lone-dot line, QUIT."""

    def client(port: int) -> dict[str, Any]:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as smtp:
            smtp.ehlo()
            features = dict(smtp.esmtp_features)
            refused = smtp.sendmail("a@b.example", ["c@d.example", "e@f.example"], MESSAGE)
            return {"features": features, "refused": refused}

    events, result = await with_server(client)
    assert result["refused"] == {}
    assert "pipelining" in result["features"]
    assert result["features"]["size"] == str(32 * 1024 * 1024)
    assert bodies(events) == [MESSAGE.encode()]
    rcpts = [e.forward_path for e in events if isinstance(e, RcptTo)]
    assert rcpts == [Mailbox("c", "d.example"), Mailbox("e", "f.example")]
    assert isinstance(events[-1], Quit | ConnectionClosed)


async def test_interop_smtplib_utf8_and_refusal() -> None:
    """RFC 6531 3.4: smtplib sends SMTPUTF8 for a UTF-8 address; a refused
    recipient (4.2.2) is reported per recipient."""

    def client(port: int) -> Any:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as smtp:
            return smtp.sendmail(
                "δοκιμή@b.example",
                ["ü@bücher.example", "bad address"],
                b"Subject: utf8\r\n\r\nhi\r\n",
                mail_options=["SMTPUTF8"],
            )

    events, refused = await with_server(client)
    assert list(refused) == ["bad address"]
    assert refused["bad address"][0] == 501
    mail = next(e for e in events if isinstance(e, MailFrom))
    assert mail.params.smtputf8
    assert bodies(events) == [b"Subject: utf8\r\n\r\nhi\r\n"]


async def test_interop_swaks_pipelining_to_server_connection() -> None:
    """RFC 2920 with swaks --pipeline: the envelope and DATA in one group,
    replies in order; the body's dot lines arrive unstuffed."""
    swaks = require_program("swaks")
    body = "Subject: swaks\n\n.dotted line\nplain\n"

    def client(port: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [swaks, "--server", "127.0.0.1", "--port", str(port), "--pipeline",
             "--helo", "client.example", "--from", "a@b.example",
             "--to", "c@d.example,e@f.example", "--data", body],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    events, result = await with_server(client)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<** " not in result.stdout  # swaks marks errors so
    # swaks sends the --data text with CRLF line ends and one more CRLF.
    assert bodies(events) == [b"Subject: swaks\r\n\r\n.dotted line\r\nplain\r\n\r\n"]
    assert len([e for e in events if isinstance(e, RcptTo)]) == 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def smtp_sink(*, lmtp: bool) -> AsyncIterator[tuple[int, Path]]:
    """A private Postfix smtp-sink on 127.0.0.1 dumping each message: (port, dumps).

    It writes its dumps as ``nobody``, who cannot enter pytest's 0700
    tmp_path chain (RECIPES.md 0), so they go to a directory of their own.
    """
    sink = require_program("smtp-sink")
    dumps = Path(tempfile.mkdtemp(prefix="smtp-sink-"))
    os.chmod(dumps, 0o777)
    port = free_port()
    args = [sink, "-u", "nobody", "-d", f"{dumps}/%H%M%S."]
    if lmtp:
        args.append("-L")
    process = await anyio.open_process([*args, f"127.0.0.1:{port}", "10"])
    try:
        for _ in range(250):
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.02)
                continue
            await stream.aclose()
            break
        else:
            pytest.fail("smtp-sink did not start")
        yield port, dumps
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        shutil.rmtree(dumps, ignore_errors=True)


async def client_session(
    stream: anyio.abc.ByteStream, conn: ClientConnection, steps: list[Any]
) -> list[Any]:
    """Send each step (a command, or bytes of a body) and read what is due."""
    events: list[Any] = []

    async def read_until(count: int) -> None:
        while len(events) < count:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(await stream.receive())
                continue
            events.append(event)

    await read_until(1)
    for step in steps:
        if isinstance(step, int):
            await read_until(step)
        elif isinstance(step, bytes):
            await stream.send(step)
        else:
            await stream.send(conn.send(step))
    return events


async def test_interop_client_connection_pipelined_to_smtp_sink() -> None:
    """RFC 2920: ClientConnection pipelines MAIL, two RCPT and DATA, then
    the dot-stuffed body and QUIT in one group, to Postfix's smtp-sink,
    which stores exactly the message sent."""
    conn = ClientConnection()
    async with smtp_sink(lmtp=False) as (port, dumps):
        with anyio.fail_after(30):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                events = await client_session(stream, conn, [Ehlo("client.example"), 2])
                assert conn.extensions.pipelining
                assert conn.extensions.dsn
                for command in (
                    MailFrom(Mailbox("a", "b.example")),
                    RcptTo(Mailbox("c", "d.example")),
                    RcptTo(Mailbox("e", "f.example")),
                    Data(),
                ):
                    await stream.send(conn.send(command))
                events += await client_session(stream, conn, [4])
                body = conn.send_body(b"Subject: sink\r\n\r\n.lead dot\r\n") + conn.end_body()
                assert body == b"Subject: sink\r\n\r\n..lead dot\r\n.\r\n"
                await stream.send(body + conn.send(Quit()))
                events += await client_session(stream, conn, [2])
        [dump] = list(dumps.iterdir())
        text = dump.read_bytes()
    assert isinstance(events[0], Greeting)
    codes = [e.reply.code for e in events if isinstance(e, Response | DataResponse)]
    assert codes == [250, 250, 250, 250, 354, 250, 221]
    assert isinstance(events[-2], DataResponse)
    assert conn.state.name == "CLOSED"
    assert b"X-Rcpt-Args: <c@d.example>\n" in text
    # smtp-sink dumps with LF line ends and an empty line after the message.
    assert text.endswith(b"\nSubject: sink\n\n.lead dot\n\n")


async def test_interop_client_connection_lmtp_to_smtp_sink() -> None:
    """RFC 2033 4.2: to smtp-sink in LMTP mode, the body gets one reply per
    accepted recipient, and the client pairs them with the recipients."""
    conn = ClientConnection(lmtp=True)
    recipients = [RcptTo(Mailbox("c", "d.example")), RcptTo(Mailbox("e", "f.example"))]
    async with smtp_sink(lmtp=True) as (port, _):
        with anyio.fail_after(30):
            stream = await anyio.connect_tcp("127.0.0.1", port)
            async with stream:
                events = await client_session(
                    stream,
                    conn,
                    [Lhlo("client.example"), 2, MailFrom(Mailbox("a", "b.example")),
                     *recipients, Data(), 6],
                )  # fmt: skip
                await stream.send(conn.send_body(b"Subject: lmtp\r\n\r\nhi\r\n") + conn.end_body())
                events += await client_session(stream, conn, [2, Quit(), 3])
    replies = [e for e in events if isinstance(e, DataResponse)]
    assert [(r.recipient, r.reply.code) for r in replies] == [(rcpt, 250) for rcpt in recipients]
    assert conn.state.name == "CLOSED"
