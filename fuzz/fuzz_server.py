"""Coverage-guided fuzzing of the server side: command lines, bodies, chunks.

A ``ServerConnection`` is fed arbitrary bytes, split into reads of varying
sizes, and every event is answered as an I/O layer would (the protocol's own
error reply when ``next_event`` raises).  A failure is any of:

- an exception other than ``RemoteProtocolError`` out of ``next_event``, or
  any exception out of ``send`` (the driver only sends what is due);
- more than the bound buffered once the connection asks for more data
  (RFC 5321 4.5.3.1: an over-long line is never buffered);
- a reply line that is not CRLF-terminated or is over 512 octets
  (RFC 5321 4.5.3.1.5);
- a different result for the same bytes read in one piece (chunking
  invariance), when no STARTTLS handshake made timing matter.

Run by ``nox -s fuzz -- SECONDS``; without a corpus directory on the command
line, one under the temporary directory is seeded with real dialogues.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from smtp_message import (
        NEED_DATA,
        PAUSED,
        Auth,
        AuthResponse,
        BareLineEndings,
        BodyChunk,
        ConnectionClosed,
        RemoteProtocolError,
        Reply,
        ServerConnection,
        ServerSettings,
        ServerState,
        replies,
    )
    from smtp_message._limits import MAIL_LINE_ALLOWANCE, MAX_AUTH_LINE

SEEDS = [
    b"EHLO c.example\r\nMAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME\r\n"
    b"RCPT TO:<c@d.example> NOTIFY=SUCCESS ORCPT=rfc822;c+40d\r\nDATA\r\n"
    b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    b"EHLO c.example\r\nMAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<Postmaster>\r\n"
    b"BDAT 5\r\n\x00\r\n.\rBDAT 0 LAST\r\nRSET\r\n",
    b"EHLO c.example\r\nAUTH PLAIN\r\nAHUAcA==\r\nAUTH LOGIN dXNlcg==\r\n*\r\n",
    b"EHLO c.example\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n",
    b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    b"DATA\r\nbare\n.\nMAIL FROM:<x@y>\r\n.\r\n",
    b"LHLO c.example\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@[IPv6:::1]>\r\n"
    b"RCPT TO:<\xc3\xa9@b\xc3\xbccher.example>\r\nDATA\r\n.\r\n",
    b"NOOP " + b"x" * 600 + b"\r\nVRFY me\r\nEXPN all\r\nHELP\r\nQUIT\r\n",
]


def settings_from(flags: int) -> ServerSettings:
    """One of the server configurations, chosen by a byte of the input."""
    return ServerSettings(
        hostname="mx.example",
        lmtp=bool(flags & 1),
        starttls=bool(flags & 2),
        auth_mechanisms=("PLAIN", "LOGIN") if flags & 4 else (),
        auth_requires_tls=not flags & 8,
        bare_line_endings=BareLineEndings.KEEP if flags & 16 else BareLineEndings.REJECT,
        max_message_size=64 if flags & 32 else 1 << 20,
        max_recipients=100,
        extra_mail_parameters=("XFOO",) if flags & 64 else (),
    )


def answer(conn: ServerConnection, event: Any, n: int) -> Reply:
    """A varied but legal answer to the ``n``-th event."""
    if isinstance(event, Auth):
        return Reply(334, None, "")
    if isinstance(event, AuthResponse):
        if n % 3 == 0:
            return Reply(334, None, "")
        if n % 3 == 1:
            conn.authenticated("fuzz")
            return Reply(235, "2.7.0", "ok")
        return Reply(535, "5.7.8", "no")
    if n % 7 == 3 and not isinstance(event, ConnectionClosed):
        return Reply(451, "4.3.0", "try later")
    return conn.default_reply(event)


def check_reply(wire: bytes) -> None:
    """RFC 5321 4.5.3.1.5: CRLF-terminated reply lines of 512 octets at most."""
    assert wire.endswith(b"\r\n"), wire
    for line in wire.split(b"\r\n")[:-1]:
        assert len(line) + 2 <= 512, line
        assert b"\r" not in line
        assert b"\n" not in line


def comparable(events: list[Any]) -> list[Any]:
    """The events with the data of unfinished bodies dropped.

    A body refused for its size or a bare line ending, or cut by the end of
    the connection, is given out as it arrives until the violation (or the
    end) shows, so how much of it came out depends on the reads; that it was
    refused or cut, and everything else, does not.
    """
    out: list[Any] = []
    for event in events:
        unfinished = isinstance(event, ConnectionClosed) or (
            isinstance(event, tuple)
            and event[1] in (replies.BARE_LINE_ENDING, replies.MESSAGE_TOO_BIG)
        )
        if unfinished and out and isinstance(out[-1], BodyChunk):
            out.pop()
        out.append(event)
    return out


def closed(conn: ServerConnection) -> bool:
    """Whether the session is over (a call, so mypy does not narrow it)."""
    return conn.state is ServerState.CLOSED


def run(settings: ServerSettings, chunks: list[bytes]) -> tuple[list[Any], bytes, bool]:
    """Drive a server over ``chunks``; (events, output, paused)."""
    conn = ServerConnection(settings)
    output = bytearray(conn.send(conn.greeting()))
    events: list[Any] = []
    paused = False
    answered = 0  # events answered so far: picks each answer, whatever the reads
    bound = max(MAX_AUTH_LINE, settings.max_line_length + MAIL_LINE_ALLOWANCE)
    for chunk in [*chunks, b""]:
        if closed(conn):
            break
        conn.receive_data(chunk)
        while not closed(conn):
            try:
                event = conn.next_event()
            except RemoteProtocolError as exc:
                refusal = exc.reply
            else:
                refusal = None
            if refusal is not None:
                assert refusal.code >= 400, refusal
                events.append(("error", refusal))
                while conn.reply_due:
                    wire = conn.send(refusal)
                    check_reply(wire)
                    output += wire
                continue
            if event is NEED_DATA:
                assert len(conn.trailing_data) < bound
                break
            if event is PAUSED:
                paused = True
                conn.tls_established()
                continue
            if isinstance(event, BodyChunk) and events and isinstance(events[-1], BodyChunk):
                events[-1] = BodyChunk(events[-1].data + event.data)
            else:
                events.append(event)
            if isinstance(event, ConnectionClosed):
                break
            while conn.reply_due:
                answered += 1
                wire = conn.send(answer(conn, event, answered))
                check_reply(wire)
                output += wire
    return comparable(events), bytes(output), paused


def test_one_input(data: bytes) -> None:
    """One fuzz case: settings byte, split-size byte, then the client's bytes."""
    if len(data) < 2:
        return
    settings = settings_from(data[0])
    wire = data[2:]
    step = 1 + data[1] % 97
    chunks = [wire[i : i + step] for i in range(0, len(wire), step)]
    events, output, paused = run(settings, chunks)
    if not paused:
        whole_events, whole_output, _ = run(settings, [wire] if wire else [])
        assert whole_events == events, (whole_events, events)
        assert whole_output == output


def main() -> None:
    """Fuzz until libFuzzer's -max_total_time (or forever)."""
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # A corpus that persists between runs (libFuzzer adds to it) and
        # stays out of the repository.
        corpus = Path(tempfile.gettempdir()) / "smtp-message-fuzz" / "server"
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(SEEDS):
            for flags in (0, 7, 0x2E):
                (corpus / f"seed-{i}-{flags}").write_bytes(bytes([flags, 13]) + seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
