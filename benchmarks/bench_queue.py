"""smtp-queue: durable enqueue throughput, and opening a 100,000-message spool.

Run by ``nox -s bench`` (or ``python benchmarks/bench_queue.py``).

1. Enqueue of 10 KiB messages with full durability (file fsync, rename,
   directory fsync before enqueue returns), by 1 and by 16 concurrent
   producers, under asyncio and trio, next to the physical ceiling measured
   in the same run: a plain loop of write + fsync + rename of 10 KiB files
   into one directory.  The variants are interleaved, round after round, and
   the medians compared, because the machine is shared and noisy.
2. A spool of 100,000 messages (half of them deferred, with a saved state):
   how long opening it takes (recovery, scan, schedule) and how much memory
   the open queue holds, each measured in a fresh process; next to the time a
   bare ``scandir`` + ``stat`` of the same directories takes.

Options (also from the environment, since nox passes its arguments to every
benchmark script): ``--quick`` / SMTP_QUEUE_BENCH=quick for a smoke run,
``--large`` / SMTP_QUEUE_BENCH=large for 1,000,000 messages and more rounds,
``--dir`` / SMTP_QUEUE_BENCH_DIR for where to put the spools (default: the
system temporary directory), ``--json PATH`` to save the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import attrs

from smtp_message import Mailbox
from smtp_queue import Envelope, FilesystemStore, MessageState, Queue, QueueSettings

BODY = (b"Subject: benchmark\r\n\r\n" + b"x" * 78 + b"\r\n") * 128  # 10 KiB + header
BODY = BODY[:10240]
ENVELOPE = Envelope(Mailbox("sender", "a.example"), [Mailbox("rcpt", "b.example")])
SETTINGS = QueueSettings(hostname="bench.example")


@attrs.frozen
class Scale:
    rounds: int
    messages: int
    spool: int
    open_runs: int


SCALES = {
    "quick": Scale(rounds=2, messages=300, spool=10_000, open_runs=1),
    "default": Scale(rounds=3, messages=1500, spool=100_000, open_runs=3),
    "large": Scale(rounds=7, messages=5000, spool=1_000_000, open_runs=3),
}


# -- 1. throughput ---------------------------------------------------------


def raw_loop(directory: Path, count: int) -> float:
    """The ceiling: write + fsync + rename, one file after another."""
    tmp, final = directory / "tmp", directory / "final"
    tmp.mkdir()
    final.mkdir()
    start = time.perf_counter()
    for i in range(count):
        path = tmp / str(i)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, BODY)
        os.fsync(fd)
        os.close(fd)
        os.rename(path, final / str(i))
    return count / (time.perf_counter() - start)


async def queue_producers(directory: Path, count: int, producers: int) -> float:
    async with Queue(FilesystemStore(directory / "spool"), SETTINGS) as queue:
        remaining = [count]

        async def produce() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await queue.enqueue(ENVELOPE, BODY)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(producers):
                tg.start_soon(produce)
        elapsed = time.perf_counter() - start
        assert (await queue.statistics()).messages == count
    return count / elapsed


def throughput(base: Path, scale: Scale) -> dict[str, list[float]]:
    variants: dict[str, Any] = {
        "raw write+fsync+rename": lambda d: raw_loop(d, scale.messages),
        "queue asyncio, 1 producer": lambda d: anyio.run(
            queue_producers, d, scale.messages, 1, backend="asyncio"
        ),
        "queue asyncio, 16 producers": lambda d: anyio.run(
            queue_producers, d, scale.messages, 16, backend="asyncio"
        ),
    }
    # The bench environment of nox may lack trio; measure it when present.
    if importlib.util.find_spec("trio") is not None:
        variants["queue trio, 1 producer"] = lambda d: anyio.run(
            queue_producers, d, scale.messages, 1, backend="trio"
        )
        variants["queue trio, 16 producers"] = lambda d: anyio.run(
            queue_producers, d, scale.messages, 16, backend="trio"
        )
    rates: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for round_number in range(scale.rounds):
        random.Random(round_number).shuffle(order)  # interleaved, in varying order
        for name in order:
            directory = Path(tempfile.mkdtemp(prefix="bench-", dir=base))
            try:
                rates[name].append(variants[name](directory))
            finally:
                shutil.rmtree(directory)
        print(f"  round {round_number + 1}/{scale.rounds} done", flush=True)
    return rates


# -- 2. a large spool --------------------------------------------------------


async def populate(directory: Path, count: int) -> None:
    """Fill a spool fast (no fsync: durability is not what is measured here)."""
    store = FilesystemStore(directory, durable=False)
    await store.open()
    body = BODY[:1024]
    made = [0]
    started = time.perf_counter()

    async def fill() -> None:
        while made[0] < count:
            n = made[0]
            made[0] += 1
            arrival = 1_700_000_000.0 + n
            message_id = await store.add(ENVELOPE, _one(body), arrival=arrival, max_size=None)
            if n % 2:
                # Half deferred: tried once, due again an hour after arrival.
                await store.update(message_id, _deferred)
            if n and n % 20_000 == 0:
                rate = n / (time.perf_counter() - started)
                print(f"  {n} messages ({rate:.0f}/s)", flush=True)

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(fill)
    await store.close()


def _deferred(state: MessageState) -> MessageState:
    return attrs.evolve(state, attempts=1, next_attempt=state.next_attempt + 3600)


async def _one(data: bytes) -> Any:
    yield data


def _status(field: str) -> int:
    """A size from /proc/self/status (VmRSS: resident now, VmHWM: peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


async def measure_open(directory: Path, trace: bool) -> dict[str, float]:
    """Open the queue on ``directory`` (in this fresh process) and measure."""
    rss_before = _status("VmRSS")
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    queue = Queue(FilesystemStore(directory), SETTINGS)
    await queue.open()
    elapsed = time.perf_counter() - start
    out = {
        "seconds": elapsed,
        "scheduled": queue.scheduled,
        "rss": _status("VmRSS") - rss_before,
        "rss_peak": _status("VmHWM") - rss_before,
    }
    if trace:
        current, peak = tracemalloc.get_traced_memory()
        out.update(traced=current, traced_peak=peak)
    await queue.aclose()
    return out


def measure_listing(directory: Path) -> dict[str, float]:
    """The reference: list msg/ and state/ and stat every entry."""
    start = time.perf_counter()
    n = 0
    for sub in ("msg", "state"):
        with os.scandir(directory / sub) as it:
            for entry in it:
                entry.stat()
                n += 1
    return {"seconds": time.perf_counter() - start, "entries": n}


def in_subprocess(*args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def big_spool(base: Path, scale: Scale) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="bench-spool-", dir=base)) / "spool"
    try:
        print(f"  populating {scale.spool} messages ...", flush=True)
        started = time.perf_counter()
        anyio.run(populate, directory, scale.spool)
        print(f"  populated in {time.perf_counter() - started:.0f} s", flush=True)
        opens, listings = [], []
        for _ in range(scale.open_runs):  # interleaved with the reference
            listings.append(in_subprocess("--measure-listing", str(directory)))
            opens.append(in_subprocess("--measure-open", str(directory)))
        traced = in_subprocess("--measure-open", str(directory), "--trace")
        assert all(o["scheduled"] == scale.spool for o in opens), opens
        return {"open": opens, "listing": listings, "traced": traced}
    finally:
        shutil.rmtree(directory.parent)


# -- report ------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("SMTP_QUEUE_BENCH", "default")
    parser.add_argument("--quick", action="store_const", const="quick", dest="scale")
    parser.add_argument("--large", action="store_const", const="large", dest="scale")
    parser.add_argument("--dir", default=os.environ.get("SMTP_QUEUE_BENCH_DIR"))
    parser.add_argument("--json")
    parser.add_argument("--measure-open")
    parser.add_argument("--measure-listing")
    parser.add_argument("--trace", action="store_true")
    args, _ = parser.parse_known_args()  # other benchmarks' options pass by
    if args.measure_open:
        print(json.dumps(anyio.run(measure_open, Path(args.measure_open), args.trace)))
        return
    if args.measure_listing:
        print(json.dumps(measure_listing(Path(args.measure_listing))))
        return
    scale_name = args.scale or env
    scale = SCALES[scale_name]
    base = Path(args.dir or tempfile.gettempdir())
    print(f"smtp-queue benchmark ({scale_name}), spools under {base}")

    print("1. enqueue of 10 KiB messages, fsync on")
    rates = throughput(base, scale)
    raw = statistics.median(rates["raw write+fsync+rename"])
    print(f"   {'variant':32} {'median msg/s':>12} {'vs raw':>7}   all rounds")
    for name, values in rates.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"   {name:32} {median:12.0f} {median / raw:7.0%}   {runs}")

    print(f"2. opening a spool of {scale.spool} messages (half deferred)")
    spool = big_spool(base, scale)
    open_s = statistics.median(o["seconds"] for o in spool["open"])
    list_s = statistics.median(o["seconds"] for o in spool["listing"])
    rss = statistics.median(o["rss"] for o in spool["open"])
    rss_peak = statistics.median(o["rss_peak"] for o in spool["open"])
    traced = spool["traced"]
    runs = ", ".join(f"{o['seconds']:.2f}" for o in spool["open"])
    print(f"   open (recover + scan + schedule): {open_s:.2f} s median of {runs}")
    print(
        f"   bare scandir+stat of the same:    {list_s:.2f} s  "
        f"(open costs {open_s / list_s:.1f}x the listing)"
    )
    print(
        f"   memory held by the open queue:    RSS +{rss / 2**20:.1f} MiB "
        f"(peak +{rss_peak / 2**20:.1f} MiB); Python heap "
        f"{traced['traced'] / 2**20:.1f} MiB, "
        f"{traced['traced'] / scale.spool:.0f} B/message"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "spool": spool}, indent=1))


if __name__ == "__main__":
    main()
