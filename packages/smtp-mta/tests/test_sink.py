"""``smtp-mta sink`` as users run it: a real process, real clients, real files.

The sink runs as a subprocess on both event loops (``--backend asyncio`` and
``--backend trio``); clients are Python's smtplib, swaks and raw sockets.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import logging
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from smtp_mta._cli import build_parser
from smtp_mta._sink import LOG_FORMAT, LogFormatter
from smtp_testkit.plugin import require_program

if TYPE_CHECKING:
    from pathlib import Path

CLI = [sys.executable, "-m", "smtp_mta._cli"]
StartSink = Callable[..., "Sink"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Sink:
    """A running ``smtp-mta sink`` process."""

    def __init__(self, out: Path, args: list[str], backend: str) -> None:
        self.port = free_port()
        self.out = out
        self.log = out.parent / f"sink-{self.port}.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                *CLI,
                "sink",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--backend",
                backend,
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    assert s.recv(512).startswith(b"220 ")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sink did not start:\n{self.log.read_text()}") from None
                time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(30)
        self.close_log()
        return code

    def close_log(self) -> None:
        if not self._log.closed:
            self._log.close()

    def messages(self) -> list[tuple[bytes, dict[str, object]]]:
        """(eml bytes, json) of every message written, oldest first."""
        out = []
        for meta in sorted(self.out.glob("*.json")):
            eml = meta.with_suffix(".eml")
            out.append((eml.read_bytes(), json.loads(meta.read_text())))
        return out

    def wait_for_messages(self, count: int) -> list[tuple[bytes, dict[str, object]]]:
        deadline = time.monotonic() + 10
        while len(found := self.messages()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return found


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def start_sink(tmp_path: Path, backend: str) -> Iterator[StartSink]:
    started: list[Sink] = []

    def start(*args: str, out: Path | None = None) -> Sink:
        out = out or tmp_path / "mail"
        extra = [] if "--discard" in args else ["--out", str(out)]
        sink = Sink(out, [*extra, *args], backend)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        if sink.proc.poll() is None:
            assert sink.stop() == 0, sink.log.read_text()
        sink.close_log()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(ca: trustme.CA, tmp_path: Path) -> tuple[str, str, str]:
    """(server chain, server key, CA certificate) as PEM files."""
    cert = ca.issue_cert("localhost", "127.0.0.1")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    key.write_bytes(cert.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(ca_file))
    return str(chain), str(key), str(ca_file)


def test_sink_writes_the_received_bytes_and_the_envelope(start_sink: StartSink) -> None:
    """RFC 5321 4.5.2: the file holds the message dot-unstuffed; the JSON the envelope."""
    sink = start_sink()
    body = b"Subject: hi\r\n\r\n.leading dot\r\n..two\r\nend\r\n"
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.ehlo("client.example")
        client.sendmail(
            "a@b.example",
            ["c@d.example", "e@f.example"],
            body,
            mail_options=["BODY=8BITMIME", "RET=HDRS", "ENVID=QQ314159+2Bx"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;c+2Bx@d.example"],
        )
    [(eml, meta)] = sink.wait_for_messages(1)
    assert eml == body  # smtplib stuffed the dots; the sink unstuffed them
    assert meta["mail_from"] == "a@b.example"
    assert meta["rcpt_to"] == ["c@d.example", "e@f.example"]
    mail_parameters = meta["mail_parameters"]
    assert isinstance(mail_parameters, dict)
    assert mail_parameters["body"] == "8BITMIME"
    assert mail_parameters["size"] == len(body)  # smtplib declares SIZE (RFC 1870)
    # RFC 3461 4.3-4.4, xtext decoded.
    assert (mail_parameters["ret"], mail_parameters["envid"]) == ("HDRS", "QQ314159+x")
    assert meta["rcpt_parameters"] == [
        {"notify": ["FAILURE", "SUCCESS"], "orcpt": "rfc822;c+x@d.example", "other": {}},
        {"notify": ["FAILURE", "SUCCESS"], "orcpt": "rfc822;c+x@d.example", "other": {}},
    ]
    assert meta["client"]["address"] == "127.0.0.1"  # type: ignore[index]
    assert meta["client"]["helo"] == "client.example"  # type: ignore[index]
    assert meta["tls"] is None
    assert meta["auth"] is None
    assert meta["size"] == len(body)
    assert meta["body_command"] == "DATA"
    # RFC 3339 5.6 date-time, which datetime.fromisoformat reads back.
    received = meta["received_at"]
    assert isinstance(received, str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", received), received
    stamp = datetime.datetime.fromisoformat(received)
    assert abs(stamp - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=5)
    assert _temporary(sink.out) == []


def test_sink_utf8_orcpt_from_an_smtputf8_client(start_sink: StartSink) -> None:
    """RFC 6533 3 with RFC 6531 3.4: in an SMTPUTF8 transaction a "utf-8"
    ORCPT may come as UTF-8; the JSON keeps it in the ASCII \\x{HEX} form."""
    sink = start_sink()
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.sendmail(
            "a@b.example",
            ["café@d.example"],
            b"Subject: hi\r\n\r\nx\r\n",
            mail_options=["SMTPUTF8"],
            rcpt_options=["ORCPT=utf-8;café@d.example"],
        )
    [(_, meta)] = sink.wait_for_messages(1)
    assert meta["rcpt_to"] == ["café@d.example"]
    assert meta["rcpt_parameters"] == [
        {"notify": None, "orcpt": "utf-8;caf\\x{E9}@d.example", "other": {}}
    ]


def _temporary(out: Path) -> list[str]:
    """What is in ``out/.tmp`` but the lock every running sink holds there."""
    return sorted(p.name for p in (out / ".tmp").iterdir() if p.name != ".lock")


def test_sink_null_reverse_path_is_an_empty_string(start_sink: StartSink, tmp_path: Path) -> None:
    """RFC 5321 4.5.5: bounces have the null reverse-path ``<>``."""
    sink = start_sink()
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.sendmail("<>", ["c@d.example"], b"Subject: bounce\r\n\r\nx\r\n")
    [(_, meta)] = sink.wait_for_messages(1)
    assert meta["mail_from"] == ""


def _exchange(sock: socket.socket, data: bytes, replies: int) -> list[bytes]:
    sock.sendall(data)
    buf = b""
    lines: list[bytes] = []
    while len(lines) < replies:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {lines!r}"
        buf += chunk
        while b"\r\n" in buf:
            line, buf = buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                lines.append(line)
    return lines


def test_sink_bdat_chunks_are_written_verbatim(start_sink: StartSink, tmp_path: Path) -> None:
    """RFC 3030 2: BDAT data is binary-safe; bare LF, NUL and dots stay as sent."""
    sink = start_sink()
    chunk1 = b"Subject: bin\r\n\r\n.dot\nbare LF\x00NUL\r\n"
    chunk2 = b"\r.\r\nlast\r\n"
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.recv(512)
        _exchange(s, b"EHLO c.example\r\n", 1)
        data = (
            b"MAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n"
            + f"BDAT {len(chunk1)}\r\n".encode()
            + chunk1
            + f"BDAT {len(chunk2)} LAST\r\n".encode()
            + chunk2
        )
        replies = _exchange(s, data, 4)
        assert [r[:3] for r in replies] == [b"250"] * 4
        assert b"Queued as" in replies[-1]
    [(eml, meta)] = sink.wait_for_messages(1)
    assert eml == chunk1 + chunk2
    assert meta["body_command"] == "BDAT"
    assert meta["mail_parameters"]["body"] == "BINARYMIME"  # type: ignore[index]


@pytest.mark.parametrize("command", ["DATA", "BDAT"])
def test_sink_client_vanishing_mid_data_leaves_nothing(
    start_sink: StartSink, tmp_path: Path, command: str
) -> None:
    """RFC 5321 4.1.1.4 / RFC 3030 2: a message whose client disconnects
    before CRLF.CRLF (or before the end of its BDAT LAST chunk) is not a
    message: no file appears, not even a temporary one."""
    sink = start_sink()
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.recv(512)
        envelope = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
        if command == "DATA":
            replies = _exchange(s, envelope + b"DATA\r\n", 4)
            assert replies[-1].startswith(b"354")
        else:
            assert len(_exchange(s, envelope, 3)) == 3
            s.sendall(b"BDAT 1000000 LAST\r\n")
        s.sendall(b"Subject: partial\r\n\r\n" + b"x" * 200_000)
        time.sleep(0.2)  # the server has started writing the message
    # A complete message afterwards proves the server went on, and gives the
    # aborted one time to be cleaned up first.
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.sendmail("a@b.example", ["c@d.example"], b"Subject: whole\r\n\r\nok\r\n")
    [(eml, _)] = sink.wait_for_messages(1)
    assert b"whole" in eml
    assert sorted(p.suffix for p in sink.out.iterdir() if p.is_file()) == [
        ".eml",
        ".json",
    ]
    assert _temporary(sink.out) == []


def test_sink_discard_accepts_and_writes_nothing(start_sink: StartSink, tmp_path: Path) -> None:
    """``--discard``: 250 for the message, and no file anywhere."""
    sink = start_sink("--discard", out=tmp_path / "nothing")
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        assert client.sendmail("a@b.example", ["c@d.example"], b"x\r\n") == {}
    assert not (tmp_path / "nothing").exists()


def test_sink_starttls_then_auth_with_swaks(
    start_sink: StartSink, tmp_path: Path, cert_files: tuple[str, str, str], ca: trustme.CA
) -> None:
    """RFC 3207 + RFC 4954: AUTH is offered after STARTTLS and takes --auth's credentials."""
    swaks = require_program("swaks")
    chain, key, ca_file = cert_files
    sink = start_sink("--tls-cert", chain, "--tls-key", key,
        "--auth", "alice:s3cret",
    )  # fmt: skip
    # Before TLS: no AUTH in the EHLO reply.
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        context = ssl.create_default_context(cafile=None)
        ca.configure_trust(context)
        client.starttls(context=context)
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    proc = subprocess.run(
        [
            swaks, "--server", f"127.0.0.1:{sink.port}", "--tls", "--tls-verify",
            "--tls-ca-path", ca_file, "--auth", "PLAIN", "--auth-user", "alice",
            "--auth-password", "s3cret", "--from", "a@b.example", "--to", "c@d.example",
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "235 2.7.0" in proc.stdout
    [(_, meta)] = sink.wait_for_messages(1)
    assert meta["auth"] == "alice"
    assert meta["tls"]["version"].startswith("TLSv1.")  # type: ignore[index]
    assert "s3cret" not in sink.log.read_text()


def test_sink_auth_refuses_a_wrong_password(
    start_sink: StartSink, tmp_path: Path, cert_files: tuple[str, str, str], ca: trustme.CA
) -> None:
    """RFC 4954 6: 535 5.7.8 for bad credentials; the password is never logged."""
    chain, key, _ = cert_files
    sink = start_sink("--tls-cert", chain, "--tls-key", key,
        "--auth", "alice:s3cret",
    )  # fmt: skip
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.starttls(context=context)
        client.ehlo()
        code, text = client.docmd(
            "AUTH", "PLAIN " + base64.b64encode(b"\0alice\0wrong-guess").decode()
        )
        assert (code, text[:5]) == (535, b"5.7.8")
    sink.stop()
    log = sink.log.read_text()
    assert "wrong-guess" not in log
    assert "s3cret" not in log


def test_sink_limits_size_and_recipients(start_sink: StartSink, tmp_path: Path) -> None:
    """RFC 1870 6.1 (552 5.3.4) and RFC 5321 4.5.3.1.10 (452 4.5.3) from the flags."""
    sink = start_sink("--max-size", "1000",
                      "--max-recipients", "100")  # fmt: skip
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "1000"
        assert client.mail("a@b.example", ["SIZE=1001"])[0] == 552
        assert client.mail("a@b.example")[0] == 250
        codes = [client.rcpt(f"r{i}@d.example")[0] for i in range(101)]
        assert codes == [250] * 100 + [452]
        code, text = client.data(b"Subject: big\r\n\r\n" + b"y" * 2000 + b"\r\n")
        assert (code, text[:5]) == (552, b"5.3.4")
    assert sink.messages() == []


def test_sink_lmtp_gives_one_reply_per_recipient(start_sink: StartSink, tmp_path: Path) -> None:
    """RFC 2033 4.2: after the body, one reply for each accepted recipient."""
    sink = start_sink("--lmtp")
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        assert b"LMTP" in s.recv(512)
        assert _exchange(s, b"EHLO c\r\n", 1)[0].startswith(b"500 5.5.1")
        _exchange(s, b"LHLO c\r\n", 1)
        replies = _exchange(
            s,
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\n"
            b"DATA\r\n",
            4,
        )
        assert replies[-1].startswith(b"354")
        replies = _exchange(s, b"Subject: lmtp\r\n\r\nx\r\n.\r\n", 2)
        assert [r[:9] for r in replies] == [b"250 2.0.0"] * 2
    [(eml, meta)] = sink.wait_for_messages(1)
    assert eml == b"Subject: lmtp\r\n\r\nx\r\n"
    assert meta["rcpt_to"] == ["c@d.example", "e@f.example"]


def test_sink_sigint_stops_cleanly_and_logs_each_session(
    start_sink: StartSink, tmp_path: Path
) -> None:
    """Ctrl-C: the process exits 0; one log line per session was written."""
    sink = start_sink()
    for _ in range(3):
        with smtplib.SMTP("127.0.0.1", sink.port) as client:
            client.noop()
    assert sink.stop() == 0
    lines = [line for line in sink.log.read_text().splitlines() if " session=" in line]
    # The three sessions, and the readiness probe that connected and left.
    assert sum("end=quit" in line for line in lines) == 3
    assert sum('end="connection closed"' in line for line in lines) == 1
    assert len(lines) == 4
    assert all("peer=127.0.0.1:" in line for line in lines)
    # Each starts with the local date and time, to the millisecond.
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} smtp_server session=")
    assert all(stamp.match(line) for line in lines)


@given(
    st.lists(
        st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=20,
    )
)
def test_log_formatter_writes_what_logging_would(times: list[float]) -> None:
    """The sink's formatter, which makes the date and time once a second,
    gives each line exactly the text of logging's own: for times in any
    order, in the same second and across seconds (its cache never shows
    a stale second)."""
    ours = LogFormatter(LOG_FORMAT)
    theirs = logging.Formatter(LOG_FORMAT)
    for created in times:
        record = logging.makeLogRecord({"name": "smtp_server", "msg": "session=x"})
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert ours.format(record) == theirs.format(record)


def test_sink_help_documents_every_flag() -> None:
    """``--help`` names each option the issue specifies, and every option
    the parser has comes with a line of help."""
    out = subprocess.run([*CLI, "sink", "--help"], capture_output=True, text=True, check=True)
    for flag in ("--listen", "--out", "--tls-cert", "--tls-key", "--auth", "--max-size",
                 "--max-recipients", "--lmtp", "--discard"):  # fmt: skip
        assert flag in out.stdout
    [sink] = [
        action.choices["sink"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    options = [a for a in sink._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 9
    for action in options:
        assert action.help, action.option_strings
        for option in action.option_strings:
            assert option in out.stdout
    # The help is about the real thing: its defaults are shown.
    assert str(32 * 1024 * 1024) in out.stdout
    assert "127.0.0.1:2525" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--out DIR or --discard is required"),
        (["--discard", "--tls-cert", "x.pem"], "--tls-cert and --tls-key go together"),
        (["--discard", "--auth", "nocolon"], "USER:PASSWORD"),
        (["--discard", "--auth", "bob:"], "USER:PASSWORD"),  # RFC 4616 2: 1*SAFE
        (["--discard", "--shutdown-grace", "nan"], "shutdown_grace"),
        (["--discard", "--listen", "127.0.0.1:99999"], "not host:port"),
        (["--discard", "--listen", "::1:25"], "needs brackets"),
        (["--discard", "--listen", "unix:"], "no path"),
    ],
)
def test_sink_usage_errors_exit_64(args: list[str], message: str, tmp_path: Path) -> None:
    """Bad arguments: exit status 64 (EX_USAGE) and a one-line error, no
    traceback, and nothing created."""
    proc = subprocess.run(
        [*CLI, "sink", *args], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert proc.returncode == 64
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


def test_sink_busy_address_leaves_the_directory_alone(tmp_path: Path) -> None:
    """A sink that cannot bind stops before it touches --out, where another
    instance may be writing a message (its .tmp files are not stale)."""
    out = tmp_path / "mail"
    (out / ".tmp").mkdir(parents=True)
    in_progress = out / ".tmp" / "writing.eml"
    in_progress.write_bytes(b"half a message, still arriving")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*CLI, "sink", "--out", str(out), "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            check=False,
        )
    assert proc.returncode == 71  # EX_OSERR
    assert proc.stderr == f"smtp-mta sink: --listen 127.0.0.1:{port}: Address already in use\n"
    assert in_progress.exists()


def test_sink_cleans_stale_temporary_files(tmp_path: Path, backend: str) -> None:
    """Files left in .tmp by a crash are never mistaken for messages."""
    out = tmp_path / "mail"
    (out / ".tmp").mkdir(parents=True)
    (out / ".tmp" / "stale.eml").write_bytes(b"half a message")
    sink = Sink(out, ["--out", str(out)], backend)
    try:
        assert _temporary(out) == []
    finally:
        assert sink.stop() == 0
    assert os.listdir(out) == [".tmp"]


def test_sink_leaves_the_files_of_another_sink_on_the_same_directory(
    tmp_path: Path, backend: str
) -> None:
    """Two sinks may write to one --out (on two ports).  One that starts
    while the other is receiving a message leaves that message's temporary
    file alone: it is not a crash's leftover.  (It was removed, and the
    first sink answered 451 for a message it had all of.)"""
    out = tmp_path / "mail"
    first = Sink(out, ["--out", str(out)], backend)
    second = None
    try:
        with socket.create_connection(("127.0.0.1", first.port)) as s:
            s.recv(512)
            envelope = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
            assert _exchange(s, envelope + b"DATA\r\n", 4)[-1].startswith(b"354")
            s.sendall(b"Subject: slow\r\n\r\n" + b"x" * 100_000 + b"\r\n")
            deadline = time.monotonic() + 10
            while not _temporary(out) and time.monotonic() < deadline:
                time.sleep(0.02)
            [writing] = _temporary(out)
            second = Sink(out, ["--out", str(out)], backend)
            assert _temporary(out) == [writing]
            [reply] = _exchange(s, b".\r\n", 1)
        assert reply.startswith(b"250 2.0.0 Queued as ")
        [(eml, _)] = first.wait_for_messages(1)
        assert eml.startswith(b"Subject: slow")
    finally:
        for sink in (first, second):
            if sink is not None:
                assert sink.stop() == 0, sink.log.read_text()
    assert "another sink writes to" in second.log.read_text()


def test_sink_does_not_take_over_a_served_unix_socket(tmp_path: Path, backend: str) -> None:
    """``--listen unix:PATH`` where another server listens is refused (exit
    71), as a busy TCP port is: taking the path over would cut that server
    off from its clients.  A socket file nobody serves (left by a crash) is
    taken over, and the sink removes its socket file when it stops."""
    path = tmp_path / "sink.sock"
    with socket.socket(socket.AF_UNIX) as crashed:
        crashed.bind(str(path))  # and never unlinked
    first = Sink(tmp_path / "mail", ["--discard", "--listen", f"unix:{path}"], backend)
    try:
        proc = subprocess.run(
            [*CLI, "sink", "--discard", "--listen", f"unix:{path}", "--backend", backend],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 71, proc.stderr
        assert proc.stderr == f"smtp-mta sink: --listen unix:{path}: a server is listening there\n"
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            assert client.recv(512).startswith(b"220 ")
    finally:
        assert first.stop() == 0, first.log.read_text()
    assert not path.exists()


def test_sink_logs_the_port_it_bound(tmp_path: Path, backend: str) -> None:
    """``--listen 127.0.0.1:0`` asks the system for a port; the log says
    which one, or the sink could not be reached."""
    proc = subprocess.Popen(
        [*CLI, "sink", "--discard", "--listen", "127.0.0.1:0", "--backend", backend],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"listening on 127\.0\.0\.1:(\d+), discarding messages$", line)
        assert found, line
        port = int(found.group(1))
        assert port != 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            assert s.recv(512).startswith(b"220 ")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_sink_tls_errors_name_the_files(
    tmp_path: Path, cert_files: tuple[str, str, str], ca: trustme.CA
) -> None:
    """A certificate or key that cannot be loaded is a usage error naming
    both files (the ssl module's own message names neither)."""
    chain, key, _ = cert_files
    other_key = tmp_path / "other.pem"
    other_key.write_bytes(ca.issue_cert("other.example").private_key_pem.bytes())
    missing = str(tmp_path / "missing.pem")
    for cert_file, key_file, reason in (
        (missing, key, "No such file or directory"),
        (chain, str(other_key), "KEY_VALUES_MISMATCH"),
        (key, key, "[SSL] PEM lib"),
    ):
        proc = subprocess.run(
            [*CLI, "sink", "--discard", "--tls-cert", cert_file, "--tls-key", key_file],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 64
        files = f"--tls-cert {cert_file} with --tls-key {key_file}"
        assert proc.stderr.startswith(f"smtp-mta sink: cannot load {files}: {reason}")
        assert proc.stderr.count("\n") == 1


def test_sink_bad_limit_is_a_usage_error() -> None:
    """A limit the server refuses (RFC 5321 4.5.3.1.8: at least 100
    recipients) is a one-line usage error, exit 64, not a traceback."""
    proc = subprocess.run(
        [*CLI, "sink", "--discard", "--max-recipients", "5"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 64
    assert "max_recipients must be at least 100" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sink_second_signal_stops_at_once(start_sink: StartSink) -> None:
    """The first SIGINT waits for transactions in progress (the grace); the
    second stops at once, and the client in the middle of DATA hears 421."""
    sink = start_sink("--shutdown-grace", "60")
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.recv(512)
        replies = _exchange(
            s, b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n", 4
        )
        assert replies[-1].startswith(b"354")
        sink.proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        assert sink.proc.poll() is None  # still waiting for our message
        started = time.monotonic()
        sink.proc.send_signal(signal.SIGINT)
        assert sink.proc.wait(15) == 0
        assert time.monotonic() - started < 10
        s.settimeout(10)
        rest = s.recv(512)
    assert rest.startswith(b"421 4.3.2")


def test_sink_defaults_advertise_size_and_every_extension(start_sink: StartSink) -> None:
    """What a tester expects without flags: SIZE advertised at 32 MiB (RFC
    1870 4), every extension the server speaks, no AUTH or STARTTLS without
    their flags, and at least 1000 recipients (RFC 5321 4.5.3.1.8 asks for
    100 at least): the 1001st gets 452 4.5.3, the message reaches the 1000."""
    sink = start_sink()
    with socket.create_connection(("127.0.0.1", sink.port)) as s:
        s.recv(512)
        s.sendall(b"EHLO c.example\r\n")
        ehlo = b""
        while not re.search(rb"(^|\r\n)250 [^\r]*\r\n$", ehlo):
            chunk = s.recv(4096)
            assert chunk, ehlo
            ehlo += chunk
        keywords = [line[4:].decode() for line in ehlo.split(b"\r\n")[1:-1]]
        rcpts = b"".join(f"RCPT TO:<r{i}@d.example>\r\n".encode() for i in range(1001))
        replies = _exchange(s, b"MAIL FROM:<a@b.example>\r\n" + rcpts, 1002)
        done = _exchange(s, b"DATA\r\nSubject: many\r\n\r\nhi\r\n.\r\n", 2)
    assert keywords == [
        "PIPELINING",
        f"SIZE {32 * 1024 * 1024}",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "BINARYMIME",
        "DSN",
    ]
    assert [r[:3] for r in replies] == [b"250"] * 1001 + [b"452"]
    assert replies[-1].startswith(b"452 4.5.3")
    assert [r[:3] for r in done] == [b"354", b"250"]
    [(_, meta)] = sink.wait_for_messages(1)
    assert len(meta["rcpt_to"]) == 1000  # type: ignore[arg-type]


def test_sink_max_size_zero_means_no_limit(start_sink: StartSink) -> None:
    """``--max-size 0``: SIZE advertised without a number (RFC 1870 4: no
    fixed limit), and a declared size beyond 32 MiB is accepted."""
    sink = start_sink("--max-size", "0")
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == ""
        assert client.mail("a@b.example", [f"SIZE={10**12}"])[0] == 250


def test_sink_several_listeners_and_users(start_sink: StartSink, tmp_path: Path) -> None:
    """``--listen`` and ``--auth`` repeat: a TCP and a Unix-domain listener
    serve together, each ``USER:PASSWORD`` is accepted (a password may hold
    a colon), and without TLS AUTH is offered in clear with a warning in
    the log (RFC 4954 4 lets a server do so; the design note says why)."""
    path = tmp_path / "sink.sock"
    sink = start_sink("--listen", f"unix:{path}",
                      "--auth", "alice:one", "--auth", "bob:t:w:o")  # fmt: skip

    def auth(client: smtplib.SMTP, user: str, password: str) -> int:
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        code, _ = client.login(user, password)
        client.sendmail(f"{user}@b.example", ["c@d.example"], b"Subject: x\r\n\r\nx\r\n")
        return code

    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        assert auth(client, "alice", "one") == 235
    with smtplib.SMTP() as client:
        client.sock = socket.socket(socket.AF_UNIX)
        client.sock.connect(str(path))
        assert client.getreply()[0] == 220
        assert auth(client, "bob", "t:w:o") == 235
    with smtplib.SMTP("127.0.0.1", sink.port) as client:
        client.ehlo()
        another = base64.b64encode(b"\0alice\0t:w:o").decode()  # bob's password
        assert client.docmd("AUTH", f"PLAIN {another}")[0] == 535
    found = sink.wait_for_messages(2)
    assert sorted(str(meta["auth"]) for _, meta in found) == ["alice", "bob"]
    assert sink.stop() == 0
    log = sink.log.read_text()
    assert "AUTH is offered without TLS" in log
    assert f"listening on unix:{path}" in log
    assert "t:w:o" not in log


def test_sink_failed_publication_leaves_no_half_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files appear atomically, failures included: if the .json cannot be
    put in place after the .eml was (a full disk), the client gets 451 and
    sends again, so neither half of this attempt may stay behind (an .eml
    without its .json would be a second copy of the message)."""
    from smtp_mta import _sink

    out = tmp_path / "mail"
    (out / ".tmp").mkdir(parents=True)
    hooks = _sink.SinkHooks(out=out)
    tmp_eml = out / ".tmp" / "m1.eml"
    tmp_eml.write_bytes(b"Subject: x\r\n\r\nx\r\n")
    real_replace = os.replace

    def replace(src: Path, dst: Path) -> None:
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        hooks._publish("m1", tmp_eml, b"{}")
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [".tmp"]
    assert list((out / ".tmp").iterdir()) == []


def test_sink_unsynced_directory_is_no_stored_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 5321 6.1: a 250 is a promise.  Until the directory is synced the
    renames may not survive a crash, so a failed sync answers 451 (the
    client sends again) and removes both files, or the retry would be a
    second copy.  The failure is injected (a mock): no disk here fails on
    demand."""
    from smtp_mta import _sink

    out = tmp_path / "mail"
    (out / ".tmp").mkdir(parents=True)
    hooks = _sink.SinkHooks(out=out)
    tmp_eml = out / ".tmp" / "m1.eml"
    tmp_eml.write_bytes(b"Subject: x\r\n\r\nx\r\n")

    def fsync_directory(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(_sink, "_fsync_directory", fsync_directory)
    with pytest.raises(OSError, match="Input/output"):
        hooks._publish("m1", tmp_eml, b"{}")
    assert sorted(p.name for p in out.iterdir()) == [".tmp"]
    assert list((out / ".tmp").iterdir()) == []
