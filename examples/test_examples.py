"""The examples run as documented, against real servers on loopback.

``nox -s examples``.  Each example is started as its users would start it,
as a subprocess; the mail it handles is checked where it ends up.
"""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_greeting(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(512).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_relay_queues_then_forwards_to_the_smart_host(tmp_path: Path, backend: str) -> None:
    """relay.py answers 250 once the message is spooled, then forwards it.

    RFC 5321 6.1: the 250 after the body is the relay taking responsibility;
    the smart host (a real ``smtp-mta sink``) receives the same bytes and
    envelope, and the spool is empty once the delivery is recorded.
    """
    sink_port, relay_port = _free_port(), _free_port()
    out, spool = tmp_path / "mail", tmp_path / "spool"
    sink = subprocess.Popen(
        [sys.executable, "-m", "smtp_mta._cli", "sink", "--listen",
         f"127.0.0.1:{sink_port}", "--out", str(out)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    relay = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "relay.py"), "--listen", f"127.0.0.1:{relay_port}",
         "--spool", str(spool), "--smarthost", f"127.0.0.1:{sink_port}", "--tls", "none",
         "--backend", backend],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for_greeting(sink_port, sink)
        _wait_for_greeting(relay_port, relay)
        message = b"From: a@example.org\r\nSubject: relayed\r\n\r\nHello through the queue.\r\n"
        with smtplib.SMTP("127.0.0.1", relay_port, timeout=10) as client:
            code, _ = client.docmd("NOOP")
            assert code == 250
            refused = client.sendmail("a@example.org", ["b@example.com", "c@example.net"], message)
            assert refused == {}
        deadline = time.monotonic() + 20
        while not list(out.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        [meta_file] = out.glob("*.json")
        meta = json.loads(meta_file.read_text())
        assert meta["mail_from"] == "a@example.org"
        assert meta["rcpt_to"] == ["b@example.com", "c@example.net"]
        assert meta_file.with_suffix(".eml").read_bytes() == message
        # The delivery is recorded after the smart host's 250: the spool
        # empties (no message is left to be sent twice).
        while time.monotonic() < deadline:
            if not any(p.suffix == ".msg" for p in spool.rglob("*")):
                break
            time.sleep(0.05)
        leftover = [p.name for p in spool.rglob("*") if p.suffix == ".msg"]
        assert leftover == []
    finally:
        _stop(relay)
        _stop(sink)
    assert relay.stderr is not None
    with relay.stderr:
        log = relay.stderr.read().decode()
    assert "queued" in log
    assert "Traceback" not in log
