"""``smtp-mta send``: the command run for real against Postfix, Dovecot LMTP and
a DNS server on loopback (the testkit's private instances).

The command runs as a subprocess, exactly as a user runs it; its exit
status, output and what the servers received are checked.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import attrs
import pytest

from smtp_client import (
    Client,
    Destination,
    LMTPServer,
    Recipient,
    SendResult,
    SmartHost,
    Status,
    TLSMode,
    TLSPolicy,
)
from smtp_client import (
    Credentials as ClientCredentials,
)
from smtp_client import (
    Envelope as ClientEnvelope,
)
from smtp_client import (
    Timeouts as ClientTimeouts,
)
from smtp_message import (
    BodyType,
    Mailbox,
    MailParams,
    Notify,
    RcptParams,
    RcptTo,
    Reply,
    Ret,
    ServerSettings,
)
from smtp_mta import _send
from smtp_mta._cli import build_parser
from smtp_server import (
    Credentials as ServerCredentials,
)
from smtp_server import (
    Envelope,
    Hooks,
    MessageOutcome,
    Session,
    Settings,
    interact,
    listen,
    serve,
)
from smtp_server import (
    Timeouts as ServerTimeouts,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    import trustme

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
        # A file that is there but holds no certificate (this test module).
        ["--from", "a@client.test", "--to", "b@peer.test", "--ca-file", __file__],
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
        "ca-file-not-pem",
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
    """The body is sent as is (bare LFs become CRLF), after the --header
    lines; a --header field replaces the body's own field of that name,
    folded lines and all (RFC 5322 3.6: Subject at most once)."""
    tag = uuid.uuid4().hex
    body = tmp_path / "message.eml"
    body.write_bytes(
        f"Subject: {tag}\nX-Old: to be\n replaced\nFrom: me@client.test\n\n"
        ".dot line\nX-Old: in the body stays\nend\n".encode()
    )
    proc = smtp_mta(
        *server(postfix),
        "--from", "me@client.test", "--to", "bob@peer.test",
        "--body", str(body), "--header", "X-Added: yes", "--header", "x-old: new",
    )  # fmt: skip
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    mbox = postfix.wait_for_delivery(tag.encode(), "bob")
    entry = mbox[mbox.rindex(b"X-Added: yes") :]
    assert entry.startswith(f"X-Added: yes\nx-old: new\nSubject: {tag}\nFrom: ".encode())
    assert b"replaced" not in entry
    assert b"\n.dot line\nX-Old: in the body stays\nend\n" in entry


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            b"Subject: a\r\nTo: b\r\n\r\nSubject: body\r\n",
            b"Subject: n\r\nTo: b\r\n\r\nSubject: body\r\n",
        ),
        (b"SUBJECT: a\r\n b\r\n", b"Subject: n\r\n"),
        (b"no header section\nSubject: a\n", b"Subject: n\r\nno header section\nSubject: a\n"),
        (b"\r\nSubject: a\r\n", b"Subject: n\r\n\r\nSubject: a\r\n"),
        (b"", b"Subject: n\r\n"),
    ],
    ids=["replaced", "folded-case", "no-section", "empty-section", "empty"],
)
def test_send_header_replaces_only_in_the_header_section(message: bytes, expected: bytes) -> None:
    """RFC 5322 2.2 and 3.6: the header section ends at the first empty line;
    only fields there are replaced, names compared without case."""
    assert _send.with_headers(message, [("Subject", "n")]) == expected


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


def test_tls_choices_are_the_client_s_modes() -> None:
    """``--tls`` offers exactly the modes smtp_client knows, no more, no less."""
    assert tuple(mode.value for mode in TLSMode) == _send.TLS_MODES


def test_the_command_line_does_not_import_the_client() -> None:
    """``smtp-mta sink`` needs neither smtp_client nor dnspython: they are
    imported when ``send`` sends, so the sink starts sooner."""
    code = "import sys, smtp_mta._cli; print(sorted({'smtp_client', 'dns'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


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


# -- Against this project's own smtp_server ---------------------------------
#
# smtp-mta declares both smtp-server and smtp-client, so the client is tested
# against the server here: the server's serve() or interact() on a real
# loopback socket, in the test's event loop (asyncio and trio).


@attrs.define
class Recording(Hooks):
    """Hooks that keep what they saw and decide by the recipient's local part."""

    messages: list[tuple[Envelope, bytes]] = attrs.field(factory=list)
    sessions: list[Session] = attrs.field(factory=list)
    lmtp_replies: list[Reply | None] | None = None
    password: str = "secret"
    disconnected: anyio.Event = attrs.field(factory=anyio.Event)

    async def on_rcpt(self, session: Session, command: RcptTo) -> Reply | None:
        local = command.forward_path.local_part
        if local.startswith("ghost"):
            return Reply(550, "5.1.1", f"{local}: no such user")
        if local.startswith("busy"):
            return Reply(450, "4.2.1", "mailbox busy")
        return None

    async def on_auth(self, session: Session, credentials: ServerCredentials) -> bool | Reply:
        return credentials.username == "alice" and credentials.password == self.password

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> MessageOutcome:
        data = b"".join([chunk async for chunk in body])
        self.messages.append((envelope, data))
        return self.lmtp_replies

    async def on_disconnect(self, session: Session) -> None:
        self.sessions.append(session)
        self.disconnected.set()


@asynccontextmanager
async def smtp_server(
    hooks: Hooks, settings: Settings | None = None, *, address: str = "127.0.0.1:0", **protocol: Any
) -> AsyncIterator[int]:
    """Run smtp_server.serve on ``address`` (127.0.0.1); yield its port (0 for unix:)."""
    settings = settings or Settings(
        protocol=ServerSettings(hostname="mx.server.test", **protocol),
        timeouts=ServerTimeouts.scaled(0.1),
    )
    listener = await listen(address)
    port = (
        0 if address.startswith("unix:") else listener.extra(anyio.abc.SocketAttribute.local_port)
    )
    async with anyio.create_task_group() as tg:
        server = await tg.start(serve, listener, hooks, settings)
        try:
            yield port
        finally:
            server.shutdown()


@pytest.fixture(scope="module")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("mx.server.test", "127.0.0.1").configure_cert(context)
    return context


FAST = ClientTimeouts().scaled(0.05)
BODY = b"Subject: to smtp_server\r\n\r\nline one\r\n.dot line\r\n"


async def client_send(
    destination: Destination, env: ClientEnvelope, body: object = BODY, **options: Any
) -> SendResult:
    options.setdefault("timeouts", FAST)
    async with Client(helo="client.test", **options) as client:
        return await client.send(destination, env, body)  # type: ignore[arg-type]


def plain_to(port: int) -> SmartHost:
    return SmartHost("127.0.0.1", port, tls=TLSPolicy.none())


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_server_per_recipient_results(chunking: bool) -> None:
    """RFC 5321 3.3: the hook refuses ghost (550) and busy (450), accepts the
    rest; the body arrives byte for byte (DATA dot-unstuffed, or BDAT)."""
    hooks = Recording()
    async with smtp_server(hooks) as port:
        result = await client_send(
            plain_to(port),
            ClientEnvelope.build("s@client.test", ["a@x.test", "ghost@x.test", "busy@x.test"]),
            use_chunking=chunking,
        )
    assert [(r.status, r.reply.code) for r in result.recipients] == [
        (Status.DELIVERED, 250),
        (Status.PERMANENT, 550),
        (Status.TRANSIENT, 450),
    ]
    assert result.recipients[1].reply.text == "ghost: no such user"
    ((envelope, data),) = hooks.messages
    assert data == BODY
    assert envelope.body_command == ("BDAT" if chunking else "DATA")
    assert [str(m) for m in envelope.recipient_addresses] == ["a@x.test"]


@pytest.mark.anyio
async def test_server_extensions_reach_the_hooks() -> None:
    """RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN: the
    parameters the client sends are the ones the server's hooks see."""
    hooks = Recording()
    env = ClientEnvelope(
        Mailbox("pelé", "client.test"),
        [
            Recipient(
                Mailbox("a", "x.test"),
                RcptParams(notify=frozenset({Notify.FAILURE}), orcpt=None),
            )
        ],
        MailParams(ret=Ret.FULL, envid="ID42"),
    )
    body = "Subject: café\r\n\r\nnaïve\r\n".encode()
    async with smtp_server(hooks) as port:
        result = await client_send(plain_to(port), env, body)
    assert result.recipients[0].status is Status.DELIVERED
    ((envelope, data),) = hooks.messages
    params = envelope.mail_from.params
    assert params.size == len(body)
    assert params.smtputf8
    assert params.body is BodyType.EIGHT_BIT_MIME
    assert (params.ret, params.envid) == (Ret.FULL, "ID42")
    assert envelope.recipients[0].params.notify == frozenset({Notify.FAILURE})
    assert data == body


@pytest.mark.anyio
async def test_server_size_limit_fails_fast() -> None:
    """RFC 1870 6: the server advertises SIZE 1000; nothing reaches its hooks."""
    hooks = Recording()
    async with smtp_server(hooks, max_message_size=1000) as port:
        result = await client_send(
            plain_to(port), ClientEnvelope.build("s@client.test", ["a@x.test"]), b"x" * 2000
        )
    (r,) = result.recipients
    assert (r.status, r.reply.code, r.reply.enhanced) == (Status.PERMANENT, 552, "5.3.4")
    assert hooks.messages == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("protocol", "sender", "body", "enhanced"),
    [
        ({"smtputf8": False}, "pelé@client.test", b"hi\r\n", "5.6.7"),
        ({"eightbitmime": False}, "s@client.test", "ï\r\n".encode(), "5.6.3"),
    ],
    ids=["no-smtputf8", "no-8bitmime"],
)
async def test_server_without_an_extension_the_message_needs(
    protocol: dict[str, Any], sender: str, body: bytes, enhanced: str
) -> None:
    """RFC 6531 3.7.5 and RFC 6152 3: refused by the client, permanently, and
    never sent corrupted."""
    hooks = Recording()
    async with smtp_server(hooks, **protocol) as port:
        result = await client_send(plain_to(port), ClientEnvelope.build(sender, ["a@x.test"]), body)
    assert result.recipients[0].status is Status.PERMANENT
    assert result.recipients[0].reply.enhanced == enhanced
    assert hooks.messages == []


@pytest.mark.anyio
async def test_server_starttls_and_auth(tls_ca: trustme.CA, ca_file: str) -> None:
    """RFC 3207 and RFC 4954: STARTTLS verified against the test CA, then AUTH
    PLAIN; the server's session records the identity."""
    hooks = Recording()
    settings = Settings(
        protocol=ServerSettings(
            hostname="mx.server.test", auth_mechanisms=("PLAIN", "LOGIN"), require_auth=True
        ),
        ssl_context=server_context(tls_ca),
        timeouts=ServerTimeouts.scaled(0.1),
    )
    for mechanism in ("PLAIN", "LOGIN"):
        async with smtp_server(hooks, settings) as port:
            result = await client_send(
                SmartHost(
                    "127.0.0.1",
                    port,
                    tls=TLSPolicy.required(ca_file=ca_file, server_hostname="mx.server.test"),
                    credentials=ClientCredentials("alice", "secret", mechanisms=(mechanism,)),
                ),
                ClientEnvelope.build("alice@client.test", ["a@x.test"]),
            )
        assert result.tls
        assert result.recipients[0].status is Status.DELIVERED
    assert [s.auth_identity for s in hooks.sessions] == ["alice", "alice"]
    assert all(s.tls is not None for s in hooks.sessions)


@pytest.mark.anyio
async def test_server_auth_refused(tls_ca: trustme.CA, ca_file: str) -> None:
    """RFC 4954 6: 535 5.7.8, and no message; the client defers it (its
    Credentials.soft_bounce default: a password is the sender's to fix)."""
    hooks = Recording(password="other")
    settings = Settings(
        protocol=ServerSettings(hostname="mx.server.test", auth_mechanisms=("PLAIN",)),
        ssl_context=server_context(tls_ca),
        timeouts=ServerTimeouts.scaled(0.1),
        auth_failure_delay=0.01,
    )
    async with smtp_server(hooks, settings) as port:
        result = await client_send(
            SmartHost(
                "127.0.0.1",
                port,
                tls=TLSPolicy.required(ca_file=ca_file, server_hostname="mx.server.test"),
                credentials=ClientCredentials("alice", "secret"),
            ),
            ClientEnvelope.build("alice@client.test", ["a@x.test"]),
        )
    (r,) = result.recipients
    assert (r.status, r.reply.code, r.reply.enhanced) == (Status.TRANSIENT, 535, "5.7.8")
    assert hooks.messages == []


@pytest.mark.anyio
async def test_server_lmtp_per_recipient_replies() -> None:
    """RFC 2033 4.2: the hook decides per recipient; the client maps each
    reply to its recipient."""
    hooks = Recording(lmtp_replies=[None, Reply(452, "4.2.2", "over quota")])
    async with smtp_server(hooks, lmtp=True) as port:
        result = await client_send(
            LMTPServer(host="127.0.0.1", port=port),
            ClientEnvelope.build("s@client.test", ["a@x.test", "ghost@x.test", "b@x.test"]),
        )
    assert [(r.status, r.reply.code) for r in result.recipients] == [
        (Status.DELIVERED, 250),
        (Status.PERMANENT, 550),
        (Status.TRANSIENT, 452),
    ]
    assert result.recipients[2].reply.text == "over quota"


@pytest.mark.anyio
async def test_server_connection_reused() -> None:
    """RFC 5321 3.3: three messages in one session."""
    hooks = Recording()
    async with smtp_server(hooks) as port:
        async with Client(helo="client.test", timeouts=FAST) as client:
            for _ in range(3):
                result = await client.send(
                    plain_to(port), ClientEnvelope.build("s@client.test", ["a@x.test"]), BODY
                )
                assert result.recipients[0].status is Status.DELIVERED
        with anyio.fail_after(10):
            await hooks.disconnected.wait()
    assert [s.messages for s in hooks.sessions] == [3]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "status"),
    [
        (Reply(421, "4.3.2", "too busy"), Status.TRANSIENT),
        (Reply(554, "5.7.1", "go away"), Status.PERMANENT),
    ],
)
async def test_server_refusing_the_connection(reply: Reply, status: Status) -> None:
    """RFC 5321 3.1 and 3.8: the greeting refuses; the reply is kept."""

    class Refuse(Recording):
        async def on_connect(self, session: Session) -> Reply | None:
            return reply

    hooks = Refuse()
    async with smtp_server(hooks) as port:
        result = await client_send(
            plain_to(port), ClientEnvelope.build("s@client.test", ["a@x.test"])
        )
    (r,) = result.recipients
    assert r.status is status
    assert r.reply.code == reply.code
    assert r.remote
    assert hooks.messages == []


class DiesMidBody(anyio.abc.ByteStream):
    """A real socket whose server side dies after ``limit`` octets (a crash)."""

    def __init__(self, stream: anyio.abc.ByteStream, limit: int) -> None:
        self.stream = stream
        self.left = limit

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self.left <= 0:
            await self.stream.aclose()
            raise anyio.EndOfStream
        data = await self.stream.receive(min(max_bytes, self.left))
        self.left -= len(data)
        return data

    async def send(self, item: bytes) -> None:
        await self.stream.send(item)

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("chunking", [True, False], ids=["bdat", "data"])
async def test_server_dropping_the_connection_mid_body(chunking: bool) -> None:
    """RFC 5321 6.1: smtp_server's interact() on a connection that dies in the
    middle of the body: nothing delivered, every recipient transient."""
    hooks = Recording()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        dying = DiesMidBody(stream, 400)  # past the envelope, inside the body
        await interact(dying, dying, hooks, Settings(timeouts=ServerTimeouts.scaled(0.1)))

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        result = await client_send(
            plain_to(port),
            ClientEnvelope.build("s@client.test", ["a@x.test", "b@x.test"]),
            b"Subject: big\r\n\r\n" + b"0123456789" * 1000 + b"\r\n",
            use_chunking=chunking,
        )
        tg.cancel_scope.cancel()
    assert [r.status for r in result.recipients] == [Status.TRANSIENT] * 2
    assert hooks.messages == []


@pytest.mark.anyio
async def test_send_command_against_smtp_server() -> None:
    """The ``smtp-mta send`` process against smtp_server: exit 69 with a
    refused recipient, and the --json per-recipient replies."""
    hooks = Recording()
    async with smtp_server(hooks) as port:
        proc = await anyio.run_process(
            [
                sys.executable, "-m", "smtp_mta._cli", "send",
                "--server", f"127.0.0.1:{port}", "--tls", "none", "--json",
                "--from", "s@client.test", "--to", "a@x.test", "--to", "ghost@x.test",
            ],
            check=False,
        )  # fmt: skip
    assert proc.returncode == EX_UNAVAILABLE
    out = json.loads(proc.stdout)["recipients"]
    assert out["a@x.test"]["status"] == "delivered"
    assert out["ghost@x.test"] == {
        "status": "permanent",
        "code": 550,
        "enhanced": "5.1.1",
        "text": "ghost: no such user",
        "host": f"127.0.0.1[127.0.0.1]:{port}",
    }
    ((_, data),) = hooks.messages
    assert b"Subject: test message from smtp-mta send" in data


# -- Every flag of the synopsis, against smtp_server ----------------------------


async def run_send(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
    """``smtp-mta send ARGS`` as a process, while the test's server runs."""
    return await anyio.run_process(
        [sys.executable, "-m", "smtp_mta._cli", "send", *args], check=False, cwd=cwd
    )


def tls_settings(tls_ca: trustme.CA, *, implicit: bool = False) -> Settings:
    return Settings(
        protocol=ServerSettings(hostname="mx.server.test", auth_mechanisms=("PLAIN", "LOGIN")),
        ssl_context=server_context(tls_ca),
        implicit_tls=implicit,
        timeouts=ServerTimeouts.scaled(0.1),
        auth_failure_delay=0.01,
    )


@pytest.mark.anyio
async def test_send_implicit_tls_auth_and_helo(tls_ca: trustme.CA, ca_file: str) -> None:
    """RFC 8314 3.3 and RFC 4954: ``--tls implicit --ca-file --auth --helo``:
    TLS from the first byte, verified against the test CA, AUTH as alice, and
    the EHLO name given."""
    hooks = Recording()
    async with smtp_server(hooks, tls_settings(tls_ca, implicit=True)) as port:
        proc = await run_send(
            "--server", f"127.0.0.1:{port}", "--tls", "implicit", "--ca-file", ca_file,
            "--auth", "alice:secret", "--helo", "sender.client.test",
            "--from", "alice@client.test", "--to", "a@x.test",
        )  # fmt: skip
        with anyio.fail_after(10):
            await hooks.disconnected.wait()
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    (session,) = hooks.sessions
    assert session.tls is not None
    assert session.auth_identity == "alice"
    assert session.hello is not None
    assert session.hello.domain == "sender.client.test"
    assert len(hooks.messages) == 1


@pytest.mark.anyio
async def test_send_required_tls_is_the_default_for_server_with_auth(
    tls_ca: trustme.CA, ca_file: str
) -> None:
    """RFC 3207 and RFC 4954 6: STARTTLS (the --server default) then AUTH; a
    wrong password is the server's 535 5.7.8, permanent: exit 69."""
    hooks = Recording()
    async with smtp_server(hooks, tls_settings(tls_ca)) as port:
        good = await run_send(
            "--server", f"127.0.0.1:{port}", "--ca-file", ca_file, "--auth", "alice:secret",
            "--from", "alice@client.test", "--to", "a@x.test",
        )  # fmt: skip
        bad = await run_send(
            "--server", f"127.0.0.1:{port}", "--ca-file", ca_file, "--auth", "alice:wrong",
            "--from", "alice@client.test", "--to", "a@x.test", "--json",
        )  # fmt: skip
    assert good.returncode == EX_OK, good.stdout + good.stderr
    assert bad.returncode == EX_UNAVAILABLE, bad.stdout + bad.stderr
    reply = json.loads(bad.stdout)["recipients"]["a@x.test"]
    assert (reply["status"], reply["code"], reply["enhanced"]) == ("permanent", 535, "5.7.8")
    assert len(hooks.messages) == 1
    assert [s.auth_identity for s in hooks.sessions] == ["alice", None]
    assert all(s.tls is not None for s in hooks.sessions)


@pytest.mark.anyio
async def test_send_auth_never_in_clear(listener: socket.socket) -> None:
    """RFC 4954 4: ``--tls none --auth``: credentials are not sent in clear;
    the recipient is transient (exit 75), with the reason."""
    hooks = Recording()
    async with smtp_server(hooks, auth_mechanisms=("PLAIN",), require_auth=False) as port:
        proc = await run_send(
            "--server", f"127.0.0.1:{port}", "--tls", "none", "--auth", "alice:secret",
            "--from", "alice@client.test", "--to", "a@x.test",
        )  # fmt: skip
    assert proc.returncode == EX_TEMPFAIL, proc.stdout + proc.stderr
    assert b"unencrypted" in proc.stdout
    assert hooks.messages == []


@pytest.mark.anyio
async def test_send_opportunistic_tls(tls_ca: trustme.CA) -> None:
    """RFC 7435: ``--tls opportunistic`` encrypts when STARTTLS is offered
    (unverified), and goes in clear when it is not."""
    hooks = Recording()
    async with smtp_server(hooks, tls_settings(tls_ca)) as port:
        proc = await run_send(
            "--server", f"127.0.0.1:{port}", "--tls", "opportunistic",
            "--from", "s@client.test", "--to", "a@x.test",
        )  # fmt: skip
        with anyio.fail_after(10):
            await hooks.disconnected.wait()
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    assert hooks.sessions[0].tls is not None
    clear = Recording()
    async with smtp_server(clear) as port:
        proc = await run_send(
            "--server", f"127.0.0.1:{port}", "--tls", "opportunistic",
            "--from", "s@client.test", "--to", "a@x.test",
        )  # fmt: skip
        with anyio.fail_after(10):
            await clear.disconnected.wait()
    assert proc.returncode == EX_OK, proc.stdout + proc.stderr
    assert clear.sessions[0].tls is None
    assert len(clear.messages) == 1


@pytest.mark.anyio
async def test_send_lmtp_socket_named_without_a_slash(tmp_path: Path) -> None:
    """``--lmtp SOCKET``: a socket in the current directory, given by its bare
    name, is a path, not a host; one line per recipient, exit 75 for the
    transient one (452 after the body, RFC 2033 4.2)."""
    hooks = Recording(lmtp_replies=[None, Reply(452, "4.2.2", "over quota")])
    async with smtp_server(hooks, address=f"unix:{tmp_path}/lmtp", lmtp=True):
        proc = await run_send(
            "--lmtp", "lmtp", "--from", "s@client.test",
            "--to", "a@x.test", "--to", "b@x.test",
            cwd=str(tmp_path),
        )  # fmt: skip
    assert proc.returncode == EX_TEMPFAIL, proc.stdout + proc.stderr
    a, b = proc.stdout.decode().splitlines()
    assert a.startswith("a@x.test: delivered 250 ")
    assert a.endswith(" [lmtp]")
    assert b == "b@x.test: transient 452 4.2.2 over quota [lmtp]"


@pytest.mark.parametrize(
    "args",
    [
        ["--header", "X-Bad: \udcff"],  # bytes the locale cannot decode
        ["--auth", "al\udcffce:secret"],
        ["--server", "a\x01b:25"],
        ["--server", "h\udcff:25"],
    ],
    ids=["undecodable-header", "undecodable-auth", "control-in-host", "undecodable-host"],
)
def test_send_unusable_argument_text_exits_64(listener: socket.socket, args: list[str]) -> None:
    """sysexits.h EX_USAGE for text that cannot be sent (control characters,
    bytes the locale cannot decode): one line, no traceback, no connection,
    and never the password in the message."""
    port = listener.getsockname()[1]
    where = [] if args[0] == "--server" else ["--server", f"127.0.0.1:{port}"]
    proc = smtp_mta(
        *where, "--tls", "none", "--from", "a@client.test", "--to", "b@peer.test", *args
    )
    assert proc.returncode == EX_USAGE, proc.stdout + proc.stderr
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("smtp-mta send: ")
    assert "secret" not in line
    assert not connected(listener)


def _result(*codes: int) -> SendResult:
    from smtp_client import RecipientResult

    return SendResult(
        tuple(
            RecipientResult.from_reply(Mailbox(f"r{i}", "x.test"), Reply(code, None, "t"), "h")
            for i, code in enumerate(codes)
        )
    )


@pytest.mark.parametrize(
    ("codes", "status"),
    [
        ((250, 250), EX_OK),
        ((250, 451), EX_TEMPFAIL),
        ((451, 451), EX_TEMPFAIL),
        ((250, 550), EX_UNAVAILABLE),
        ((451, 550), EX_UNAVAILABLE),
    ],
)
def test_send_exit_status_from_mixed_outcomes(codes: tuple[int, ...], status: int) -> None:
    """sysexits.h: 0 only when every recipient was delivered; 75 when some
    failed transiently and none permanently; 69 as soon as one failed
    permanently."""
    assert _send.exit_status(_result(*codes)) == status


def test_send_lines_one_per_recipient_with_reply_and_host() -> None:
    """One line per recipient: address, outcome, code, enhanced code, text, host."""
    from smtp_client import RecipientResult

    result = SendResult(
        (
            RecipientResult.from_reply(
                Mailbox("a", "x.test"), Reply(250, "2.0.0", ["Ok", "queued"]), "mx[1.2.3.4]:25"
            ),
            RecipientResult.from_reply(Mailbox("b", "x.test"), Reply(550, None, "no"), None),
        )
    )
    assert _send.to_lines(result) == [
        "a@x.test: delivered 250 2.0.0 Ok queued [mx[1.2.3.4]:25]",
        "b@x.test: permanent 550 no",
    ]
    assert _send.to_json(result) == {
        "recipients": {
            "a@x.test": {
                "status": "delivered",
                "code": 250,
                "enhanced": "2.0.0",
                "text": "Ok\nqueued",
                "host": "mx[1.2.3.4]:25",
            },
            "b@x.test": {
                "status": "permanent",
                "code": 550,
                "enhanced": None,
                "text": "no",
                "host": None,
            },
        }
    }
