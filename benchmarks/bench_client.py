"""Client throughput: smtp_client against aiosmtplib, to a discard server.

10,000 messages of 1 KiB (issue 5), each client over one reused connection
to a discard server in its own process:

- ``smtp-sink`` (Postfix's fast C test server): PIPELINING but no
  CHUNKING, so each message is ``MAIL RCPT DATA`` then the body.
  smtp_client pipelines the envelope (two round trips per message);
  aiosmtplib does not pipeline (four).
- ``smtp-mta sink --discard`` (this project's server, on asyncio): it also
  offers CHUNKING, so smtp_client sends ``MAIL RCPT BDAT LAST`` and the
  body in one write (one round trip per message).

The clients run in interleaved rounds (each once per round, in turn), so a
noisy neighbour on this shared machine hurts them alike; the table gives
each client's median over the rounds, and the ratio of medians to
aiosmtplib measured in the same run.  The CPU time of the client process
per message is reported too: on a loopback, Python's per-message work is
what bounds both clients.

Run: ``nox -s bench`` (or ``python benchmarks/bench_client.py --rounds 5``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiosmtplib
import anyio

from smtp_client import Client, Envelope, SmartHost, Status, TLSPolicy

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SENDER = "bench@client.test"
RECIPIENT = "sink@server.test"


def message(size: int = 1024) -> bytes:
    """A message of exactly ``size`` octets, lines of 78 characters."""
    head = b"From: bench@client.test\r\nTo: sink@server.test\r\nSubject: bench\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    body = head + line * ((size - len(head)) // len(line) + 1)
    return body[: size - 2] + b"\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def smtp_sink(port: int) -> list[str]:
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return [SMTP_SINK, *user, f"127.0.0.1:{port}", "256"]


def smtp_mta_sink(port: int) -> list[str]:
    listen = f"127.0.0.1:{port}"
    return [sys.executable, "-m", "smtp_mta._cli", "sink", "--discard", "--listen", listen]


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "smtp-sink": smtp_sink,
    "smtp-mta sink": smtp_mta_sink,
}


def start_server(command: Callable[[int], list[str]]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)
            return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command(port)[0]} did not start") from None
            time.sleep(0.05)


@dataclass
class Run:
    rate: float  # messages per second
    cpu_us: float  # client CPU per message, microseconds


async def smtp_client_run(port: int, count: int, body: bytes) -> Run:
    destination = SmartHost("127.0.0.1", port, tls=TLSPolicy.none())
    envelope = Envelope.build(SENDER, [RECIPIENT])
    async with Client(helo="client.test") as client:
        # The first message opens the connection; the clock starts after it.
        first = await client.send(destination, envelope, body)
        assert first.recipients[0].status is Status.DELIVERED, first
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            result = await client.send(destination, envelope, body)
            if result.recipients[0].status is not Status.DELIVERED:
                raise RuntimeError(f"not delivered: {result}")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Run(count / wall, cpu / count * 1e6)


async def aiosmtplib_run(port: int, count: int, body: bytes) -> Run:
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        use_tls=False,
        start_tls=False,
        local_hostname="client.test",
    )
    await smtp.connect()
    await smtp.sendmail(SENDER, [RECIPIENT], body)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        errors, _reply = await smtp.sendmail(SENDER, [RECIPIENT], body)
        if errors:
            raise RuntimeError(f"not delivered: {errors}")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    await smtp.quit()
    return Run(count / wall, cpu / count * 1e6)


@dataclass
class Contender:
    name: str
    run: Callable[[int, int, bytes], Awaitable[Run]]
    backend: str
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def median_rate(self, server: str) -> float:
        return statistics.median(r.rate for r in self.runs[server])

    def median_cpu(self, server: str) -> float:
        return statistics.median(r.cpu_us for r in self.runs[server])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1024, help="message size in octets")
    parser.add_argument("--no-trio", action="store_true", help="skip smtp_client on trio")
    parser.add_argument(
        "--server", choices=[*SERVERS, "all"], default="all", help="discard server(s)"
    )
    args = parser.parse_args()
    if not os.path.exists(SMTP_SINK):
        sys.exit(f"{SMTP_SINK} not found (Debian package postfix)")
    servers = list(SERVERS) if args.server == "all" else [args.server]
    body = message(args.size)
    assert len(body) == args.size
    contenders = [
        Contender("smtp_client (asyncio)", smtp_client_run, "asyncio"),
        Contender("aiosmtplib (asyncio)", aiosmtplib_run, "asyncio"),
    ]
    if not args.no_trio:
        contenders.append(Contender("smtp_client (trio)", smtp_client_run, "trio"))
    running = {name: start_server(SERVERS[name]) for name in servers}
    try:
        for number in range(1, args.rounds + 1):
            for server, (_proc, port) in running.items():
                line = []
                for c in contenders:
                    run = anyio.run(c.run, port, args.messages, body, backend=c.backend)
                    c.runs.setdefault(server, []).append(run)
                    line.append(f"{c.name} {run.rate:,.0f}/s")
                print(f"round {number}, {server}: " + ", ".join(line), flush=True)
    finally:
        for proc, _port in running.values():
            proc.terminate()
            proc.wait(10)
    reference = contenders[1]
    for server in servers:
        print()
        print(
            f"{server}: {args.messages:,} messages of {args.size} octets over one "
            f"connection, median of {args.rounds} interleaved rounds"
        )
        print(f"{'client':<24} {'messages/s':>12} {'CPU us/msg':>12} {'vs aiosmtplib':>14}")
        for c in contenders:
            ratio = c.median_rate(server) / reference.median_rate(server)
            rate, cpu = c.median_rate(server), c.median_cpu(server)
            print(f"{c.name:<24} {rate:>12,.0f} {cpu:>12,.0f} {ratio:>13.2f}x")
        pairs = zip(contenders[0].runs[server], reference.runs[server], strict=True)
        ratios = ", ".join(f"{a.rate / b.rate:.2f}" for a, b in pairs)
        print(f"smtp_client/aiosmtplib per round (asyncio): {ratios}")


if __name__ == "__main__":
    main()
