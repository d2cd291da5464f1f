"""serve(): accept connections on listeners and run a session for each."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import attrs
import sniffio

from smtp_message import Reply, replies
from smtp_transport import (
    ACCEPT_RETRY_DELAY,
    AsyncioSocketStream,
    ExhaustionLog,
    aborted,
    exhausted,
    serve_asyncio,
)

from ._hooks import Hooks
from ._session import _Driver, _stream_address
from ._settings import Settings

if TYPE_CHECKING:
    from anyio.abc import Listener, TaskStatus

__all__ = ["Server", "listen", "raise_open_file_limit", "serve", "systemd_listeners"]

logger = logging.getLogger("smtp_server")

#: sd_listen_fds(3): "the first passed file descriptor is fd 3".
SD_LISTEN_FDS_START = 3
#: TCP ports are 16-bit (RFC 9293 3.1).
MAX_PORT = 65535
_PORT = re.compile(r"[0-9]{1,5}")


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; return (soft, hard).

    Each connection is a file descriptor; the usual soft limit (1024) would
    cap a server at a thousand sessions long before memory does.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return (-1, -1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            logger.warning("could not raise the open file limit from %d", soft)
    return soft, hard


@attrs.define(eq=False)
class ServerStatistics:
    """Counts since the server started."""

    #: Sessions running now.
    active: int = 0
    #: Sessions started.
    accepted: int = 0
    #: Connections refused with 421 because of the session bound.
    refused: int = 0


class Server:
    """Runs sessions on listeners; :meth:`shutdown` stops it gracefully.

    ``settings.max_sessions`` bounds the concurrent sessions: a connection
    beyond it gets ``421 4.3.2`` and is closed.  On :meth:`shutdown` the
    server stops accepting, sessions between transactions get ``421 4.3.2``
    at once, and sessions in a transaction have ``settings.shutdown_grace``
    seconds to finish before they get it too.
    """

    def __init__(self, hooks: Hooks | None = None, settings: Settings | None = None) -> None:
        self.hooks = hooks or Hooks()
        self.settings = settings or Settings()
        self.statistics = ServerStatistics()
        self._drivers: set[_Driver] = set()
        self._stopping = False
        self._accept_scope: anyio.CancelScope | None = None
        self._all_done: anyio.Event | None = None

    async def serve(
        self,
        *listeners: Listener[anyio.abc.ByteStream],
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener until :meth:`shutdown`, then wind down."""
        raise_open_file_limit()
        self._all_done = anyio.Event()
        try:
            async with anyio.create_task_group() as sessions:
                with anyio.CancelScope() as accept_scope:
                    self._accept_scope = accept_scope
                    if self._stopping:
                        accept_scope.cancel()
                    async with anyio.create_task_group() as acceptors:
                        for listener in listeners:
                            sockets = _raw_sockets(listener)
                            if sockets is None:
                                acceptors.start_soon(self._accept, listener, sessions)
                            for sock in sockets or ():
                                acceptors.start_soon(self._accept_asyncio, sock, sessions)
                        task_status.started()
                await _close_all(listeners)
                # Accepting has stopped: let sessions in a transaction finish.
                if self._drivers:
                    with anyio.move_on_after(self.settings.shutdown_grace):
                        await self._all_done.wait()
                for driver in list(self._drivers):
                    if driver.scope is not None:
                        driver.scope.cancel()
        finally:
            # Cancelled rather than shut down: the sockets are closed all the
            # same (closing twice is harmless).
            await _close_all(listeners)

    async def _accept(
        self, listener: Listener[anyio.abc.ByteStream], sessions: anyio.abc.TaskGroup
    ) -> None:
        """Accept on ``listener`` until cancelled.

        Not ``listener.serve()``: running out of file descriptors, or a
        connection reset before it was accepted, ends the loop there (and on
        trio the whole server).  Here running out is logged once a second
        and accepting resumes shortly after; a lost connection is skipped.
        """
        parts = getattr(listener, "listeners", None)
        if parts is not None:  # anyio's MultiListener: one loop per socket
            async with anyio.create_task_group() as tg:
                for part in parts:
                    tg.start_soon(self._accept, part, sessions)
            return
        if not isinstance(listener, anyio.abc.SocketListener):
            # Some other listener (TLS, a test's): it only offers serve().
            await listener.serve(self._session, task_group=sessions)
            return
        log = ExhaustionLog(logger)
        while True:
            try:
                stream = await listener.accept()
            except (OSError, anyio.BrokenResourceError) as exc:
                if (lost := aborted(exc)) is not None:
                    # Only the connection being accepted failed.
                    logger.debug("accept() failed for one connection: %s", lost)
                    continue
                cause = exhausted(exc)
                if cause is None:
                    raise
                log(cause)
                await anyio.sleep(ACCEPT_RETRY_DELAY)
                continue
            sessions.start_soon(self._session, stream)

    async def _accept_asyncio(self, sock: socket.socket, sessions: anyio.abc.TaskGroup) -> None:
        await serve_asyncio(sock, self._session, sessions)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._stopping

    def shutdown(self) -> None:
        """Stop accepting; close idle sessions now, the others after the grace."""
        self._stopping = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        for driver in self._drivers:
            driver.stopping = True
            if driver.idle and driver.scope is not None:
                driver.scope.cancel()

    async def _session(self, stream: anyio.abc.ByteStream) -> None:
        stats = self.statistics
        if len(self._drivers) >= self.settings.max_sessions or self._stopping:
            stats.refused += 1
            reply = replies.SHUTTING_DOWN if self._stopping else replies.TOO_BUSY
            await _refuse(stream, self.settings, reply)
            return
        if isinstance(stream, AsyncioSocketStream):
            peer, local = stream.peer, stream.local
        else:
            peer = _stream_address(stream, anyio.abc.SocketAttribute.remote_address)
            local = _stream_address(stream, anyio.abc.SocketAttribute.local_address)
        driver = _Driver(stream, stream, self.hooks, self.settings, False, peer, local)
        driver.stopping = self._stopping
        self._drivers.add(driver)
        stats.accepted += 1
        stats.active += 1
        try:
            await driver.run()
        except Exception:  # interact's own guard failed: never take the server down
            logger.exception("session %s: crashed", driver.session.id)
        finally:
            self._drivers.discard(driver)
            stats.active -= 1
            if self.stopping and not self._drivers and self._all_done is not None:
                self._all_done.set()


async def _close_all(listeners: Sequence[Listener[anyio.abc.ByteStream]]) -> None:
    with anyio.CancelScope(shield=True):
        for listener in listeners:
            await listener.aclose()


def _raw_sockets(listener: object) -> list[socket.socket] | None:
    """The sockets behind ``listener``, if the lean asyncio path can take them.

    ``None`` means: accept through the listener itself (trio, TLS listeners,
    anything that is not plain sockets).
    """
    if sniffio.current_async_library() != "asyncio":
        return None
    parts = getattr(listener, "listeners", [listener])
    if not parts or not all(isinstance(p, anyio.abc.SocketListener) for p in parts):
        return None
    return [p.extra(anyio.abc.SocketAttribute.raw_socket) for p in parts]


async def _refuse(stream: anyio.abc.ByteStream, settings: Settings, reply: Reply) -> None:
    with anyio.move_on_after(settings.timeouts.close, shield=True):
        try:
            if not settings.implicit_tls:
                await stream.send(reply.to_bytes())
            await stream.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


async def serve(
    listeners: Listener[anyio.abc.ByteStream] | Sequence[Listener[anyio.abc.ByteStream]],
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    *,
    task_status: TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SMTP on ``listeners`` until cancelled or shut down.

    ``task_status.started()`` hands back the :class:`Server`, whose
    :meth:`~Server.shutdown` ends the service gracefully.  Several listeners
    share the settings; for different settings per listener (port 25, 587,
    465), run one ``serve`` per group in a task group.
    """
    if not isinstance(listeners, Sequence):
        listeners = [listeners]
    server = Server(hooks, settings)
    async with anyio.create_task_group() as tg:
        await tg.start(_serve_started, server, listeners)
        task_status.started(server)


async def _serve_started(
    server: Server,
    listeners: Sequence[Listener[anyio.abc.ByteStream]],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    await server.serve(*listeners, task_status=task_status)


async def listen(address: str) -> Listener[anyio.abc.ByteStream]:
    """A listener for ``host:port``, ``[v6]:port``, ``:port`` or ``unix:PATH``.

    For development and tests; in production, prefer the service manager's
    sockets (:func:`systemd_listeners`), which need no privilege.  For
    ``unix:PATH``, anyio replaces a socket file already at ``PATH`` (even
    one a live server listens on), and the file stays after the listener
    is closed: removing it is the caller's job, as ``smtp-mta sink`` does.
    """
    if address.startswith("unix:"):
        if not address[5:]:
            raise ValueError(f"no path in {address!r}")
        return await anyio.create_unix_listener(address[5:])
    host, sep, port = address.rpartition(":")
    if not sep or not _PORT.fullmatch(port) or int(port) > MAX_PORT:
        raise ValueError(f"not host:port: {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        # "::1:25" could be a port or the end of the address.
        raise ValueError(f"an IPv6 address needs brackets: {address!r}")
    return await anyio.create_tcp_listener(local_host=host or None, local_port=int(port))


async def systemd_listeners(
    *, unset_environment: bool = True
) -> dict[str, list[anyio.abc.SocketListener]]:
    """The listening sockets systemd passed us, by name (sd_listen_fds(3)).

    Reads ``LISTEN_PID``, ``LISTEN_FDS`` and ``LISTEN_FDNAMES``; sockets
    without a name are under ``"unknown"`` (systemd's own default).  Returns
    ``{}`` when the variables are absent or meant for another process.  The
    variables are removed afterwards, so children do not inherit them.

    Raises :class:`ValueError` for a descriptor that is not a listening
    stream socket (a datagram socket, a connection passed by ``Accept=yes``,
    a file), naming it.
    """
    env = os.environ
    try:
        return await _systemd_listeners(env)
    finally:
        # Whether or not they were ours or usable (as sd_listen_fds(3) does).
        if unset_environment:
            for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
                env.pop(key, None)


async def _systemd_listeners(
    env: Mapping[str, str],
) -> dict[str, list[anyio.abc.SocketListener]]:
    try:
        pid = int(env.get("LISTEN_PID", ""))
        count = int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return {}
    if pid != os.getpid() or count < 1:
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":")
    result: dict[str, list[anyio.abc.SocketListener]] = {}
    for i in range(count):
        fd = SD_LISTEN_FDS_START + i
        name = names[i] if i < len(names) and names[i] else "unknown"
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:  # closed, or a file or pipe (ENOTSOCK)
            raise ValueError(
                f"passed file descriptor {fd} ({name}) is not a socket: {exc.strerror}"
            ) from None
        problem = None
        if sock.type != socket.SOCK_STREAM:
            problem = "is not a stream socket"
        elif not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            # Accept=yes hands over one connection, not a listener.
            problem = "is not listening (a connection? use Accept=no)"
        if problem is not None:
            sock.detach()  # not ours to close
            raise ValueError(f"passed file descriptor {fd} ({name}) {problem}")
        os.set_inheritable(fd, False)
        result.setdefault(name, []).append(await anyio.abc.SocketListener.from_socket(sock))
    return result
