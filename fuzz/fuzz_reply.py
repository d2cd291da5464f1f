"""Coverage-guided fuzzing of the client side: the reply parser.

The input is what a (hostile) server sends.  A ``ReplyParser`` reads it in
reads of varying sizes, and a ``ClientConnection`` that has pipelined a
transaction reads it too.  A failure is any of:

- an exception other than ``ReplySyntaxError`` out of the parser or the
  client's ``next_event``;
- a reply out of the parser or the client after a ``ReplySyntaxError``:
  the error is final (RFC 5321 4.2: nothing after it can be trusted);
- more buffered than a line's bound once the parser asks for more;
- different replies for the same bytes read in one piece;
- a parsed reply that does not serialise to lines the parser reads back
  (RFC 5321 4.2, 4.5.3.1.5).

Run by ``nox -s fuzz -- SECONDS``; without a corpus directory on the command
line, one under the temporary directory is seeded with real replies.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from smtp_message import (
        NEED_DATA,
        PAUSED,
        ClientConnection,
        ConnectionClosed,
        Ehlo,
        Mailbox,
        MailFrom,
        RcptTo,
        Reply,
        ReplyParser,
        ReplySyntaxError,
    )

SEEDS = [
    b"220 mx.example ESMTP\r\n250-mx.example\r\n250-PIPELINING\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 1000\r\n250 2.1.0 ok\r\n"
    b"250 2.1.5 ok\r\n354 go\r\n",
    b"220 x\r\n250-x\r\n250 PIPELINING\r\n550-5.1.1 no\r\n550 5.1.1 such\r\n",
    b"220 x\r\n421 4.3.2 bye\r\n",
    b"554 no\r\n",
    b"220-a\r\n220-\r\n220 b\r\n250 x\r\n250 x\r\n250 x\r\n354 x\r\n",
]


def parse(chunks: list[bytes]) -> list[Reply] | None:
    """The replies in ``chunks``, or None if they are malformed."""
    parser = ReplyParser(max_line=512, max_lines=32)
    out = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (reply := parser.next_reply()) is not None:
                out.append(reply)
            assert parser.buffered < 512
    except ReplySyntaxError:
        parser.feed(b"250 2.0.0 OK\r\n")
        try:
            parser.next_reply()
        except ReplySyntaxError:
            return None
        raise AssertionError("a reply after a ReplySyntaxError") from None
    return out


def drive_client(chunks: list[bytes]) -> None:
    """A pipelining client reads ``chunks``; only ReplySyntaxError escapes."""
    conn = ClientConnection()
    hello = mail = False
    try:
        for chunk in [*chunks, b""]:
            conn.receive_data(chunk)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if isinstance(event, ConnectionClosed):
                    return
                if conn.awaiting:
                    continue
                if conn.state.name == "HELLO" and not hello:
                    conn.send(Ehlo("c.example"))
                    hello = True
                elif conn.state.name == "READY" and hello and not mail:
                    # RFC 2920: one group when the server allows it.
                    conn.send(MailFrom(Mailbox("a", "b.example")))
                    if conn.extensions.pipelining:
                        conn.send(RcptTo(Mailbox("c", "d.example")))
                    mail = True
    except ReplySyntaxError:
        assert conn.state.name == "CLOSED"
        conn.receive_data(b"250 2.0.0 OK\r\n")
        try:
            conn.next_event()
        except ReplySyntaxError:
            return
        raise AssertionError("an event after a ReplySyntaxError") from None


def test_one_input(data: bytes) -> None:
    """One fuzz case: a split-size byte, then the server's bytes."""
    if not data:
        return
    wire = data[1:]
    step = 1 + data[0] % 53
    chunks = [wire[i : i + step] for i in range(0, len(wire), step)]
    replies = parse(chunks)
    assert replies == parse([wire])
    for reply in replies or []:
        again = parse([reply.to_bytes()])
        assert again is not None
        assert len(again) == 1
        assert again[0].code == reply.code
    drive_client(chunks)


def main() -> None:
    """Fuzz until libFuzzer's -max_total_time (or forever)."""
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # A corpus that persists between runs (libFuzzer adds to it) and
        # stays out of the repository.
        corpus = Path(tempfile.gettempdir()) / "smtp-message-fuzz" / "reply"
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(SEEDS):
            (corpus / f"seed-{i}").write_bytes(b"\x05" + seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
