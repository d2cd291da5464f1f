"""Coverage-guided fuzzing of the DATA reader and its inverse, the dot-stuffer.

The input is read as a DATA body, in reads of varying sizes, under one of the
bare-line-ending policies and possibly a size limit, and compared with a
line-by-line reference reader (RFC 5321 4.1.1.4 and 4.5.2).  A failure is
any of:

- an exception out of ``DataReader.read``;
- an end found anywhere but at the first ``CRLF . CRLF`` (SMTP smuggling);
- a body, leftover or violation that differs from the reference's (under
  ``NORMALIZE``, the reference's body with each bare CR or LF made CRLF);
- more than four octets held back while the end is not found;
- stuffing the input with ``DotStuffer`` (in reads of another size) and
  reading it back not giving the input, line endings normalised.

Run by ``nox -s fuzz -- SECONDS``; without a corpus directory on the command
line, one under the temporary directory is seeded with bodies and smuggling vectors.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from smtp_message import (
        BareLineEndings,
        DataReader,
        DotStuffer,
        LineEndingNormalizer,
        ReceiveBuffer,
        replies,
    )

POLICIES = (BareLineEndings.REJECT, BareLineEndings.KEEP, BareLineEndings.NORMALIZE)
SEEDS = [
    b"Subject: x\r\n\r\nbody\r\n.\r\n",
    b"..leading\r\n...two\r\n.\r\nNOOP\r\n",
    b".\r\n",
    b"a\n.\nMAIL FROM:<x@y>\r\n.\r\n",
    b"a\r.\rMAIL FROM:<x@y>\r\n.\r\n",
    b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n",
    b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n",
    b"a\r.\r\nMAIL FROM:<x@y>\r\n.\r\n",
    b"\r\n\r\n.\r\n\r\n",
    b"x" * 200 + b"\r\n.x\r\n" * 5 + b".\r\n",
]


def reference(wire: bytes) -> tuple[bytes, bool, bytes, bool]:
    """Line by line: (body so far, ended, leftover, has a bare CR or LF)."""
    lines = wire.split(b"\r\n")
    out: list[bytes] = []
    for i, line in enumerate(lines[:-1]):
        if line == b".":
            body = b"".join(out)
            return body, True, b"\r\n".join(lines[i + 1 :]), _bare(out)
        out.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
    partial = lines[-1]
    out.append(partial[1:] if partial.startswith(b".") else partial)
    return b"".join(out), False, b"", _bare(out)


def normalized(body: bytes) -> bytes:
    """RFC 5321 2.3.8: every bare CR and bare LF made CRLF."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", body)


def _bare(pieces: list[bytes]) -> bool:
    return any(b"\r" in p[:-2] or b"\n" in p[:-2] for p in pieces if p.endswith(b"\r\n"))


def read(
    chunks: list[bytes], policy: BareLineEndings, max_size: int | None
) -> tuple[bytes, bool, bytes, DataReader]:
    """(body, ended, leftover, reader) of a DataReader fed ``chunks``."""
    reader = DataReader(policy, max_size)
    buffer = ReceiveBuffer()
    out = bytearray()
    for i, chunk in enumerate(chunks):
        buffer.feed(chunk)
        data, finished = reader.read(buffer)
        out += data
        if finished:
            rest = bytes(buffer.data) + b"".join(chunks[i + 1 :])
            return bytes(out), True, rest, reader
        assert len(buffer) <= 4, len(buffer)
    return bytes(out), False, b"", reader


def split(data: bytes, step: int) -> list[bytes]:
    """``data`` in reads of ``step`` octets."""
    return [data[i : i + step] for i in range(0, len(data), step)] or [b""]


def test_one_input(data: bytes) -> None:
    """One fuzz case: a flags byte, a split-size byte, then the body."""
    if len(data) < 2:
        return
    policy = POLICIES[data[0] % 3]
    max_size = 50 if data[0] & 4 else None
    wire = data[2:]
    step = 1 + data[1] % 61
    body, ended, rest, bare = reference(wire)
    if policy is BareLineEndings.NORMALIZE:
        # The end and the unstuffing follow CRLF only, as under KEEP.
        body = normalized(body)
    out, finished, leftover, reader = read(split(wire, step), policy, max_size)
    assert finished == ended
    if ended:
        assert leftover == rest
    refusals = set()
    if policy is BareLineEndings.REJECT and bare:
        refusals.add(replies.BARE_LINE_ENDING)
    if max_size is not None and len(body) > max_size:
        refusals.add(replies.MESSAGE_TOO_BIG)
    if refusals and ended:
        # With both, the bare line ending wins, wherever the reads fell.
        first = replies.BARE_LINE_ENDING if len(refusals) == 2 else refusals.pop()
        assert reader.violation == first, reader.violation
    elif ended:
        assert reader.violation is None
        assert out == body
        assert reader.size == len(body)
    elif reader.violation is None:
        assert body.startswith(out)
        assert len(body) - len(out) <= 4

    # The inverse: what a sender stuffs, a reader unstuffs to the same body.
    stuffer = DotStuffer()
    sent = b"".join(stuffer.feed(c) for c in split(wire, 1 + data[1] % 7)) + stuffer.end()
    normalizer = LineEndingNormalizer()
    expected = normalizer.feed(wire) + normalizer.flush()
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    out, finished, leftover, reader = read(split(sent, step), BareLineEndings.REJECT, None)
    assert finished
    assert leftover == b""
    assert reader.violation is None
    assert out == expected


def main() -> None:
    """Fuzz until libFuzzer's -max_total_time (or forever)."""
    argv = list(sys.argv)
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # A corpus that persists between runs (libFuzzer adds to it) and
        # stays out of the repository.
        corpus = Path(tempfile.gettempdir()) / "smtp-message-fuzz" / "data"
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(SEEDS):
            for flags in (0, 1, 2, 4):
                (corpus / f"seed-{i}-{flags}").write_bytes(bytes([flags, 3]) + seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
