"""smtp_message's hot paths against aiosmtpd's, in the same run (issue 2).

(a) DATA: a 10 MB body of 78-character lines (one in 50 starting with a
    dot, so dot-stuffed on the wire), fed in 64 KiB reads:

    - ``DataReader``: smtp_message's unstuffing reader alone;
    - ``ServerConnection``: the same body through a whole sans-IO server
      session (events, size accounting), what smtp-server drives;
    - aiosmtpd's ``SMTP`` protocol: its DATA handling lives in the
      ``smtp_DATA`` coroutine, which reads line by line from an asyncio
      ``StreamReader`` and cannot be called apart from the protocol.  It is
      run as it runs in production, an asyncio protocol, with an in-memory
      transport instead of a socket: the body is handed to
      ``data_received`` in the same 64 KiB reads, so neither side pays for a
      socket.  Its figure includes asyncio's scheduling, which is part of
      its design;
    - ``bytes.replace``: one C pass over each read, unstuffing only (no end
      detection, no line-ending checks): the ceiling for any reader written
      in Python, not a reader;
    - ``DataReader`` again on a body where every line is dot-stuffed, the
      worst case for per-line loops.

(b) ``MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME``: commands parsed
    per second by ``parse_command``, and by the steps aiosmtpd's
    ``_handle_client`` and ``smtp_MAIL`` take to parse the same line (their
    own methods ``_strip_command_keyword``, ``_getaddr`` and ``_getparams``,
    called as smtp_MAIL calls them; state checks and I/O left out).  The
    standard library has no MAIL parser left (``smtpd`` is gone in 3.12).

Every implementation runs once per round, in turn (interleaved), so a noisy
neighbour on this shared machine hurts all alike; the table gives the
median of the rounds and each one's ratio to smtp_message measured in the
same rounds.  Each run's output is checked against the body sent.

Run: ``nox -s bench`` (or ``python benchmarks/bench_message.py --rounds 9``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import timeit
from typing import TYPE_CHECKING, Any

import aiosmtpd
import aiosmtpd.smtp

from smtp_message import (
    NEED_DATA,
    BodyChunk,
    DataReader,
    EndOfData,
    ReceiveBuffer,
    ServerConnection,
    ServerSettings,
    parse_command,
)

if TYPE_CHECKING:
    from collections.abc import Callable

MB = 1_000_000
READ = 64 * 1024
MAIL_LINE = b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME"
TEXT = (
    b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
    b"tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam"
)


def make_body(size: int, dot_every: int) -> bytes:
    """``size`` octets of 78-character lines; every ``dot_every``-th starts with '.'."""
    lines = []
    for i in range(size // 80):
        start = i % 50
        line = TEXT[start : start + 78]
        if i % dot_every == 0:
            line = b"." + line[1:]
        lines.append(line + b"\r\n")
    return b"".join(lines)


def stuff(body: bytes) -> bytes:
    """The body on the wire (RFC 5321 4.5.2), with its terminator."""
    wire = body.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    return wire + b".\r\n"


def reads(wire: bytes) -> list[bytes]:
    return [wire[i : i + READ] for i in range(0, len(wire), READ)]


# -- (a) DATA -----------------------------------------------------------------------


def run_data_reader(chunks: list[bytes]) -> tuple[float, bytes]:
    start = time.perf_counter()
    reader = DataReader()
    buffer = ReceiveBuffer()
    out = []
    for chunk in chunks:
        buffer.feed(chunk)
        data, finished = reader.read(buffer)
        out.append(data)
    elapsed = time.perf_counter() - start
    assert finished
    assert reader.violation is None
    return elapsed, b"".join(out)


ENVELOPE = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"


def run_server_connection(chunks: list[bytes]) -> tuple[float, bytes]:
    conn = ServerConnection(ServerSettings(hostname="bench.example"))
    conn.send(conn.greeting())
    conn.receive_data(ENVELOPE)
    for _ in range(4):
        event: Any = conn.next_event()
        conn.send(conn.default_reply(event))
    out = []
    start = time.perf_counter()
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            if isinstance(event, BodyChunk):
                out.append(event.data)
            else:
                assert isinstance(event, EndOfData)
                conn.send(conn.default_reply(event))
    elapsed = time.perf_counter() - start
    return elapsed, b"".join(out)


class _Transport(asyncio.Transport):
    """Where aiosmtpd writes its replies: memory, not a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 25025) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Sink:
    """An aiosmtpd handler that keeps the last message's content."""

    def __init__(self) -> None:
        self.content = b""
        self.done = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.content = envelope.content
        self.done.set()
        return "250 OK"


async def _aiosmtpd(chunks: list[bytes]) -> tuple[float, bytes]:
    loop = asyncio.get_running_loop()
    sink = _Sink()
    protocol = aiosmtpd.smtp.SMTP(sink, hostname="bench.example", loop=loop)
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.data_received(ENVELOPE)
    for _ in range(100):  # a few turns of the loop: EHLO, MAIL, RCPT, DATA
        if b"354" in transport.written:
            break
        await asyncio.sleep(0)
    assert b"354" in transport.written, transport.written
    start = time.perf_counter()
    for chunk in chunks:
        protocol.data_received(chunk)
        await asyncio.sleep(0)  # let the session task read what arrived
    await sink.done.wait()
    elapsed = time.perf_counter() - start
    protocol.connection_lost(None)
    await asyncio.sleep(0)
    return elapsed, sink.content


def run_aiosmtpd(chunks: list[bytes]) -> tuple[float, bytes]:
    return asyncio.run(_aiosmtpd(chunks))


def run_replace(chunks: list[bytes]) -> tuple[float, bytes]:
    start = time.perf_counter()
    out = [chunk.replace(b"\r\n..", b"\r\n.") for chunk in chunks]
    elapsed = time.perf_counter() - start
    assert len(out) == len(chunks)
    return elapsed, b""  # not a reader: its output is not checked


# -- (b) MAIL -----------------------------------------------------------------------


def parse_ours() -> object:
    return parse_command(MAIL_LINE)


def make_aiosmtpd_parser() -> Callable[[], object]:
    """aiosmtpd's parsing of one MAIL line, step by step as it does it."""
    protocol = aiosmtpd.smtp.SMTP(_Sink(), hostname="bench.example", loop=asyncio.new_event_loop())

    def parse() -> object:
        # _handle_client: split the verb from its argument.
        line = MAIL_LINE.rstrip(b"\r\n")
        command_bytes, _, arg_bytes = line.partition(b" ")
        command = command_bytes.upper().decode("ascii")
        arg = str(arg_bytes.strip(), encoding="utf-8", errors="surrogateescape")
        # smtp_MAIL: the path, then the parameters.
        rest = protocol._strip_command_keyword("FROM:", arg)
        assert rest is not None
        address, addrparams = protocol._getaddr(rest)
        assert address
        assert addrparams is not None
        params = protocol._getparams(addrparams.upper().split())
        assert params is not None
        body = params.pop("BODY", "7BIT")
        size = params.pop("SIZE", None)
        assert body in ("7BIT", "8BITMIME")
        assert isinstance(size, str)
        assert size.isdigit()
        return command, address, int(size), body

    return parse


# -- Running and reporting ----------------------------------------------------------


def rounds_of(
    runners: dict[str, Callable[[], tuple[float, bytes]]],
    expected: dict[str, bytes],
    rounds: int,
) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            elapsed, out = runner()
            if name in expected:
                assert out == expected[name], f"{name} read the body wrong"
            times[name].append(elapsed)
    return times


def table(title: str, unit: str, rows: list[tuple[str, list[float], float]], base: str) -> None:
    """Print rates (work / seconds) as medians, with ratios to ``base``."""
    base_times = next(times for name, times, _ in rows if name == base)
    print(f"\n{title}; ratio: to {base}, round by round")
    print(f"{'implementation':<52} {unit:>12} {'ratio':>12}")
    for name, times, work in rows:
        rate = work / statistics.median(times)
        ratios = [b / t for b, t in zip(base_times, times, strict=True)]
        print(f"{name:<52} {rate:>12,.0f} {statistics.median(ratios):>11.2f}x")


DATA_BASE = "smtp_message DataReader"
PARSE_BASE = "smtp_message parse_command"


def bench_data(rounds: int) -> None:
    body = make_body(10 * MB, dot_every=50)
    wire = stuff(body)
    chunks = reads(wire)
    dotted = make_body(10 * MB, dot_every=1)
    dotted_chunks = reads(stuff(dotted))
    aiosmtpd_name = f"aiosmtpd {aiosmtpd.__version__} SMTP protocol (asyncio, memory)"
    runners: dict[str, Callable[[], tuple[float, bytes]]] = {
        DATA_BASE: lambda: run_data_reader(chunks),
        "smtp_message ServerConnection (session events)": (lambda: run_server_connection(chunks)),
        aiosmtpd_name: lambda: run_aiosmtpd(chunks),
        "bytes.replace per read (ceiling; not a reader)": lambda: run_replace(chunks),
        "smtp_message DataReader, every line dot-stuffed": (lambda: run_data_reader(dotted_chunks)),
    }
    expected = {name: body for name in runners if "replace" not in name}
    expected["smtp_message DataReader, every line dot-stuffed"] = dotted
    times = rounds_of(runners, expected, rounds)
    print(
        f"(a) DATA: {len(wire) / MB:.1f} MB on the wire, {len(body) // 80} lines of"
        f" 78 characters, 1 in 50 dot-stuffed, {READ // 1024} KiB reads;"
        f" median of {rounds} interleaved rounds"
    )
    rows = [(name, t, len(wire) / MB) for name, t in times.items()]
    table(
        "Dot-unstuffing throughput (MB of wire octets per second)",
        "MB/s",
        rows,
        DATA_BASE,
    )


def bench_parse(rounds: int) -> None:
    aiosmtpd_parse = make_aiosmtpd_parser()
    number = 20_000
    aiosmtpd_name = f"aiosmtpd {aiosmtpd.__version__} MAIL parsing steps"
    times: dict[str, list[float]] = {PARSE_BASE: [], aiosmtpd_name: []}
    for _ in range(rounds):
        times[PARSE_BASE].append(timeit.timeit(parse_ours, number=number))
        times[aiosmtpd_name].append(timeit.timeit(aiosmtpd_parse, number=number))
    print(
        f"\n(b) {MAIL_LINE.decode()}: {number} parses per round,"
        f" median of {rounds} interleaved rounds"
    )
    rows = [(name, t, float(number)) for name, t in times.items()]
    table("Command parsing (commands per second)", "commands/s", rows, PARSE_BASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds")
    # nox passes the same arguments to every benchmark: ignore the others'.
    args, _ = parser.parse_known_args()
    bench_data(args.rounds)
    bench_parse(args.rounds)


if __name__ == "__main__":
    main()
