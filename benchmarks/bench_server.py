"""Server throughput and memory: ``smtp-mta sink --discard`` against aiosmtpd.

Each server runs in its own process on 127.0.0.1; the load comes from a
separate process.  Servers are measured in interleaved rounds (every
server once per round, in turn), so a noisy neighbour on this shared
machine hurts all of them alike; the table reports the median of the
rounds and the ratio to aiosmtpd measured in the same run.

Scenarios (issue 3):

- ``1/conn``: 1 KiB messages, one message per connection, 50 parallel
  sessions (Postfix's ``smtp-source -s 50``);
- ``100/conn``: 1 KiB messages, 100 per connection, 10 parallel sessions
  (``smtp-source -d -s 10``; smtp-source waits for each reply);
- ``pipelined``: the same, with every transaction pipelined (RFC 2920:
  one write for the next MAIL/RCPT/DATA and one for the body), from a load
  generator in this file;
- ``100 MB``: one 100 MB message; MB/s and the server's peak RSS growth.

Run: ``nox -s bench -- --rounds 3`` (or ``python benchmarks/bench_server.py``);
``--quick --only 1/conn`` measures one scenario against aiosmtpd alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

PYTHON = sys.executable
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
KIB = 1024
MB = 1_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    command: Callable[[int], list[str]]
    available: bool = True
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            self.command(self.port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.recv(512)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def reset_peak_rss(self) -> int:
        """Reset VmHWM to the current RSS (Linux: clear_refs 5); return it."""
        assert self.proc is not None
        # If not permitted, the peak may include earlier use (an overestimate).
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self.rss_kib()

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU time the server has used (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def rss_kib(self, key: str = "VmRSS") -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {key}")


def sink_command(backend: str) -> Callable[[int], list[str]]:
    def command(port: int) -> list[str]:
        return [
            PYTHON, "-m", "smtp_mta._cli", "sink", "--discard", "--max-size", "0",
            "--listen", f"127.0.0.1:{port}", "--backend", backend,
        ]  # fmt: skip

    return command


def aiosmtpd_command(port: int) -> list[str]:
    return [
        PYTHON, "-m", "aiosmtpd", "-n", "-c", "aiosmtpd.handlers.Sink",
        "-l", f"127.0.0.1:{port}",
    ]  # fmt: skip


def canned_command(port: int) -> list[str]:
    return [PYTHON, str(Path(__file__).with_name("canned_sink.py")), f"127.0.0.1:{port}"]


def smtp_sink_command(port: int) -> list[str]:
    # Postfix's C test sink; as root it wants a user to drop to.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return [SMTP_SINK, *user, f"127.0.0.1:{port}", "1024"]


def smtp_source(port: int, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [SMTP_SOURCE, *args, f"127.0.0.1:{port}"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


# -- The pipelined load generator -------------------------------------------------

BODY_1K = (b"Subject: benchmark\r\n\r\n" + (b"x" * 76 + b"\r\n") * 13)[: KIB - 2] + b"\r\n"
TRANSACTION = b"MAIL FROM:<a@bench.example>\r\nRCPT TO:<b@bench.example>\r\nDATA\r\n"


async def _read_replies(reader: asyncio.StreamReader, count: int) -> None:
    done = 0
    while done < count:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            done += 1
            if line[:1] not in b"23":
                raise RuntimeError(f"unexpected reply {line!r}")


async def _pipelined_session(port: int, messages: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _read_replies(reader, 1)
    writer.write(b"EHLO bench.example\r\n")
    await _read_replies(reader, 1)
    writer.write(TRANSACTION)
    for i in range(messages):
        await _read_replies(reader, 3)  # MAIL, RCPT, DATA (354)
        # RFC 2920: the end of data and the next transaction in one write.
        tail = TRANSACTION if i + 1 < messages else b"QUIT\r\n"
        writer.write(BODY_1K + b".\r\n" + tail)
    await _read_replies(reader, 2)  # the last message and QUIT
    writer.close()


def pipelined(port: int, sessions: int, per_session: int) -> float:
    async def main() -> None:
        await asyncio.gather(*(_pipelined_session(port, per_session) for _ in range(sessions)))

    start = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - start


# -- The run -----------------------------------------------------------------------


@dataclass
class Results:
    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, scenario: str, server: str, value: float) -> None:
        self.values.setdefault((scenario, server), []).append(value)

    def median(self, scenario: str, server: str) -> float | None:
        values = self.values.get((scenario, server))
        return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=3000, help="per throughput run")
    parser.add_argument("--large-mb", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="asyncio and aiosmtpd only")
    parser.add_argument(
        "--only",
        choices=["1/conn", "100/conn", "pipelined", "100 MB"],
        action="append",
        help="run only this scenario (repeatable); default: all",
    )
    args = parser.parse_args()
    only = set(args.only or ["1/conn", "100/conn", "pipelined", "100 MB"])

    servers = [
        Server("smtp-mta sink (asyncio)", sink_command("asyncio")),
        Server("aiosmtpd", aiosmtpd_command),
    ]
    if not args.quick:
        servers += [
            Server("smtp-mta sink (uvloop)", sink_command("uvloop")),
            Server("smtp-mta sink (trio)", sink_command("trio")),
            Server("postfix smtp-sink (C)", smtp_sink_command),
            # The ceiling of Python asyncio itself (canned_sink.py).
            Server("canned replies (asyncio)", canned_command),
        ]
    n = args.messages
    large = args.large_mb * MB
    results = Results()
    for r in range(args.rounds):
        for server in servers:
            server.start()
            try:
                if "1/conn" in only:
                    cpu_before = server.cpu_seconds()
                    t = smtp_source(server.port, "-s", "50", "-m", str(n), "-l", str(KIB))
                    results.add("1/conn", server.name, n / t)
                    cpu_after = server.cpu_seconds()
                    used = sum(cpu_after) - sum(cpu_before)
                    results.add("1/conn CPU us", server.name, used / n * 1e6)
                    sys_used = cpu_after[1] - cpu_before[1]
                    results.add("1/conn sys us", server.name, sys_used / n * 1e6)
                if "100/conn" in only:
                    cpu_before = server.cpu_seconds()
                    t = smtp_source(server.port, "-d", "-s", "10", "-m", str(n), "-l", str(KIB))
                    results.add("100/conn", server.name, n / t)
                    cpu_after = server.cpu_seconds()
                    used = sum(cpu_after) - sum(cpu_before)
                    results.add("100/conn CPU us", server.name, used / n * 1e6)
                if "pipelined" in only:
                    t = pipelined(server.port, 10, n // 10)
                    results.add("pipelined", server.name, n / t)
                if "100 MB" in only:
                    before = server.reset_peak_rss()
                    t = smtp_source(server.port, "-s", "1", "-m", "1", "-l", str(large))
                    results.add("100 MB MB/s", server.name, large / MB / t)
                    grown = (server.rss_kib("VmHWM") - before) / 1024
                    results.add("100 MB RSS+ MiB", server.name, grown)
            finally:
                server.stop()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    scenarios = ["1/conn", "100/conn", "pipelined", "100 MB MB/s", "100 MB RSS+ MiB"]
    scenarios += ["1/conn CPU us", "1/conn sys us", "100/conn CPU us"]
    width = max(len(s.name) for s in servers)
    print(f"\nmedian of {args.rounds} interleaved rounds; {n} messages per throughput run")
    # The ratios move with the interpreter (aiosmtpd and asyncio change
    # between versions): say which one the Python servers ran on.
    print(f"Python {platform.python_version()} ({PYTHON})")
    print(f"{'server':<{width}}  " + "  ".join(f"{s:>16}" for s in scenarios))
    for server in servers:
        cells = []
        for scenario in scenarios:
            value = results.median(scenario, server.name)
            ref = results.median(scenario, "aiosmtpd")
            if value is None:
                cells.append(f"{'-':>16}")
            elif "sys" in scenario:  # a part of the CPU column, no ratio
                cells.append(f"{value:>16.0f}")
            elif ref and "CPU" in scenario:  # lower is better: aiosmtpd's CPU / ours
                cells.append(f"{f'{value:.0f} ({ref / value:.2f}x)':>16}")
            elif ref and "RSS" not in scenario:
                cells.append(f"{f'{value:.0f} ({value / ref:.2f}x)':>16}")
            else:
                cells.append(f"{value:>16.1f}")
        print(f"{server.name:<{width}}  " + "  ".join(cells))
    print("\nmsgs/s for the throughput scenarios (ratio to aiosmtpd in the same run);")
    print("RSS+ is the server's peak resident memory growth while receiving 100 MB.")
    print("CPU us: the server's user+system CPU per message (ratio: aiosmtpd's / this),")
    print("which a busy neighbour on a shared machine disturbs less than wall time.")
    print("sys us: the kernel's part of the 1/conn CPU (accept, the 7 replies' sends, the")
    print("reads, close): mostly work every server pays, though it varies between runs.")


if __name__ == "__main__":
    main()
