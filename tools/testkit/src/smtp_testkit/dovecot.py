"""A private Dovecot LMTP server on loopback, as the MDA for tests (RECIPES.md, 1).

:func:`start_dovecot` writes a minimal configuration (LMTP only, a static
passwd-file passdb and userdb, Maildirs under a temporary directory) and
runs ``dovecot -F`` (packages ``dovecot-core`` and ``dovecot-lmtpd``);
nothing under /etc is read or written and no system service is touched.

- LMTP listens on :attr:`DovecotServer.lmtp_socket` (a unix socket) and on
  ``host:lmtp_port``.  Users are ``alice`` and ``bob`` (password
  ``secret``) unless ``users`` says otherwise; the domain is ignored
  (``alice@anything`` is alice), and an unknown user gets ``550 5.1.1``.
- :attr:`DovecotServer.auth_socket` is a SASL socket Postfix can use
  (``smtpd_sasl_type = dovecot``), offering PLAIN and LOGIN.
- Read mail back with :meth:`DovecotServer.messages` (the Maildir files) or
  :meth:`DovecotServer.fetch` (``doveadm fetch``).

Fixtures: ``dovecot`` (one per test module) and ``dovecot_factory``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["DovecotServer", "dovecot", "dovecot_factory", "start_dovecot"]

#: Mail belongs to this uid/gid (nobody): above Dovecot's first_valid_uid.
MAIL_UID = 65534

_CONF = """\
protocols = lmtp
listen = {host}
base_dir = {root}/run
state_dir = {root}/state
log_path = /dev/stderr
ssl = no
mail_location = maildir:~/Maildir
auth_mechanisms = {mechanisms}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {root}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
"""


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class DovecotServer:
    """A running private Dovecot; see the module's docstring."""

    def __init__(self, root: Path, host: str, lmtp_port: int, users: Mapping[str, str]):
        self.root = root
        self.host = host
        self.lmtp_port = lmtp_port
        self.users = dict(users)
        self.config = root / "dovecot.conf"
        self.lmtp_socket = root / "run" / "lmtp"
        self.auth_socket = root / "run" / "auth-client"
        self.process: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        """What Dovecot logged so far."""
        return (self.root / "log").read_text(errors="replace")

    def maildir(self, user: str) -> Path:
        """``user``'s Maildir."""
        return self.root / "mail" / user / "Maildir"

    def messages(self, user: str) -> list[bytes]:
        """The messages in ``user``'s INBOX (new and cur), oldest first."""
        files = [
            f
            for sub in ("new", "cur")
            if (self.maildir(user) / sub).is_dir()
            for f in (self.maildir(user) / sub).iterdir()
        ]
        files.sort(key=lambda p: p.stat().st_mtime_ns)
        return [f.read_bytes() for f in files]

    def fetch(self, user: str, fields: str = "hdr.subject", query: str = "all") -> str:
        """``doveadm fetch -u user FIELDS QUERY``.

        ``fields`` and ``query`` are split like a shell would: e.g.
        ``fetch("alice", "hdr.subject text", "header subject hello")``.
        """
        command = ["doveadm", "-c", str(self.config), "fetch", "-u", user]
        return subprocess.run(
            [*command, " ".join(shlex.split(fields)), *shlex.split(query)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def stop(self) -> None:
        """SIGTERM the master (everything exits in about 2 s) and remove the files."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_dovecot(
    *,
    host: str = "127.0.0.1",
    users: Mapping[str, str] | None = None,
    auth_mechanisms: str = "plain login",
) -> DovecotServer:
    """Write a configuration and start ``dovecot -F``; wait for LMTP.

    ``users`` maps user names to passwords (default alice and bob, both
    ``secret``).
    """
    from .plugin import require_program  # here: plugin imports this module

    binary = require_program("dovecot")
    users = users if users is not None else {"alice": "secret", "bob": "secret"}
    # mkdtemp is 0700: Dovecot's auth process (user dovecot) and the mail
    # processes (nobody) must traverse it.  Short, for the 108-byte limit of
    # unix socket paths.
    root = Path(tempfile.mkdtemp(prefix="dv"))
    root.chmod(0o755)
    try:
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir(mode=0o755)
        os.chown(root / "mail", MAIL_UID, MAIL_UID)
        (root / "users").write_text(
            "".join(
                f"{name}:{{PLAIN}}{password}:{MAIL_UID}:{MAIL_UID}::{root}/mail/{name}::\n"
                for name, password in users.items()
            )
        )
        port = _free_port(host)
        config = _CONF.format(root=root, host=host, port=port, mechanisms=auth_mechanisms)
        server = DovecotServer(root, host, port, users)
        server.config.write_text(config)
        log = (root / "log").open("wb")
        server.process = subprocess.Popen(
            [binary, "-F", "-c", str(server.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: DovecotServer) -> None:
    deadline = time.monotonic() + 10
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"dovecot exited:\n{server.log()}")
        try:
            with socket.create_connection((server.host, server.lmtp_port), timeout=1) as s:
                if s.recv(512).startswith(b"220") and server.auth_socket.exists():
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"dovecot LMTP not ready within 10 s:\n{server.log()}")
        time.sleep(0.03)


@pytest.fixture(scope="module")
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot LMTP server (alice, bob), shared by a test module."""
    server = start_dovecot()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., DovecotServer]]:
    """Start private Dovecots with :func:`start_dovecot`'s arguments."""
    started: list[DovecotServer] = []

    def factory(**kwargs: object) -> DovecotServer:
        server = start_dovecot(**kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()
