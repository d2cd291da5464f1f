"""Many idle connections: memory per idle session, and service meanwhile.

Issue 3 asks that ``serve()`` hold at least 10,000 concurrent idle
connections on this machine while still serving new ones promptly.  This
opens N connections to a server (from a separate process), waits until
each has its greeting, and then:

- reports the server's resident memory growth per idle session;
- times complete transactions (EHLO, MAIL, RCPT, DATA, QUIT with smtplib)
  on fresh connections while the N stay open.

It does the same for aiosmtpd in the same run.  Run:
``python benchmarks/bench_idle.py --connections 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}") from None
            time.sleep(0.05)
    raise RuntimeError("server did not start")


async def hold(port: int, count: int, ready: asyncio.Event, release: asyncio.Event) -> None:
    writers = []
    sem = asyncio.Semaphore(100)  # connect in waves: listen backlogs are finite

    async def one() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            greeting = await reader.readline()
            if not greeting.startswith(b"220"):
                raise RuntimeError(f"greeting {greeting!r}")
            writers.append(writer)

    await asyncio.gather(*(one() for _ in range(count)))
    ready.set()
    await release.wait()
    for writer in writers:
        writer.close()


def transaction(port: int) -> float:
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("a@idle.example", ["b@idle.example"], b"Subject: x\r\n\r\nhi\r\n")
    return time.perf_counter() - start


async def measure(port: int, pid: int, count: int, samples: int) -> dict[str, float]:
    base = rss_kib(pid)
    empty = [await asyncio.to_thread(transaction, port) for _ in range(samples)]
    ready, release = asyncio.Event(), asyncio.Event()
    started = time.perf_counter()
    holder = asyncio.create_task(hold(port, count, ready, release))
    await ready.wait()
    opened = time.perf_counter() - started
    await asyncio.sleep(1)
    held = rss_kib(pid)
    busy = [await asyncio.to_thread(transaction, port) for _ in range(samples)]
    release.set()
    await holder
    return {
        "open s": opened,
        "KiB/session": (held - base) / count,
        "tx ms (0 idle)": statistics.median(empty) * 1000,
        "tx ms (N idle)": statistics.median(busy) * 1000,
        "tx max ms": max(busy) * 1000,
    }


def run(
    command: list[str], port: int, count: int, samples: int, limit: float
) -> dict[str, float] | None:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        return asyncio.run(asyncio.wait_for(measure(port, proc.pid, count, samples), limit))
    except TimeoutError:
        return None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--limit", type=float, default=300, help="seconds per server")
    parser.add_argument("--servers", default="ours,aiosmtpd")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        sys.exit(f"the open file limit ({hard}) is below {args.connections}")

    port = free_port()
    ours = [
        PYTHON, "-m", "smtp_mta._cli", "sink", "--discard", "--listen",
        f"127.0.0.1:{port}", "--max-sessions", str(args.connections * 2),
    ]  # fmt: skip
    aport = free_port()
    theirs = [
        PYTHON, "-c",
        "import resource, sys, runpy; h = resource.getrlimit(resource.RLIMIT_NOFILE)[1];"
        " resource.setrlimit(resource.RLIMIT_NOFILE, (h, h));"
        " sys.argv = ['aiosmtpd', '-n', '-c', 'aiosmtpd.handlers.Sink', '-l',"
        f" '127.0.0.1:{aport}']; runpy.run_module('aiosmtpd', run_name='__main__')",
    ]  # fmt: skip
    wanted = args.servers.split(",")
    rows: dict[str, dict[str, float] | None] = {}
    if "ours" in wanted:
        rows["smtp-mta sink (asyncio)"] = run(
            ours, port, args.connections, args.samples, args.limit
        )
    if "aiosmtpd" in wanted:
        rows["aiosmtpd"] = run(theirs, aport, args.connections, args.samples, args.limit)
    keys = ["open s", "KiB/session", "tx ms (0 idle)", "tx ms (N idle)", "tx max ms"]
    print(f"\n{args.connections} idle connections held open while timing transactions")
    print(f"{'server':<24}" + "".join(f"{k:>16}" for k in keys))
    for name, row in rows.items():
        if row is None:
            print(f"{name:<24}  did not hold them within {args.limit:.0f} s")
        else:
            print(f"{name:<24}" + "".join(f"{row[k]:>16.2f}" for k in keys))


if __name__ == "__main__":
    main()
