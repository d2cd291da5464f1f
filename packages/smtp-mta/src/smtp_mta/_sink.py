"""``smtp-mta sink``: the debugging server.

Accepts every sender and recipient and writes each message to a directory,
as aiosmtpd's debugging handler or Mailpit do, or throws it away.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import fcntl
import hmac
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import AsyncIterator  # noqa: TC003 (at run time: the docs resolve the hints)
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import attrs

from smtp_message import Reply, ServerSettings
from smtp_server import Credentials, Envelope, Hooks, Server, Session, Settings, listen

if TYPE_CHECKING:
    from anyio.abc import ByteStream, Listener

    _Listeners = list[Listener[ByteStream]]

__all__ = ["DiscardHooks", "SinkHooks", "register"]

logger = logging.getLogger("smtp_mta.sink")

#: What a tester expects of a sink: room for attachments, and recipients
#: well beyond the RFC's minimum of 100 (RFC 5321 4.5.3.1.8).
DEFAULT_MAX_SIZE = 32 * 1024 * 1024
DEFAULT_MAX_RECIPIENTS = 1000


def _message_id() -> str:
    # Sortable by arrival, unique without coordination.
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(6)}"


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _metadata(session: Session, envelope: Envelope, size: int) -> dict[str, object]:
    mail = envelope.mail_from
    params = mail.params
    return {
        "mail_from": "" if mail.reverse_path is None else str(mail.reverse_path),
        "rcpt_to": [str(r.forward_path) for r in envelope.recipients],
        "mail_parameters": {
            "size": params.size,
            "body": params.body.value if params.body else None,
            "smtputf8": params.smtputf8,
            "ret": params.ret.value if params.ret else None,
            "envid": params.envid,
            "auth": params.auth,
            "requiretls": params.requiretls,
            "other": dict(params.extra),
        },
        "rcpt_parameters": [
            {
                "notify": sorted(n.value for n in r.params.notify) if r.params.notify else None,
                "orcpt": (
                    f"{r.params.orcpt.addr_type};{r.params.orcpt.address}"
                    if r.params.orcpt
                    else None
                ),
                "other": dict(r.params.extra),
            }
            for r in envelope.recipients
        ],
        "body_command": envelope.body_command,
        "size": size,
        "client": {
            "address": session.peer[0] if session.peer else None,
            "port": session.peer[1] if session.peer else None,
            "helo": session.hello.domain if session.hello else None,
        },
        "tls": (
            {"version": session.tls.version, "cipher": session.tls.cipher} if session.tls else None
        ),
        "auth": session.auth_identity,
        # RFC 3339 5.6 (an offset with a colon), in local time.
        "received_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "session": session.id,
    }


@attrs.define(eq=False)
class DiscardHooks(Hooks):
    """Accept everything and keep nothing (``--discard``).

    It leaves :meth:`~smtp_server.Hooks.on_message` as it is: the server
    then reads each body to its end and drops it, without running a hook.
    """

    credentials: dict[str, str] = attrs.field(factory=dict)

    async def on_auth(self, session: Session, credentials: Credentials) -> bool | Reply:
        """Accept exactly the ``--auth`` user names and passwords."""
        expected = self.credentials.get(credentials.username)
        if expected is None:
            return False
        return hmac.compare_digest(expected.encode(), credentials.password.encode())


@attrs.define(eq=False)
class SinkHooks(DiscardHooks):
    """Accept everything; write each message as ``<id>.eml`` + ``<id>.json``.

    Files appear atomically: each is written under a temporary name in
    ``DIR/.tmp``, fsynced, and renamed into place, the ``.eml`` first, so a
    ``.json`` means its message is complete; the directory is synced before
    the 250.  A message whose client goes away before the end, or that
    could not be stored (the client gets 451 and sends it again), leaves
    nothing.
    """

    out: Path = attrs.field(kw_only=True)

    async def on_message(
        self, session: Session, envelope: Envelope, body: AsyncIterator[bytes]
    ) -> Reply | None:
        """Write the message."""
        message_id = _message_id()
        tmp_dir = self.out / ".tmp"
        tmp_eml = tmp_dir / f"{message_id}.eml"
        size = 0
        f = await anyio.open_file(tmp_eml, "wb")
        try:
            try:
                async for chunk in body:
                    size += len(chunk)
                    await f.write(chunk)
                await f.flush()
                await anyio.to_thread.run_sync(os.fsync, f.wrapped.fileno())
            finally:
                await f.aclose()
        except BaseException:
            tmp_eml.unlink(missing_ok=True)
            raise
        metadata = json.dumps(_metadata(session, envelope, size), indent=2).encode()
        await anyio.to_thread.run_sync(self._publish, message_id, tmp_eml, metadata)
        return Reply(250, "2.0.0", f"Queued as {message_id}")

    def _publish(self, message_id: str, tmp_eml: Path, metadata: bytes) -> None:
        tmp_json = tmp_eml.with_suffix(".json")
        eml = self.out / f"{message_id}.eml"
        json_path = self.out / f"{message_id}.json"
        try:
            _write_file(tmp_json, metadata)
            os.replace(tmp_eml, eml)
            os.replace(tmp_json, json_path)
            # Until the directory is synced the names may not survive a
            # crash: only then is the message ours (RFC 5321 4.5.3.2.6, and
            # 6.1: a 250 is a promise to deliver or report).
            _fsync_directory(self.out)
        except BaseException:
            # The client gets 451 and sends the message again: leave no
            # part of this attempt (an .eml without its .json, or a
            # message the client will send again) behind.
            for path in (json_path, tmp_eml, tmp_json, eml):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError too; neither names the files
        # OpenSSL's reason (KEY_VALUES_MISMATCH...), or the system's.
        detail = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ValueError(f"cannot load --tls-cert {cert} with --tls-key {key}: {detail}") from None
    return context


def _credentials(values: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        user, sep, password = value.partition(":")
        if not sep or not user or not password:
            # An empty password could never log in (RFC 4616 2: passwd =
            # 1*SAFE), so it is refused here rather than at every AUTH.
            raise argparse.ArgumentTypeError(f"--auth wants USER:PASSWORD, not {value!r}")
        out[user] = password
    return out


def build_settings(args: argparse.Namespace) -> Settings:
    """The server settings the command line asks for."""
    context = _tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    protocol = ServerSettings(
        hostname=args.hostname,
        lmtp=args.lmtp,
        max_message_size=args.max_size or None,
        max_recipients=args.max_recipients,
        auth_mechanisms=("PLAIN", "LOGIN") if args.auth else (),
        # Without TLS a tester still wants to try AUTH: offer it in clear.
        auth_requires_tls=context is not None,
        requiretls=context is not None,
    )
    return Settings(
        protocol=protocol,
        ssl_context=context,
        max_sessions=args.max_sessions,
        shutdown_grace=args.shutdown_grace,
    )


class _UsageError(Exception):
    """A command-line value found wrong only when used (``--listen``)."""


class _ListenError(Exception):
    """A ``--listen`` address that cannot be bound (busy, not permitted)."""


def _claim(tmp: Path) -> int:
    """Take ``tmp`` (``DIR/.tmp``) for writing; return the lock to hold.

    Every sink writing to ``DIR`` holds a shared lock on ``tmp/.lock``.
    Whoever gets it exclusively is alone, so what is in ``tmp`` was left by
    a crash (never a complete message) and is removed; with another sink
    running, nothing is, as it may be a message that sink is receiving.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    fd = os.open(tmp / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("another sink writes to %s: leaving %s as it is", tmp.parent, tmp)
        else:
            for stale in tmp.iterdir():
                if stale.name != ".lock" and not stale.is_dir():
                    stale.unlink()
        # Not atomic (flock(2)), and need not be: nothing is ours yet.
        fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_served(path: str) -> bool:
    """Whether a server listens on the Unix-domain socket at ``path``."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return False
    except OSError:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        # 0: accepted; EAGAIN: its backlog is full; EACCES: another user's,
        # maybe live.  Only a refusal says nobody listens there.
        return probe.connect_ex(path) not in (errno.ECONNREFUSED, errno.ENOENT)


async def _bind(addresses: list[str]) -> tuple[_Listeners, dict[str, tuple[int, int]]]:
    """Listeners for ``addresses``; and the socket files made, by path."""
    listeners: _Listeners = []
    files: dict[str, tuple[int, int]] = {}
    try:
        for address in addresses:
            path = address[5:] if address.startswith("unix:") else None
            if path and _is_served(path):
                # listen() would take the path over (it unlinks a socket
                # file), and that server would lose its clients.
                raise _ListenError(f"--listen {address}: a server is listening there")
            try:
                listeners.append(await listen(address))
            except ValueError as exc:
                raise _UsageError(str(exc)) from None
            except OSError as exc:
                # A name that does not resolve has a getaddrinfo code, no errno.
                reason = exc.strerror or str(exc)
                raise _ListenError(f"--listen {address}: {reason}") from None
            if path:
                st = os.stat(path)
                files[path] = (st.st_dev, st.st_ino)
    except BaseException:
        await _unbind(listeners, files)
        raise
    return listeners, files


async def _unbind(listeners: _Listeners, files: dict[str, tuple[int, int]]) -> None:
    with anyio.CancelScope(shield=True):
        for listener in listeners:
            await listener.aclose()
    for path, identity in files.items():
        # Only our own: another sink may have bound the path since.
        with contextlib.suppress(OSError):
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == identity:
                os.unlink(path)


def _bound(listener: Listener[ByteStream]) -> list[str]:
    """Where ``listener`` listens, written as ``--listen`` is.

    The port bound for ``:0``, and each address a name stands for.
    """
    found = []
    for part in getattr(listener, "listeners", [listener]):
        address = part.extra(anyio.abc.SocketAttribute.local_address, None)
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            found.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        elif address is not None:
            found.append(f"unix:{address}")
    return found


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT or SIGTERM (a second one stops at once)."""
    # Bound first: a bad or busy address must stop us before we touch a
    # directory another instance may be writing to.
    listeners, files = await _bind(args.listen)
    lock: int | None = None
    try:
        out: Path | None = None
        if not args.discard:
            out = Path(args.out)
            lock = await anyio.to_thread.run_sync(_claim, out / ".tmp")
        if args.auth and settings.ssl_context is None:
            logger.warning("AUTH is offered without TLS: passwords cross the network in clear")
        credentials = _credentials(args.auth)
        hooks = DiscardHooks(credentials) if out is None else SinkHooks(credentials, out=out)
        await _serve(Server(hooks, settings), listeners, out)
    finally:
        await _unbind(listeners, files)
        if lock is not None:
            os.close(lock)
    return 0


async def _serve(server: Server, listeners: _Listeners, out: Path | None) -> None:
    async with anyio.create_task_group() as tg:

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            await server.serve(*listeners, task_status=task_status)
            tg.cancel_scope.cancel()  # done: stop watching for signals

        async def watch_signals(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not server.stopping:
                        logger.info("%s: shutting down (again to stop at once)", name)
                        server.shutdown()
                    else:
                        # Sessions still in a transaction get their 421 now
                        # rather than at the end of the grace period.
                        logger.info("%s: stopping now", name)
                        tg.cancel_scope.cancel()

        # Signals first: once a client can be greeted, Ctrl-C stops cleanly.
        await tg.start(watch_signals)
        await tg.start(serve)
        for listener in listeners:
            for address in _bound(listener):
                logger.info(
                    "smtp-mta sink listening on %s, %s",
                    address,
                    "discarding messages" if out is None else f"writing to {out}",
                )


LOG_FORMAT = "%(asctime)s %(name)s %(message)s"


class LogFormatter(logging.Formatter):
    """:class:`logging.Formatter`, with the date and time made once a second.

    The same text as the default ``%(asctime)s`` (``2026-12-07
    13:00:05,123``, local time), without a ``localtime`` and a
    ``strftime`` for each of the lines a busy sink writes.
    """

    def __init__(self, fmt: str) -> None:
        super().__init__(fmt)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._text = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        if self.default_msec_format is None:
            return self._text
        return self.default_msec_format % (self._text, record.msecs)


def _main(args: argparse.Namespace) -> int:
    if not args.discard and not args.out:
        print("smtp-mta sink: --out DIR or --discard is required", file=sys.stderr)
        return 64
    try:
        settings = build_settings(args)
    except (ValueError, OSError) as exc:  # a bad limit, an unreadable PEM
        print(f"smtp-mta sink: {exc}", file=sys.stderr)
        return 64
    # The Logging HOWTO's "Optimization": nothing in the format needs the
    # caller's file and line, the thread or the process, and a busy sink
    # logs a line per session.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    backend, options = {
        "asyncio": ("asyncio", {}),
        "uvloop": ("asyncio", {"use_uvloop": True}),
        "trio": ("trio", {}),
    }[args.backend]
    try:
        return anyio.run(run, args, settings, backend=backend, backend_options=options)
    except _UsageError as exc:
        print(f"smtp-mta sink: --listen: {exc}", file=sys.stderr)
        return 64  # EX_USAGE
    except _ListenError as exc:
        print(f"smtp-mta sink: {exc}", file=sys.stderr)
        return 71  # EX_OSERR, as for any other failure of the system
    except KeyboardInterrupt:
        # Ctrl-C before the signal handlers are in place (still starting).
        return 130
    except ImportError as exc:
        print(
            f"smtp-mta sink: backend {args.backend} is not installed: {exc}",
            file=sys.stderr,
        )
        return 69  # EX_UNAVAILABLE
    except OSError as exc:
        print(f"smtp-mta sink: {exc}", file=sys.stderr)
        return 71  # EX_OSERR


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``smtp-mta sink``."""
    p = subparsers.add_parser(
        "sink",
        help="accept every message and write it to a directory (a debugging server)",
        description=(
            "Accept every sender and recipient and write each message to DIR as "
            "<id>.eml (the bytes received: dot-unstuffed for DATA, verbatim for "
            "BDAT) with <id>.json beside it (envelope, parameters, client, TLS, "
            "AUTH). Files appear atomically. Ctrl-C stops."
        ),
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help="address to listen on: HOST:PORT, [V6]:PORT or unix:PATH "
        "(repeatable; default 127.0.0.1:2525)",
    )
    p.add_argument("--out", metavar="DIR", help="directory for the messages")
    p.add_argument("--discard", action="store_true", help="accept and drop every message")
    p.add_argument("--tls-cert", metavar="PEM", help="certificate chain: offer STARTTLS")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="offer AUTH PLAIN/LOGIN (after STARTTLS when TLS is set up) and "
        "accept these credentials (repeatable)",
    )
    p.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help=f"largest message accepted, 0 for no limit (default {DEFAULT_MAX_SIZE})",
    )
    p.add_argument(
        "--max-recipients",
        type=int,
        default=DEFAULT_MAX_RECIPIENTS,
        metavar="N",
        help=f"recipients per message (default {DEFAULT_MAX_RECIPIENTS})",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on Ctrl-C or SIGTERM, how long sessions in a transaction may take to "
        "finish (default 30; a second signal stops at once)",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        default=10_000,
        metavar="N",
        help="concurrent sessions; more get 421 4.3.2 (default 10000)",
    )
    p.add_argument("--lmtp", action="store_true", help="speak LMTP (RFC 2033) instead of SMTP")
    p.add_argument("--hostname", default="localhost", help="name in the greeting")
    p.add_argument(
        "--backend",
        choices=["asyncio", "uvloop", "trio"],
        default="asyncio",
        help="event loop: asyncio (default), uvloop or trio (each needs its package)",
    )
    p.set_defaults(func=_checked_main)


def _checked_main(args: argparse.Namespace) -> int:
    if args.listen is None:
        args.listen = ["127.0.0.1:2525"]
    if bool(args.tls_cert) != bool(args.tls_key):
        print("smtp-mta sink: --tls-cert and --tls-key go together", file=sys.stderr)
        return 64
    try:
        _credentials(args.auth)
    except argparse.ArgumentTypeError as exc:
        print(f"smtp-mta sink: {exc}", file=sys.stderr)
        return 64
    return _main(args)
