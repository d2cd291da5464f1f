"""A private Postfix on loopback, as a peer MTA for tests (RECIPES.md, section 2).

:func:`start_postfix` builds a throw-away Postfix (Debian ``postfix``) in a
temporary directory (its own main.cf, master.cf, spool and mailboxes) and
runs its ``master`` in the foreground; nothing under /etc is read or
written and no system service is touched.  It needs root (queue files are
owned by the ``postfix`` user), like the recipes it follows.

What it accepts, on ``host:port``:

- ``alice@peer.test`` (a Maildir) and ``bob@peer.test`` (an mbox file),
  delivered by Postfix's virtual agent under :attr:`PostfixServer.mail`;
  ``ghost@peer.test`` gets ``550 5.1.1``; other domains ``554 5.7.1 Relay
  access denied``; ``*@relay.test`` is accepted and stays in the queue
  (deferred), for tests that inspect the queue.
- STARTTLS with a certificate for ``mx.peer.test``, ``localhost`` and
  ``127.0.0.1`` signed by a fresh trustme CA (:attr:`PostfixServer.ca_file`).
- With ``sasl_path`` (a Dovecot auth socket, see
  :mod:`smtp_testkit.dovecot`): a submission listener
  (:attr:`PostfixServer.submission_port`, STARTTLS then AUTH required) and
  an implicit-TLS one (:attr:`PostfixServer.smtps_port`, RFC 8314).

Fixtures: ``postfix`` (one per test module, default settings) and
``postfix_factory`` (any settings: ``main_cf`` entries override main.cf).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trustme

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["PostfixServer", "postfix", "postfix_factory", "start_postfix"]

MASTER = "/usr/lib/postfix/sbin/master"
DOMAIN = "peer.test"
HOSTNAME = "mx.peer.test"
RELAY_DOMAIN = "relay.test"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def require_root(what: str) -> None:
    """Fail under CI, skip elsewhere, when not running as root."""
    if os.geteuid() != 0:
        message = f"{what} needs root (see .ci/run)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def wait_for_banner(host: str, port: int, *, ssl_wrapped: bool = False) -> None:
    """Wait (10 s at most) until ``host:port`` accepts a connection."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if not ssl_wrapped:
                    sock.recv(512)
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class PostfixServer:
    """A running private Postfix; see the module's docstring."""

    def __init__(
        self,
        root: Path,
        host: str,
        port: int,
        submission_port: int | None,
        smtps_port: int | None,
        ca: trustme.CA,
    ) -> None:
        self.root = root
        self.host = host
        self.port = port
        self.submission_port = submission_port
        self.smtps_port = smtps_port
        self.ca = ca
        self.ca_file = root / "etc" / "ca.pem"
        self.config = root / "etc"
        self.mail = root / "mail"
        self.domain = DOMAIN
        self.hostname = HOSTNAME
        self.relay_domain = RELAY_DOMAIN
        self.process: subprocess.Popen[bytes] | None = None

    # -- Inspecting ----------------------------------------------------------

    def log(self) -> str:
        """Everything Postfix logged so far (``maillog_file = /dev/stdout``)."""
        return (self.root / "log").read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """Wait until a log line matches the regular expression ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log())
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matches {pattern!r}:\n{self.log()}")
            time.sleep(0.05)

    def queue(self) -> list[dict[str, object]]:
        """The queue, one dict per message (``postqueue -j``)."""
        out = subprocess.run(
            ["postqueue", "-c", str(self.config), "-j"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queued_message(self, queue_id: str) -> str:
        """A queued message's envelope and content (``postcat -q``)."""
        return subprocess.run(
            ["postcat", "-c", str(self.config), "-q", queue_id],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def maildir(self, user: str = "alice") -> list[bytes]:
        """The messages delivered to ``user``'s Maildir, oldest first."""
        new = self.mail / user / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda p: p.stat().st_mtime_ns)
        return [f.read_bytes() for f in files]

    def mbox(self, user: str = "bob") -> bytes:
        """The content of ``user``'s mbox file (empty if nothing arrived)."""
        path = self.mail / f"{user}.mbox"
        return path.read_bytes() if path.exists() else b""

    def wait_for_delivery(self, marker: bytes, user: str = "alice", timeout: float = 20.0) -> bytes:
        """Wait until a message containing ``marker`` is in ``user``'s mailbox."""
        deadline = time.monotonic() + timeout
        while True:
            if user == "alice":
                for message in self.maildir(user):
                    if marker in message:
                        return message
            elif marker in self.mbox(user):
                return self.mbox(user)
            if time.monotonic() > deadline:
                raise AssertionError(f"{marker!r} not delivered to {user}:\n{self.log()}")
            time.sleep(0.05)

    # -- Stopping ------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM the master (its children follow), wait, and remove the files."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # The children (smtpd, cleanup ...) notice the master is gone within
        # about 2 s; wait for their listening sockets to close.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _listening(self.host, self.port):
            time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


_MAIN_CF = """\
compatibility_level = 3.6
config_directory = {root}/etc
queue_directory = {root}/spool
data_directory = {root}/lib
mail_owner = postfix
setgid_group = postdrop
myhostname = {hostname}
mydestination =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = /dev/stdout
alias_maps =
alias_database =
smtpd_relay_restrictions = reject_unauth_destination
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {root}/mail
virtual_mailbox_maps = texthash:{root}/etc/vmailbox
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
smtpd_forbid_bare_newline = normalize
relay_domains = {relay}
defer_transports = smtp relay
smtpd_tls_security_level = may
smtpd_tls_chain_files = {root}/etc/server.pem
smtpd_tls_loglevel = 1
"""


def start_postfix(
    *,
    host: str = "127.0.0.1",
    main_cf: Mapping[str, str] | None = None,
    sasl_path: str | os.PathLike[str] | None = None,
) -> PostfixServer:
    """Build and start a private Postfix; see the module's docstring.

    ``main_cf`` entries are appended to main.cf (a later setting wins), e.g.
    ``{"message_size_limit": "2000"}``.  ``sasl_path`` is a Dovecot auth
    socket; with it, submission and implicit-TLS listeners are added.
    """
    from .plugin import require_program  # here: plugin imports this module

    require_program("postfix")
    require_root("Postfix")
    root = Path(tempfile.mkdtemp(prefix="pf"))
    root.chmod(0o755)
    try:
        return _start(root, host, main_cf or {}, sasl_path)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _start(
    root: Path,
    host: str,
    main_cf: Mapping[str, str],
    sasl_path: str | os.PathLike[str] | None,
) -> PostfixServer:
    etc, spool, lib, mail = (root / d for d in ("etc", "spool", "lib", "mail"))
    for directory in (etc, spool, lib, mail):
        directory.mkdir()
    etc.chmod(0o755)
    spool.chmod(0o755)
    os.chown(lib, pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postfix").gr_gid)
    lib.chmod(0o700)
    os.chown(mail, 65534, 65534)
    ca = trustme.CA()
    cert = ca.issue_cert(HOSTNAME, "localhost", host)
    cert.private_key_and_cert_chain_pem.write_to_path(str(etc / "server.pem"))
    ca.cert_pem.write_to_path(str(etc / "ca.pem"))
    shutil.copy("/etc/postfix/dynamicmaps.cf", etc)
    (etc / "vmailbox").write_text(
        f"alice@{DOMAIN} alice/\nbob@{DOMAIN} bob.mbox\n"  # "/": Maildir
    )
    port = free_port(host)
    listeners = [f"{host}:{port} inet n - n - - smtpd"]
    submission_port = smtps_port = None
    if sasl_path is not None:
        submission_port, smtps_port = free_port(host), free_port(host)
        auth = (
            "  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
        )
        listeners.append(
            f"{host}:{submission_port} inet n - n - - smtpd\n"
            f"  -o smtpd_tls_security_level=encrypt\n{auth}"
        )
        listeners.append(
            f"{host}:{smtps_port} inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n{auth}"
        )
    master_cf = Path("/usr/share/postfix/master.cf.dist").read_text()
    master_cf, replaced = re.subn(
        r"^smtp\s+inet\s.*smtpd$", "\n".join(listeners), master_cf, count=1, flags=re.M
    )
    if not replaced:
        raise RuntimeError("master.cf.dist has no smtp inet line")
    (etc / "master.cf").write_text(master_cf)
    settings = _MAIN_CF.format(
        root=root, host=host, hostname=HOSTNAME, domain=DOMAIN, relay=RELAY_DOMAIN
    )
    if sasl_path is not None:
        settings += f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = {sasl_path}\n"
    settings += "".join(f"{k} = {v}\n" for k, v in main_cf.items())
    (etc / "main.cf").write_text(settings)
    config = ["-c", str(etc)]
    # The dist master.cf chroots some services; a chroot would need /etc
    # files copied into the spool.
    subprocess.run(["postconf", *config, "-F", "-e", "*/*/chroot = n"], check=True)
    # Creates the queue directories with post-install's owners and modes.
    subprocess.run(["postfix", *config, "check"], check=True, capture_output=True)
    server = PostfixServer(root, host, port, submission_port, smtps_port, ca)
    log = (root / "log").open("wb")
    # master itself, not "postfix start-fg" (a shell that SIGTERM would not
    # stop): this PID is the master's, and SIGTERM ends it.
    server.process = subprocess.Popen(
        [MASTER, "-s", *config],
        env={**os.environ, "MAIL_CONFIG": str(etc)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for_banner(host, port)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixServer]:
    """A private Postfix with default settings, shared by a test module."""
    server = start_postfix()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postfix_factory() -> Iterator[Callable[..., PostfixServer]]:
    """Start private Postfixes with :func:`start_postfix`'s arguments."""
    started: list[PostfixServer] = []

    def factory(**kwargs: object) -> PostfixServer:
        server = start_postfix(**kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()
