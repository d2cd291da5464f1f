"""``smtp-mta send``: the command run for real against Postfix, Dovecot LMTP and
a DNS server on loopback (the testkit's private instances).

The command runs as a subprocess, exactly as a user runs it; its exit
status, output and what the servers received are checked.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from smtp_mta import _send
from smtp_mta._cli import build_parser

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from smtp_testkit.dns import DNSServer
    from smtp_testkit.dovecot import DovecotServer
    from smtp_testkit.postfix import PostfixServer

EX_OK, EX_USAGE, EX_UNAVAILABLE, EX_TEMPFAIL = 0, 64, 69, 75


def smtp_mta(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smtp_mta._cli", "send", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )


def server(postfix: PostfixServer) -> list[str]:
    return ["--server", f"{postfix.host}:{postfix.port}", "--tls", "none"]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening socket nobody answers on: it shows whether anything connected."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def connected(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def test_send_delivers_a_generated_test_message(postfix: PostfixServer) -> None:
    """RFC 5322 3.6: the generated message has Date, Message-ID, From, To and
    Subject; exit 0 when every recipient is delivered."""
    tag = uuid.uuid4().hex
    proc = smtp_mta(
        *server(postfix),
        "--from", "sender@client.test",
        "--to", "alice@peer.test",
        "--helo", f"{tag}.client.test",
        "--header", f"X-Tag: {tag}",
    )  # fmt: skip
    assert proc.returncode == EX_OK, proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line.startswith("alice@peer.test: delivered 250 2.0.0 Ok: ")
    assert " queued as " in line
    assert line.endswith(f"[{postfix.host}[{postfix.host}]:{postfix.port}]")
    message = postfix.wait_for_delivery(f"X-Tag: {tag}".encode())
    for field in (
        b"Date: ",
        b"Message-ID: <",
        b"From: sender@client.test",
        b"Subject: ",
    ):
        assert field in message
    assert b"To: alice@peer.test" in message


def test_send_json_shape_and_permanent_exit(postfix: PostfixServer) -> None:
    """RFC 3463 codes per recipient in --json; a permanent failure exits 69."""
    proc = smtp_mta(
        *server(postfix),
        "--from", "sender@client.test",
        "--to", "alice@peer.test",
        "--to", "ghost@peer.test",
        "--json",
    )  # fmt: skip
    assert proc.returncode == EX_UNAVAILABLE, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"recipients"}
    alice = out["recipients"]["alice@peer.test"]
    ghost = out["recipients"]["ghost@peer.test"]
    assert set(alice) == {"status", "code", "enhanced", "text", "host"}
    assert (alice["status"], alice["code"], alice["enhanced"]) == (
        "delivered",
        250,
        "2.0.0",
    )
    assert (ghost["status"], ghost["code"], ghost["enhanced"]) == (
        "permanent",
        550,
        "5.1.1",
    )
    assert "User unknown" in ghost["text"]
    assert ghost["host"] == f"{postfix.host}[{postfix.host}]:{postfix.port}"


def test_send_connection_refused_is_tempfail(listener: socket.socket) -> None:
    """RFC 5321 4.5.4.1: nobody listening: transient, exit 75 (EX_TEMPFAIL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = smtp_mta(
        "--server", f"127.0.0.1:{port}", "--tls", "none",
        "--from", "a@client.test", "--to", "b@peer.test",
    )  # fmt: skip
    assert proc.returncode == EX_TEMPFAIL
    assert "transient 451 4.4.1 cannot connect" in proc.stdout


def test_send_timeout_scales_and_is_tempfail(listener: socket.socket) -> None:
    """RFC 5321 4.5.3.2.1: a server that never greets; --timeout 1 makes the
    wait seconds, not minutes."""
    port = listener.getsockname()[1]
    started = time.monotonic()
    proc = smtp_mta(
        "--server", f"127.0.0.1:{port}", "--tls", "none", "--timeout", "1",
        "--from", "a@client.test", "--to", "b@peer.test",
    )  # fmt: skip
    assert proc.returncode == EX_TEMPFAIL
    assert "4.4.2" in proc.stdout
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    "bad",
    [
        ["--to", "b@peer.test\r\nRCPT TO:<evil@peer.test>"],
        ["--to", "b@peer.test\n"],
        ["--to", "b\r@peer.test"],
    ],
    ids=["crlf-command", "lf", "cr"],
)
def test_send_cr_or_lf_in_an_address_sends_nothing(listener: socket.socket, bad: list[str]) -> None:
    """GHSA-v3q9-hj7j-63hq: no command injection: exit 64, one line, no connection."""
    port = listener.getsockname()[1]
    proc = smtp_mta(
        "--server", f"127.0.0.1:{port}", "--tls", "none",
        "--from", "a@client.test", *bad,
    )  # fmt: skip
    assert proc.returncode == EX_USAGE
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "bad --to address" in proc.stderr
    assert not connected(listener)


@pytest.mark.parametrize(
    "args",
    [
        ["--from", "a@client.test"],  # no --to
        ["--from", "a\r\n@client.test", "--to", "b@peer.test"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--tls", "maybe"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--port", "2525"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--header", "Bad\r\nX: y"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--header", "NoColon"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--timeout", "0"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--auth", "nopassword"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--body", "/nonexistent"],
        ["--from", "a@client.test", "--to", "b@peer.test", "--helo", "two words"],
    ],
    ids=[
        "missing-to",
        "crlf-from",
        "bad-tls",
        "port-without-mx",
        "crlf-header",
        "header-without-colon",
        "zero-timeout",
        "auth-without-password",
        "missing-body",
        "bad-helo",
    ],
)
def test_send_bad_arguments_exit_64_and_send_nothing(
    listener: socket.socket, args: list[str]
) -> None:
    """sysexits.h EX_USAGE: one line on stderr, nothing on stdout, no connection."""
    port = listener.getsockname()[1]
    proc = smtp_mta("--server", f"127.0.0.1:{port}", "--tls", "none", *args)
    assert proc.returncode == EX_USAGE, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].startswith("smtp-mta send")
    assert not connected(listener)


def test_send_body_file_with_added_header(postfix: PostfixServer, tmp_path: Path) -> None:
    """The body is sent as is (bare LFs become CRLF), after the --header lines."""
    tag = uuid.uuid4().hex
    body = tmp_path / "message.eml"
    body.write_bytes(f"Subject: {tag}\nFrom: me@client.test\n\n.dot line\nend\n".encode())
    proc = smtp_mta(
        *server(postfix),
        "--from", "me@client.test", "--to", "bob@peer.test",
        "--body", str(body), "--header", "X-Added: yes",
    )  # fmt: skip
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    mbox = postfix.wait_for_delivery(tag.encode(), "bob")
    entry = mbox[mbox.rindex(b"X-Added: yes") :]
    assert entry.startswith(f"X-Added: yes\nSubject: {tag}\n".encode())
    assert b"\n.dot line\nend\n" in entry


def test_send_body_from_stdin(postfix: PostfixServer) -> None:
    """``--body -`` reads the message from standard input."""
    tag = uuid.uuid4().hex
    proc = smtp_mta(
        *server(postfix),
        "--from", "me@client.test", "--to", "alice@peer.test", "--body", "-",
        stdin=f"Subject: {tag}\r\n\r\nfrom stdin\r\n".encode(),
    )  # fmt: skip
    assert proc.returncode == EX_OK, proc.stderr
    assert b"from stdin" in postfix.wait_for_delivery(tag.encode())


def test_send_required_tls_with_ca_file(postfix: PostfixServer) -> None:
    """RFC 3207 with verification against --ca-file; without it, the system CAs
    do not trust the test CA: transient, exit 75."""
    args = ["--from", "me@client.test", "--to", "alice@peer.test"]
    where = ["--server", f"localhost:{postfix.port}"]
    proc = smtp_mta(*where, "--tls", "required", "--ca-file", str(postfix.ca_file), *args)
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    proc = smtp_mta(*where, *args)  # required is the default for --server
    assert proc.returncode == EX_TEMPFAIL
    assert "4.7.5" in proc.stdout


def test_send_mx_through_a_private_dns(postfix: PostfixServer, dns_server: DNSServer) -> None:
    """RFC 5321 5.1: --mx with --dns and --port: the MX of peer.test is found in
    the test's DNS server and the message delivered (opportunistic TLS)."""
    tag = uuid.uuid4().hex
    dns_server.add("peer.test", "MX", "10 mx.peer.test.")
    dns_server.add("mx.peer.test", "A", postfix.host)
    proc = smtp_mta(
        "--mx", "peer.test", "--dns", f"{dns_server.host}:{dns_server.port}",
        "--port", str(postfix.port), "--from", "me@client.test",
        "--to", "alice@peer.test", "--header", f"X-Tag: {tag}",
    )  # fmt: skip
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    assert f"[mx.peer.test[{postfix.host}]:{postfix.port}]" in proc.stdout
    postfix.wait_for_delivery(tag.encode())
    assert ("peer.test.", "MX") in dns_server.queries


@pytest.mark.parametrize(
    ("setup", "status", "code"),
    [("servfail", EX_TEMPFAIL, "4.4.3"), ("nullmx", EX_UNAVAILABLE, "556 5.1.10")],
)
def test_send_mx_dns_failures(
    dns_server: DNSServer, listener: socket.socket, setup: str, status: int, code: str
) -> None:
    """RFC 5321 5.1 and RFC 7505: SERVFAIL is transient (75), null MX permanent (69)."""
    if setup == "servfail":
        dns_server.servfail("fail.test")
    else:
        dns_server.add("fail.test", "MX", "0 .")
    proc = smtp_mta(
        "--mx", "fail.test", "--dns", f"{dns_server.host}:{dns_server.port}",
        "--from", "me@client.test", "--to", "x@fail.test",
    )  # fmt: skip
    assert proc.returncode == status
    assert code in proc.stdout


def test_send_lmtp_unix_socket(dovecot: DovecotServer) -> None:
    """RFC 2033 4.2: one line per recipient; the unknown one makes it exit 69."""
    tag = uuid.uuid4().hex
    proc = smtp_mta(
        "--lmtp", str(dovecot.lmtp_socket), "--from", "me@client.test",
        "--to", "alice@peer.test", "--to", "ghost@peer.test",
        "--header", f"Subject: {tag}",
    )  # fmt: skip
    assert proc.returncode == EX_UNAVAILABLE
    alice, ghost = proc.stdout.splitlines()
    assert alice.startswith("alice@peer.test: delivered 250 2.0.0 <alice@peer.test>")
    assert ghost.startswith("ghost@peer.test: permanent 550 5.1.1")
    assert any(tag.encode() in m for m in dovecot.messages("alice"))


def test_send_lmtp_tcp(dovecot: DovecotServer) -> None:
    """RFC 2033 over TCP (HOST:PORT): two users, both delivered, exit 0."""
    proc = smtp_mta(
        "--lmtp", f"{dovecot.host}:{dovecot.lmtp_port}", "--from", "me@client.test",
        "--to", "alice@peer.test", "--to", "bob@peer.test",
    )  # fmt: skip
    assert proc.returncode == EX_OK, proc.stdout
    assert len(proc.stdout.splitlines()) == 2


def test_send_is_registered_in_the_command_line() -> None:
    """The subcommand is part of ``smtp-mta``'s parser."""
    args = build_parser().parse_args(
        ["send", "--server", "h:25", "--from", "a@b.test", "--to", "c@d.test"]
    )
    assert args.func is _send.main


@pytest.mark.anyio
async def test_send_deliver_runs_on_both_backends(postfix: PostfixServer) -> None:
    """The command's async core, on asyncio and trio (the CLI itself uses asyncio)."""
    args = build_parser().parse_args(
        [
            "send",
            *server(postfix),
            "--from",
            "me@client.test",
            "--to",
            "alice@peer.test",
        ]
    )
    result = await _send.deliver(_send.build_request(args))
    assert _send.exit_status(result) == EX_OK
    assert result.recipients[0].reply.code == 250
