"""Instructions per message of ``smtp-mta sink --discard``, under callgrind.

Wall time and CPU time on this shared 2-core machine move by 20% between
identical runs, which hides the 2-5% a change to a hot path is worth.  The
number of user-space instructions the server executes per message does not
move (under 1% between runs), so this is how to tell whether a change to
the server made it cheaper.  It does not replace ``bench_server.py``:
system calls, the kernel and cache misses are not counted, and only the
ratio to aiosmtpd measured there is the figure to report.

Each measurement runs the server under ``valgrind --tool=callgrind`` twice,
with Postfix's ``smtp-source`` sending ``--small`` and then ``--large``
messages, and divides the difference in instructions by the difference in
messages, so start-up and shutdown cancel out.  Scenarios as in
``bench_server.py``: ``1`` message per connection, or ``100`` pipelined
(``smtp-source -d``).

Compare two checkouts (e.g. a ``git worktree`` of ``main`` against the
working tree), each run with the same interpreter and libraries::

    git worktree add /tmp/base main
    python benchmarks/instructions_server.py --tree /tmp/base --tree .

Other servers are measured the same way with ``--command``, e.g.
``--command "{python} benchmarks/canned_sink.py 127.0.0.1:{port}"`` or
``--command "{python} -m aiosmtpd -n -c aiosmtpd.handlers.Sink -l 127.0.0.1:{port}"``
(``{python}`` is this interpreter: valgrind must start the real binary, not
a shim script, or it counts the shim).

Needs ``valgrind`` and ``smtp-source`` (Debian: valgrind, postfix); it is
not part of ``nox -s bench``.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120  # valgrind starts Python slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.1)
        else:
            return
    raise RuntimeError("the server did not start listening")


def instructions(tree: Path, scenario: str, messages: int, command: str | None = None) -> int:
    """Instructions the server executes in a whole run with ``messages``.

    ``command`` replaces the sink: a command line with ``{port}`` in it.
    """
    sources = sorted(str(p) for p in (tree / "packages").glob("*/src"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sources), PYTHONHASHSEED="0")
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        if command is not None:
            server = shlex.split(
                command.replace("{port}", str(port)).replace("{python}", sys.executable)
            )
        else:
            server = [sys.executable, "-m", "smtp_mta._cli", "sink", "--discard"]
            server += ["--max-size", "0", "--listen", f"127.0.0.1:{port}", "--backend", "asyncio"]
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *server],
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_listening(port, proc)
            if messages:
                load = ["-s", "5"] if scenario == "1" else ["-d", "-s", "2"]
                subprocess.run(
                    [SMTP_SOURCE, *load, "-m", str(messages), "-l", "1024", f"127.0.0.1:{port}"],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
        finally:
            proc.send_signal(signal.SIGINT)
            proc.send_signal(signal.SIGINT)  # the second stops it at once
            _, err = proc.communicate(timeout=120)
    found = re.search(rb"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError("callgrind reported no total:\n" + err.decode(errors="replace"))
    return int(found[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, action="append", help="checkout (repeatable)")
    parser.add_argument("--scenario", choices=["1", "100"], action="append")
    parser.add_argument("--small", type=int, default=100, help="messages in the first run")
    parser.add_argument("--large", type=int, default=400, help="messages in the second run")
    parser.add_argument(
        "--command",
        help="measure this server instead of the sink: a command line with {port} "
        "and optionally {python}; it must exit on SIGINT",
    )
    args = parser.parse_args()
    trees = args.tree or [Path(__file__).resolve().parent.parent]
    for scenario in args.scenario or ["1", "100"]:
        # Pipelined messages are cheap: more of them for the same precision.
        scale = 5 if scenario == "100" else 1
        small, large = args.small * scale, args.large * scale
        for tree in trees:
            a = instructions(tree, scenario, small, args.command)
            b = instructions(tree, scenario, large, args.command)
            per = (b - a) / (large - small)
            print(f"{scenario:>3}/conn  {per:12,.0f} instructions/message  {tree}", flush=True)


if __name__ == "__main__":
    main()
