"""Harnesses: a server driven over chunks, and a client and a server in memory.

``drive`` plays the part of an I/O layer: it feeds a ``ServerConnection``
chunks of bytes, answers every event (the protocol's own error reply when
``next_event`` raises), and checks after each ``NEED_DATA`` that the
connection buffers no more than its bound.

``replay`` runs an example dialogue from an RFC through a
``ClientConnection`` and a ``ServerConnection`` connected to each other: the
client's bytes must be exactly the RFC's ``C:`` lines and are what the server
reads; the server's bytes must be exactly the RFC's ``S:`` lines (with the
generic RFC 3463 code the server adds where the RFC predates it) and are
what the client reads.
"""

from __future__ import annotations

import collections
import itertools
import random
import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from smtp_message import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    Bdat,
    BodyChunk,
    ClientConnection,
    Command,
    ConnectionClosed,
    DataResponse,
    EndOfData,
    Greeting,
    RemoteProtocolError,
    Reply,
    ReplyParser,
    Response,
    ServerConnection,
    ServerSettings,
    ServerState,
    parse_command,
    replies,
)
from smtp_message._limits import MAIL_LINE_ALLOWANCE, MAX_AUTH_LINE, MAX_COMMAND_LINE

CRLF = b"\r\n"


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (in any order, repeats allowed)."""
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def bytewise(data: bytes) -> list[bytes]:
    """One byte at a time."""
    return [data[i : i + 1] for i in range(len(data))]


def server_bound(settings: ServerSettings) -> int:
    """The most a server may hold once it has said NEED_DATA.

    Less than the longest line it accepts: the AUTH allowance (RFC 4954 4)
    or MAIL's extension allowance over the configured limit.
    """
    return max(MAX_AUTH_LINE, settings.max_line_length + MAIL_LINE_ALLOWANCE)


def accept_everything(conn: ServerConnection, event: Any) -> Reply:
    """The replies of a server that says yes to everything it can."""
    if isinstance(event, Auth):
        return Reply(334, None, "")
    if isinstance(event, AuthResponse):
        conn.authenticated("someone")
        return Reply(235, "2.7.0", "Authentication successful")
    return conn.default_reply(event)


Responder = Callable[[ServerConnection, Any], Reply]


@attrs.define
class Run:
    """What a driven server did: its events (errors as replies) and output."""

    events: list[Any] = attrs.field(factory=list)
    output: bytearray = attrs.field(factory=bytearray)
    max_buffered: int = 0

    def merged(self) -> list[Any]:
        """The events as any chunking of the input gives them.

        Consecutive BodyChunks are joined, and the data of a body refused
        for its size or a bare line ending, or cut by the end of the
        connection, is dropped: it is given out as it arrives until the
        violation (or the end) shows, so how much came out depends on the
        reads; that the body was refused or cut does not.
        """
        out: list[Any] = []
        for event in self.events:
            if isinstance(event, BodyChunk) and out and isinstance(out[-1], BodyChunk):
                out[-1] = BodyChunk(out[-1].data + event.data)
                continue
            unfinished = isinstance(event, ConnectionClosed) or (
                isinstance(event, tuple)
                and event[1] in (replies.BARE_LINE_ENDING, replies.MESSAGE_TOO_BIG)
            )
            if unfinished and out and isinstance(out[-1], BodyChunk):
                out.pop()
            out.append(event)
        return out

    def bodies(self) -> list[bytes]:
        """Message bodies, one per EndOfData or error ending a body."""
        bodies: list[bytes] = []
        current = bytearray()
        for event in self.events:
            if isinstance(event, BodyChunk):
                current += event.data
            elif isinstance(event, EndOfData):
                bodies.append(bytes(current))
                current.clear()
        return bodies


def pump(
    conn: ServerConnection,
    run: Run,
    respond: Responder = accept_everything,
    *,
    bound: int | None = None,
) -> None:
    """Take events until NEED_DATA or the end, answering each as it comes."""
    limit = server_bound(conn.settings) if bound is None else bound
    while conn.state is not ServerState.CLOSED:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            refused: Reply | None = exc.reply
        else:
            refused = None
        if refused is not None:
            run.events.append(("error", refused))
            while conn.reply_due:
                run.output += conn.send(refused)
            continue
        if event is NEED_DATA:
            held = len(conn.trailing_data)
            run.max_buffered = max(run.max_buffered, held)
            assert held < limit, f"{held} octets buffered (bound {limit})"
            return
        if event is PAUSED:
            run.events.append(PAUSED)
            conn.tls_established()
            continue
        run.events.append(event)
        if isinstance(event, ConnectionClosed):
            return
        while conn.reply_due:
            run.output += conn.send(respond(conn, event))


def drive(
    chunks: Iterable[bytes],
    settings: ServerSettings | None = None,
    respond: Responder = accept_everything,
    *,
    eof: bool = False,
    bound: int | None = None,
) -> tuple[ServerConnection, Run]:
    """A server fed ``chunks`` after its greeting, every event answered."""
    conn = ServerConnection(settings or ServerSettings(hostname="mx.example"))
    run = Run()
    run.output += conn.send(conn.greeting())
    for chunk in chunks:
        if conn.state is ServerState.CLOSED:
            break
        if chunk:
            conn.receive_data(chunk)
            pump(conn, run, respond, bound=bound)
    if eof and conn.state is not ServerState.CLOSED:
        conn.receive_data(b"")
        pump(conn, run, respond, bound=bound)
    return conn, run


# -- Client and server in memory ------------------------------------------------


@attrs.define
class Pair:
    """A client and a server state machine wired to each other."""

    client: ClientConnection
    server: ServerConnection

    @classmethod
    def start(cls, settings: ServerSettings | None = None, *, lmtp: bool = False) -> Pair:
        """Both sides past the greeting."""
        settings = settings or ServerSettings(hostname="mx.example", lmtp=lmtp)
        pair = cls(ClientConnection(lmtp=lmtp), ServerConnection(settings))
        pair.client.receive_data(pair.server.send(pair.server.greeting()))
        greeting = pair.client.next_event()
        assert isinstance(greeting, Greeting)
        return pair

    def to_server(self, data: bytes) -> None:
        """Hand the client's bytes to the server."""
        self.server.receive_data(data)

    def to_client(self, data: bytes) -> None:
        """Hand the server's bytes to the client."""
        self.client.receive_data(data)

    def exchange(
        self, command: Command | AuthResponse, reply: Reply | None = None
    ) -> tuple[Any, Any]:
        """Client sends ``command``; the server answers; both events returned.

        The server's answer is ``reply``, its own error reply if the command
        is refused by the protocol, or its default reply.
        """
        self.to_server(self.client.send(command))
        try:
            server_event: Any = self.server.next_event()
        except RemoteProtocolError as exc:
            server_event = exc
            answer = reply or exc.reply
        else:
            answer = reply or accept_everything(self.server, server_event)
        assert answer is not None
        self.to_client(self.server.send(answer))
        return server_event, self.client.next_event()


# -- RFC example dialogues ------------------------------------------------------

_LINE = re.compile(r"\s*([A-Z]):(?: (.*))?$")
_CHUNK_PLACEHOLDER = re.compile(r"\(.*\)")


def _with_generic_code(wire: bytes) -> bytes:
    """The reply as this server sends it: RFC 3463 class code added.

    RFC 3463 codes exist for 2xx, 4xx and 5xx replies only.
    """
    if wire.startswith(b"3"):
        return wire
    out = []
    for line in wire.split(CRLF)[:-1]:
        code, sep, text = line[:3], line[3:4], line[4:]
        generic = code[:1] + b".0.0"
        out.append(code + (sep or b" ") + generic + (b" " + text if text else b""))
    return CRLF.join(out) + CRLF


@attrs.define
class Replay:
    """What a replayed dialogue delivered."""

    client: ClientConnection
    server: ServerConnection
    bodies: list[bytes]
    client_events: list[Any]


def replay(
    transcript: str,
    settings: ServerSettings,
    *,
    client_role: str = "C",
    server_role: str = "S",
    elided: tuple[str, ...] = (),
) -> Replay:
    """Run an RFC dialogue through a client and a server wired together.

    ``client_role`` and ``server_role`` are the letters the RFC uses (RFC
    3030 writes S: for the client and R: for the server).  A line ``...``
    (body elided by the RFC) is replaced by ``elided``.  A ``(...)`` line
    after BDAT stands for the chunk's octets, which are generated.
    """
    client = ClientConnection(lmtp=settings.lmtp)
    server = ServerConnection(settings)
    to_server: collections.deque[Command] = collections.deque()
    to_client: collections.deque[Command] = collections.deque()
    bodies: list[bytes] = []
    client_events: list[Any] = []
    current = bytearray()
    pending_reply: list[bytes] = []
    mode = "command"
    chunk: Bdat | None = None
    chunk_data = bytearray()
    rng = random.Random(3030)

    lines: list[tuple[str, str]] = []
    for raw in transcript.strip("\n").splitlines():
        if raw.strip() == "...":
            lines.extend((client_role, text) for text in elided)
            continue
        m = _LINE.match(raw)
        assert m, f"not a dialogue line: {raw!r}"
        role, text = m[1], m[2] or ""
        if text.startswith(("<wait", "<open")):
            continue  # the connection itself
        lines.append((role, text))

    def client_sends(data: bytes, expected: bytes) -> None:
        assert data == expected, (data, expected)
        server.receive_data(data)

    def server_answers(reply_wire: bytes) -> None:
        nonlocal current
        expected = ReplyParser(enhanced=False)
        expected.feed(reply_wire)
        reply = expected.next_reply()
        assert reply is not None
        exempt = server.state is ServerState.GREETING
        if not exempt and not server.reply_due:
            while True:
                try:
                    event = server.next_event()
                except RemoteProtocolError as exc:
                    refused: Reply | None = exc.reply
                else:
                    refused = None
                if refused is not None:
                    # The protocol refused it; the RFC's reply must agree.
                    assert refused.code == reply.code, (refused, reply)
                    to_server.popleft()
                    break
                assert event is not NEED_DATA, f"server waits; RFC says {reply}"
                if isinstance(event, BodyChunk):
                    current += event.data
                elif isinstance(event, Command):
                    assert event == to_server.popleft()
                elif isinstance(event, EndOfData):
                    bodies.append(bytes(current))
                    current = bytearray()
                if server.replies_due:
                    exempt = event.__class__.__name__ in ("Helo", "Ehlo", "Lhlo")
                    break
        out = server.send(reply)
        assert out == (reply_wire if exempt else _with_generic_code(reply_wire)), out
        client.receive_data(out)
        got = client.next_event()
        client_events.append(got)
        assert isinstance(got, Greeting | Response | DataResponse), got
        assert got.reply.code == reply.code
        assert got.reply.lines[-1].endswith(reply.lines[-1])
        if isinstance(got, Response):
            assert got.command == to_client.popleft()
        elif isinstance(got, DataResponse):
            head = to_client[0] if to_client else None
            if isinstance(head, Bdat) and head.last:
                to_client.popleft()

    for role, text in lines:
        if role == server_role:
            pending_reply.append(text.encode() + CRLF)
            if len(text) == 3 or text[3] == " ":
                wire = b"".join(pending_reply)
                pending_reply.clear()
                server_answers(wire)
                if wire.startswith(b"354"):
                    mode = "body"
            continue
        assert role == client_role, role
        if mode == "body":
            if text == ".":
                client_sends(client.end_body(), b".\r\n")
                mode = "command"
            else:
                content = text[1:] if text.startswith(".") else text
                sent = client.send_body(content.encode() + CRLF)
                client_sends(sent, text.encode() + CRLF)
            continue
        if mode == "chunk":
            assert chunk is not None
            if _CHUNK_PLACEHOLDER.fullmatch(text):
                chunk_data += rng.randbytes(chunk.size - len(chunk_data))
            else:
                chunk_data += text.replace("<CR><LF>", "\r\n").encode()
            assert len(chunk_data) <= chunk.size
            if len(chunk_data) == chunk.size:
                sent = client.send_chunk(bytes(chunk_data), last=chunk.last)
                client_sends(sent, chunk.to_bytes() + chunk_data)
                mode = "command"
            continue
        command = parse_command(text.encode(), utf8=True)
        to_server.append(command)
        to_client.append(command)
        if isinstance(command, Bdat):
            chunk, chunk_data = command, bytearray()
            if command.size == 0:
                client_sends(client.send_chunk(b"", last=command.last), text.encode() + CRLF)
            else:
                mode = "chunk"
            continue
        client_sends(client.send(command), text.encode() + CRLF)
    assert not pending_reply
    return Replay(client, server, bodies, client_events)


__all__ = [
    "CRLF",
    "MAX_COMMAND_LINE",
    "Pair",
    "Replay",
    "Run",
    "accept_everything",
    "bytewise",
    "drive",
    "pump",
    "replay",
    "server_bound",
    "split_at",
]
