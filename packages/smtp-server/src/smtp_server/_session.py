"""interact(): one SMTP or LMTP session over anyio streams.

A thin driver of :class:`smtp_message.ServerConnection` (in the manner of
httpcore's ``http11.py``): read bytes, feed them, act on each event, write
the replies.  Foreign exceptions are translated here, at the boundary.

On asyncio's plain sockets, while the session's task waits for a command,
what needs no hook is answered inline, in the transport's callback (see
"The inline path" below and docs/design/smtp-server.md); everything else,
and every backend, stream and hook, goes through the task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
import math
import os
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio
from anyio.streams.stapled import StapledByteStream
from anyio.streams.tls import TLSAttribute, TLSStream

from smtp_message import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    Bdat,
    BodyChunk,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Expn,
    Helo,
    Help,
    Lhlo,
    LocalProtocolError,
    MailFrom,
    MessageRejectedError,
    Noop,
    Quit,
    RcptTo,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConnection,
    ServerState,
    StartTls,
    Vrfy,
    replies,
)
from smtp_transport import AsyncioSocketStream

from ._hooks import Envelope, Hooks, MessageAborted, Session, TLSInfo
from ._proxy import ProxyError, parse_proxy_header
from ._sasl import SaslError, start
from ._settings import Settings

if TYPE_CHECKING:
    from smtp_message import Command

    from ._hooks import Credentials

__all__ = ["interact"]

logger = logging.getLogger("smtp_server")

#: How much to ask the transport for at a time.
RECEIVE_SIZE: Final = 65536
#: Replies queued beyond this are sent before more input is parsed.
MAX_QUEUED_REPLIES: Final = 16 * 1024
#: The longest AUTH failure delay, however many failures came before.
MAX_AUTH_DELAY: Final = 30.0
#: How long a closing session waits for the client to close its side.
MAX_LINGER: Final = 2.0
#: How long the end of a TLS session waits for the client's close_notify.
CLOSE_NOTIFY_WAIT: Final = 0.5

_T = TypeVar("_T")

# Exceptions that mean the client went away (or the transport broke).
_GONE = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    ssl.SSLError,
    OSError,
)

_TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures")
_AUTH_TEMPORARY_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
#: RFC 4954 6: 535 5.7.8 covers an authorization identity refused too.
_NOT_AUTHORIZED = Reply(535, "5.7.8", "Not authorized to act as that identity")
_SERVICE_NOT_AVAILABLE = Reply(421, "4.3.0", "Service not available, try again later")
_HOOK_FAILED: Final = object()
#: Handed to the session task by the inline path: nothing to dispatch, look
#: at the session's state again (closed, shutting down, replies to flush).
_WAKE: Final = object()
#: States tested after every reply, as module names: on Python 3.11 an
#: Enum member looked up on its class goes through EnumType.__getattr__.
_CLOSED: Final = ServerState.CLOSED
_HELLO: Final = ServerState.HELLO
_READY: Final = ServerState.READY
_NO_SERVICE: Final = ServerState.NO_SERVICE

#: Whether sessions on asyncio's plain sockets answer what needs no hook
#: inline (see :meth:`_Driver._feed`).  Tests turn it off to compare.
INLINE = True


class _Close(Exception):
    """End the session now, without a further reply."""


class _Body:
    """The message body as the hook sees it: an async iterator of chunks.

    Iterating drives the connection: each step reads from the client as
    needed, so a slow hook slows the client down (TCP backpressure) and the
    server never holds more than one chunk.
    """

    def __init__(self, driver: _Driver, scope: anyio.CancelScope | None) -> None:
        self._driver = driver
        self._scope = scope
        self._first = True
        #: The body ended normally (terminator or BDAT LAST, no violation).
        self.done = False
        #: Why the message cannot complete, once it cannot.
        self.aborted: str | None = None
        #: The reply a rejected body gets (size, bare line endings).
        self.reject_reply: Reply | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self.done:
            raise StopAsyncIteration
        if self.aborted is not None:
            raise MessageAborted(self.aborted)
        data = await self._next()
        if data is None:
            raise StopAsyncIteration
        return data

    def push_deadline(self) -> None:
        # The hook may take data_termination to decide once it stops
        # reading (RFC 5321 4.5.3.2.6).
        if self._scope is not None:
            self._scope.deadline = self._driver.now() + self._driver.timeouts.data_termination

    def _abort(self, reason: str) -> MessageAborted:
        self.aborted = reason
        return MessageAborted(reason)

    async def _next(self) -> bytes | None:
        driver = self._driver
        conn = driver.conn
        t = driver.timeouts
        while True:
            timeout = t.data_initiation if self._first else t.data_block
            self._first = False
            try:
                if self._scope is None:
                    # No hook reads this body, so none needs a MessageAborted:
                    # the session's deadline serves (a timeout ends it, 421).
                    driver.expect(timeout)
                    event = await driver.next_event()
                else:
                    with anyio.fail_after(timeout):
                        event = await driver.next_event()
            except MessageRejectedError as exc:
                assert exc.reply is not None
                self.reject_reply = exc.reply
                raise self._abort(f"rejected: {exc.reply}") from None
            except RemoteProtocolError as exc:
                assert exc.reply is not None
                driver.reply_error(exc.reply)
                if conn.transaction is None or conn.state is _CLOSED:
                    # A failed BDAT chunk ends the transaction (RFC 3030 2).
                    raise self._abort(f"chunk refused: {exc.reply}") from None
                continue  # a bad command between chunks: answered, go on
            except TimeoutError:
                driver.timed_out = True
                raise self._abort("timeout") from None
            except _GONE:
                driver.gone = True
                raise self._abort("connection lost") from None
            self.push_deadline()
            if isinstance(event, BodyChunk):
                return event.data
            if isinstance(event, EndOfData):
                self.done = True
                return None
            if isinstance(event, EndOfChunk):
                driver.reply(conn.default_reply(event))
                continue
            if isinstance(event, (Bdat, Noop, Help, Vrfy)):
                if driver.between_chunks(event):
                    raise self._abort("too many junk commands")
                continue
            if isinstance(event, ConnectionClosed):
                driver.gone = True
                raise self._abort("connection lost")
            # RSET, HELO/EHLO or QUIT between BDAT chunks end the message;
            # the main loop answers the command itself.
            driver.pending_event = event
            raise self._abort(f"aborted by {type(event).__name__.upper()}")

    async def drain(self) -> None:
        """Read the rest of the body (the hook stopped early)."""
        while not self.done and self.aborted is None:
            await self._next()


class _Driver:
    def __init__(
        self,
        stream: anyio.abc.ByteReceiveStream,
        sink: anyio.abc.ByteSendStream,
        hooks: Hooks,
        settings: Settings,
        tls_active: bool,
        peer: tuple[str, int] | None,
        local: tuple[str, int] | None,
    ) -> None:
        self.receive_stream = stream
        self.send_stream = sink
        self.hooks = hooks
        self.settings = settings
        self.timeouts = settings.timeouts
        #: The clock of cancel scope deadlines (:func:`anyio.current_time`),
        #: and the backend's cancel scope class.
        self.now, self.new_scope = _backend_tools()
        protocol = settings.effective_protocol
        self.conn = ServerConnection(protocol, tls_active=tls_active)
        self.session = Session(id=_session_id(), peer=peer, local=local, lmtp=protocol.lmtp)
        self.overridden = _overridden(type(hooks))
        if tls_active:
            # The caller encrypted the stream: tell the hooks what it is.
            self.session.tls = _tls_info(stream)
        self.out = bytearray()
        self.pending_event: Command | None = None
        self.auth_failures = 0
        self.timed_out = False
        self.gone = False
        #: A send was cut short: the stream is out of step with the replies.
        self.cut = False
        # How the session ended, for the log line; set when it is known.
        self.end = "connection closed"
        self.recipients = 0
        #: Commands since the last accepted message that did not move a
        #: mail transaction on (see :meth:`count_junk`).
        self.junk = 0
        #: RCPTs refused for too many recipients since then.
        self.overshoot = 0
        #: The session's cancel scope (:func:`serve` cancels it on shutdown).
        self.scope: anyio.CancelScope | None = None
        #: True while waiting for a command between transactions: a
        #: shutdown may then end the session at once.
        self.idle = False
        #: Set by :func:`serve` when the server is shutting down.
        self.stopping = False
        # The inline path: while the task waits on ``waiter``, ``_feed``
        # answers what arrives, in the event loop's callback.
        self.waiter: asyncio.Future[object] | None = None
        self.inline_deadline = math.inf
        self.inline_timer: asyncio.TimerHandle | None = None
        #: Recipients the message being read inline is answered for (LMTP:
        #: one reply each), or None between messages.
        self.inline_body: int | None = None
        self.inline_first = False
        #: The stream the inline path can take, if it can.
        self.inline_stream = (
            stream if type(stream) is AsyncioSocketStream and stream is sink else None
        )

    # -- I/O ----------------------------------------------------------------

    async def flush(self) -> None:
        """Send the queued replies.

        Always under a deadline (the session's, set by :meth:`expect`, or a
        scope of the caller's): a client that stops reading, its receive
        window full, cannot hold a session.
        """
        if self.out:
            data = bytes(self.out)
            del self.out[:]
            stream = self.send_stream
            try:
                await stream.send(data)
            except BaseException:
                if type(stream) is not AsyncioSocketStream:
                    # Cut short (a deadline, a cancel): how much of it left
                    # is unknown, so nothing more may follow on this stream;
                    # sending it again would repeat part of a reply.  (Our
                    # asyncio stream has queued all of it before it waits.)
                    self.cut = True
                raise

    async def next_event(self) -> Any:
        """The next event from the client, reading as needed.

        Callers bound the wait (:meth:`expect`, or a scope): the deadline
        covers the whole event (a complete command line, say), so a client
        trickling one octet at a time cannot hold a session forever.
        """
        conn = self.conn
        while True:
            if len(self.out) > MAX_QUEUED_REPLIES:
                # A client pipelining tiny commands with long replies (EHLO)
                # must not make us queue megabytes: send before reading on,
                # so a client that does not read its replies stalls itself.
                await self.flush()
            event = conn.next_event()
            if event is NEED_DATA:
                await self.flush()
                try:
                    data = await self.receive_stream.receive(RECEIVE_SIZE)
                except anyio.EndOfStream:
                    data = b""
                conn.receive_data(data)
                continue
            return event

    def reply(self, reply: Reply) -> None:
        """Queue ``reply``; close with 421 once the client erred too often."""
        conn = self.conn
        try:
            self.out += conn.send(reply)
        except LocalProtocolError:
            # A hook answered with a reply the protocol cannot take (say a
            # 354 to MAIL): that is the hook's bug, not the client's.
            logger.exception("session %s: hook gave an impossible reply %s", self.session.id, reply)
            self.out += conn.send(replies.LOCAL_ERROR)
        if conn.errors >= self.settings.max_errors and conn.state is not _CLOSED:
            self.end = "too many errors"
            self.out += conn.send(replies.TOO_MANY_ERRORS)

    def reply_error(self, reply: Reply) -> None:
        """Answer a protocol error with as many replies as are due.

        One, except for a failed last BDAT chunk in LMTP, which is answered
        once per recipient (RFC 2033 4.2) like any other end of a body.
        """
        self.reply(reply)
        while self.conn.reply_due and self.conn.state is not _CLOSED:
            self.reply(reply)
        if reply == replies.TOO_MANY_RECIPIENTS:
            # Not an error (the client sends the rest later, RFC 5321
            # 4.5.3.1.10), but as many again as the limit is no client
            # splitting a long list.
            self.overshoot += 1
            if self.overshoot > self.settings.protocol.max_recipients:
                self.count_junk()

    def expect(self, seconds: float | None) -> None:
        """Bound what follows by ``seconds`` (``None``: no bound).

        The session's one cancel scope carries the deadline: moving it costs
        a timer, where a scope per wait would cost much more.  Expiry
        cancels the session, which ends with ``421 4.4.2``.
        """
        scope = self.scope
        if scope is None:
            return
        current = scope.deadline
        if seconds is None:
            if current != math.inf:
                scope.deadline = math.inf
            return
        deadline = self.now() + seconds
        # Moving the deadline reschedules a timer (on asyncio, a new handle;
        # the old one is only freed on the loop's next turn).  A burst of
        # pipelined commands would make thousands within one turn: a move
        # later by less than 1% of the timeout is not worth it.
        if deadline < current or deadline - current > seconds * 0.01 or current == math.inf:
            scope.deadline = deadline

    async def call_hook(
        self, name: str, func: Callable[..., Awaitable[_T]], *args: object
    ) -> _T | object:
        """Run a hook within its timeout; a failure is logged and reported.

        A hook that raises is the hook's failure (the client gets a 4xx and
        the session goes on); one that does not decide in time ends the
        session like any other timeout (``421 4.4.2``, :class:`Timeouts`).
        A ``TimeoutError`` the hook raises itself is a failure, not ours.
        A hook the subclass does not override is not called at all.
        """
        if name not in self.overridden:
            return None
        self.expect(None)  # the hook's own limit applies, not the last wait's
        with anyio.move_on_after(self.timeouts.hook) as scope:
            try:
                return await func(self.session, *args)
            except Exception:
                logger.exception("session %s: hook %s failed", self.session.id, name)
                return _HOOK_FAILED
        assert scope.cancelled_caught
        logger.error(
            "session %s: hook %s timed out after %.1f s",
            self.session.id,
            name,
            self.timeouts.hook,
        )
        raise TimeoutError

    # -- The inline path ------------------------------------------------------
    #
    # On asyncio's plain sockets, waking the session task for every read is
    # most of what a short session costs.  While the task waits for a
    # command, ``_feed`` runs in the transport's data_received callback
    # instead: it feeds the connection and answers every event that needs
    # no hook (the hook is not overridden) exactly as the task would, and
    # wakes the task only for one that does (or for QUIT, STARTTLS, AUTH,
    # the end of the connection, a timeout).  The task path stays the one
    # for trio, TLS, PROXY and other streams, and for every hook.

    async def _inline_wait(self, stream: AsyncioSocketStream) -> object:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[object] = loop.create_future()
        self.waiter = waiter
        # The inline path keeps its own deadline (one timer, moved lazily):
        # the session's scope must not expire while commands keep coming.
        timeout = self._command_timeout()
        self.expect(None)
        self._inline_deadline(self.now() + timeout)
        try:
            result = await waiter
        finally:
            self._end_inline(stream)
        if result is not _WAKE and not isinstance(result, (Quit, ConnectionClosed)):
            # Whatever the task does next is under the session's deadline
            # again.  Not for what only ends the session: the close has its
            # own bound, and a timer saved is much of a short session's cost.
            self.expect(self._command_timeout())
        return result

    def _end_inline(self, stream: AsyncioSocketStream) -> None:
        self.waiter = None
        stream.feed_to(None)
        stream.when_writable(None)
        if self.inline_timer is not None:
            self.inline_timer.cancel()
            self.inline_timer = None

    def _hand_over(self, result: object = None, exc: Exception | None = None) -> None:
        """Wake the task with ``result`` (or ``exc``); data is buffered again."""
        waiter = self.waiter
        assert waiter is not None
        stream = self.receive_stream
        assert isinstance(stream, AsyncioSocketStream)
        self._end_inline(stream)
        if exc is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(result)

    def _inline_deadline(self, deadline: float) -> None:
        """Move the inline deadline; the timer only when it must fire sooner.

        A later deadline is found when the timer fires, which then waits
        again: one timer per timeout period, not one per command.
        """
        self.inline_deadline = deadline
        timer = self.inline_timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        loop = asyncio.get_running_loop()
        self.inline_timer = loop.call_at(deadline, self._inline_expired)

    def _inline_expired(self) -> None:
        self.inline_timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.now() < self.inline_deadline:
            self._inline_deadline(self.inline_deadline)
            return
        self._hand_over(exc=TimeoutError())

    def _feed(self, data: bytes) -> None:
        """The transport's data_received, while the task waits (inline)."""
        self.conn.receive_data(data)
        if not data:
            stream = self.receive_stream
            assert isinstance(stream, AsyncioSocketStream)
            if stream.transport_error is not None:
                # A reset, not a close: the task path says "connection lost".
                waiter = self.waiter
                if waiter is not None and not waiter.done():
                    self._hand_over(exc=anyio.BrokenResourceError())
                return
        self._inline_run()

    def _inline_run(self) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # the task was cancelled and has not run yet: data is kept
        try:
            result = self._inline_events()
        except Exception as exc:  # noqa: BLE001 - handed to the task, which logs it
            # A bug of ours: the task reports it (the client gets a 421).
            self._hand_over(exc=exc)
            return
        if result is not None:
            self._hand_over(result)

    def _inline_events(self) -> object:
        """Answer events until one needs the task (returned) or more data (None).

        ``None`` also when the client must read its replies first: reading
        is paused until the transport's buffer drains, then this goes on
        (the deadline still runs, so a client that never reads times out).
        """
        conn = self.conn
        progressed = False
        while True:
            if len(self.out) > MAX_QUEUED_REPLIES and not self._write_inline():
                return None
            try:
                event: object = conn.next_event()
                if event is NEED_DATA:
                    if progressed:
                        self._inline_deadline(self.now() + self._inline_timeout())
                    if self.out:
                        self._write_inline()
                    return None
                progressed = True
                if self.inline_body is not None:
                    event = self._inline_body_event(event)
            except MessageRejectedError as exc:
                assert exc.reply is not None
                if self.inline_body is None:
                    raise  # only bodies are rejected
                count, self.inline_body = self.inline_body, None
                logger.info("session %s: message aborted: rejected: %s", self.session.id, exc.reply)
                for _ in range(count):
                    if conn.state is _CLOSED:
                        break  # the rejection was one error too many: 421 said
                    self.reply(exc.reply)
                event = None
                progressed = True
            except RemoteProtocolError as exc:
                assert exc.reply is not None
                self.reply_error(exc.reply)
                if self.inline_body is not None and (
                    conn.transaction is None or conn.state is _CLOSED
                ):
                    # A failed BDAT chunk ends the transaction (RFC 3030 2).
                    self.inline_body = None
                    logger.info(
                        "session %s: message aborted: chunk refused: %s",
                        self.session.id,
                        exc.reply,
                    )
                event = None
                progressed = True
            if event is not None and not self._inline_command(event):
                return event
            if conn.state is _CLOSED:
                return _WAKE
            if self.inline_body is None:
                if conn.transaction is None:
                    if self.stopping:
                        return _WAKE  # the main loop says goodbye
                    self.idle = True
                else:
                    self.idle = False

    def _inline_timeout(self) -> float:
        if self.inline_body is None:
            return self._command_timeout()
        t = self.timeouts
        return t.data_initiation if self.inline_first else t.data_block

    def _write_inline(self) -> bool:
        """Write the queued replies; ``False`` if the client must read first.

        Reading is then paused until the replies drain.
        """
        stream = self.send_stream
        assert isinstance(stream, AsyncioSocketStream)
        data = bytes(self.out)
        del self.out[:]
        if stream.write_nowait(data):
            return True
        # The replies are queued in the transport: stop reading (and so
        # answering) until they drain, as the task path waits in flush().
        stream.when_writable(self._inline_run)
        return False

    def _inline_body_event(self, event: object) -> object:
        """Handle ``event`` of a body no hook reads; ``None`` if it was."""
        self.inline_first = False
        if isinstance(event, BodyChunk):
            return None
        conn = self.conn
        if isinstance(event, EndOfData):
            count, self.inline_body = self.inline_body, None
            assert count is not None
            for _ in range(count):
                if conn.state is _CLOSED:
                    break
                self.reply(replies.MESSAGE_ACCEPTED)
            self.session.messages += 1
            self.junk = self.overshoot = 0
            return None
        if isinstance(event, EndOfChunk):
            self.reply(conn.default_reply(event))
            return None
        if isinstance(event, (Bdat, Noop, Help, Vrfy)):
            if self.between_chunks(event):
                self.inline_body = None
                logger.info("session %s: message aborted: too many junk commands", self.session.id)
            return None
        self.inline_body = None
        if isinstance(event, ConnectionClosed):
            logger.info("session %s: message aborted: connection lost", self.session.id)
            self.end = "connection lost"
        else:
            # RSET, HELO/EHLO or QUIT between BDAT chunks end the message;
            # the command itself is answered as usual.
            name = type(event).__name__.upper()
            logger.info("session %s: message aborted: aborted by %s", self.session.id, name)
        return event

    def _inline_command(self, event: object) -> bool:
        """Answer ``event`` if no hook is needed; ``False`` if the task must."""
        overridden = self.overridden
        conn = self.conn
        if isinstance(event, MailFrom):
            if "on_mail" in overridden:
                return False
            self.reply(replies.SENDER_OK)
        elif isinstance(event, RcptTo):
            if "on_rcpt" in overridden:
                return False
            self.reply(replies.RECIPIENT_OK)
            self.recipients += 1
        elif isinstance(event, (Data, Bdat)):
            if "on_message" in overridden:
                return False
            transaction = conn.transaction
            assert transaction is not None
            if isinstance(event, Data):
                self.reply(replies.START_MAIL_INPUT)
            self.inline_body = len(transaction.recipients) if self.session.lmtp else 1
            self.inline_first = True
        elif isinstance(event, (Helo, Ehlo, Lhlo)):
            if "on_hello" in overridden:
                return False
            if self.session.hello is not None and self.count_junk():
                return True
            reply = conn.ehlo_reply(event)
            self.reply(reply)
            if reply.is_positive:
                self.session.hello = event
        elif isinstance(event, (Rset, Noop, Help, Vrfy, Expn)):
            self._junk(event)
        else:
            return False  # QUIT, STARTTLS, AUTH, the end of the connection
        return True

    # -- The session ----------------------------------------------------------

    async def run(self) -> None:
        try:
            with self.new_scope() as scope:
                self.scope = scope
                try:
                    await self._run()
                except _Close:
                    pass
                except TimeoutError:
                    self.end = "timeout"
                    self._say_421(replies.TIMEOUT)
                except _GONE:
                    self.end = "connection lost"
                except Exception:
                    self.end = "internal error"
                    logger.exception("session %s: internal error", self.session.id)
                    self._say_421(Reply(421, "4.3.0", "Internal error, closing connection"))
            if scope.cancelled_caught:
                if self.stopping:
                    self.end = "shutdown"
                    self._say_421(replies.SHUTTING_DOWN)
                else:  # the deadline set by expect() passed
                    self.end = "timeout"
                    self._say_421(replies.TIMEOUT)
        except BaseException:
            # Cancelled from outside (the task running the session, or the
            # whole server): the client still hears why, and the streams
            # are still closed.
            self.end = "cancelled"
            self._say_421(replies.SHUTTING_DOWN)
            raise
        finally:
            await self._close()

    def _say_421(self, reply: Reply) -> None:
        # A 421 may be sent at any time, even before the greeting.
        if self.conn.state is not _CLOSED:
            self.out += self.conn.send(reply)

    async def _close(self) -> None:
        try:
            stream = self.send_stream
            if (
                type(stream) is AsyncioSocketStream
                and stream is self.receive_stream
                and self.end != "cancelled"
            ):
                # The common end on asyncio: no cancel scopes (nothing there
                # waits beyond its own timer), which were much of the cost
                # of a short session.
                data = b"" if self.gone or self.cut else bytes(self.out)
                del self.out[:]
                await stream.linger_close(data, min(MAX_LINGER, self.timeouts.close))
            else:
                await self._close_streams()
        finally:
            # Cancelled while closing (a forced stop): the hook still runs.
            await self._closed()

    async def _closed(self) -> None:
        if "on_disconnect" in self.overridden:
            with anyio.move_on_after(self.timeouts.hook, shield=True):
                try:
                    await self.hooks.on_disconnect(self.session)
                except Exception:
                    logger.exception("session %s: hook on_disconnect failed", self.session.id)
        s = self.session
        logger.info(
            "session=%s peer=%s tls=%s auth=%s helo=%s messages=%d recipients=%d "
            "duration=%.3f end=%s",
            s.id,
            _address(s.peer),
            s.tls.version if s.tls else "no",
            "yes" if s.auth_identity else "no",
            s.hello.domain if s.hello else "-",
            s.messages,
            self.recipients,
            time.time() - s.started,
            _token(self.end),
        )

    async def _close_streams(self) -> None:
        # The last replies get `close` seconds; a client that does not read
        # them (its window full) must not keep the socket open beyond that.
        if not (self.gone or self.cut):
            with anyio.move_on_after(self.timeouts.close, shield=True):
                with contextlib.suppress(TimeoutError, *_GONE):
                    await self.flush()
                    if self.end != "cancelled":  # not when stopped at once
                        with anyio.move_on_after(MAX_LINGER):
                            await self._linger()
        for stream in {
            id(self.send_stream): self.send_stream,
            id(self.receive_stream): self.receive_stream,
        }.values():
            # In a scope of its own: a flush that used up its time must not
            # skip the close.  aclose() drops what the peer has not read (it
            # does not wait for it); the forceful close is the fallback, as
            # it stops composite streams (TLS over two sockets) half way.
            with anyio.move_on_after(self.timeouts.close, shield=True) as scope:
                with contextlib.suppress(*_GONE):
                    await stream.aclose()
            if scope.cancelled_caught:
                await anyio.aclose_forcefully(stream)

    async def _linger(self) -> None:
        """Half-close, then discard what the client still sends until it closes.

        Closing a socket with input unread makes the kernel reset the
        connection, and a reset can destroy replies the client has not read
        yet: the ``421`` that says why the session ends.  The caller bounds
        this by :data:`MAX_LINGER` (and the ``close`` timeout).  After QUIT
        too: a client may have pipelined more behind it, and a polite one
        closes at once anyway.  Under TLS, close_notify comes first, and the
        half-close and the draining happen on the stream under it.
        """
        stream = self.send_stream
        receive: anyio.abc.ByteReceiveStream = self.receive_stream
        if isinstance(stream, TLSStream):
            # Go on under TLS, once it has said its end (close_notify).
            under = await self._close_notify(stream)
            if not isinstance(under, anyio.abc.ByteStream):
                return
            stream = receive = under
        if not isinstance(stream, anyio.abc.ByteStream):
            return  # a send-only stream cannot half-close
        try:
            await stream.send_eof()
        except NotImplementedError:  # nor can some other streams
            return
        while True:
            await receive.receive(RECEIVE_SIZE)  # EndOfStream ends it

    async def _close_notify(self, stream: TLSStream) -> anyio.abc.AnyByteStream:
        """Send TLS close_notify (RFC 8446 6.1); return the stream under TLS.

        anyio's TLS streams cannot half-close; close_notify is TLS's own
        end of output, and the lingering then goes on underneath: a client
        that pipelined more after QUIT, and whose window was full, would
        otherwise have its unread replies, the 221 with them, destroyed by
        the reset that closing on unread input makes.  ``unwrap()`` sends
        close_notify first, then waits for the client's; many clients close
        without one, or send more commands first (which TLS refuses after
        close_notify): a short wait, and the end is the same.
        """
        with anyio.move_on_after(CLOSE_NOTIFY_WAIT):
            with contextlib.suppress(ssl.SSLError, *_GONE):
                transport, _ = await stream.unwrap()
                return transport
        return stream.transport_stream

    async def _run(self) -> None:
        settings = self.settings
        if settings.proxy_protocol:
            await self._read_proxy_header()
        if settings.implicit_tls and not self.conn.tls_active:
            await self._handshake()
            self.conn.tls_active = True
        result = await self.call_hook("on_connect", self.hooks.on_connect)
        if result is None:
            greeting = self.conn.greeting(settings.greeting)
        elif isinstance(result, Reply) and result.code in (220, 421, 554):
            greeting = result
        else:
            # RFC 5321 3.1: a greeting is 220, or 554 (no service), or 421.
            if result is not _HOOK_FAILED:
                logger.error("session %s: on_connect returned %r", self.session.id, result)
            greeting = _SERVICE_NOT_AVAILABLE
        self.reply(greeting)
        await self._loop()

    def _command_timeout(self) -> float:
        state = self.conn.state
        t = self.timeouts
        if state is _HELLO:
            return t.hello
        if state is _READY or state is _NO_SERVICE:
            return t.idle
        return t.command

    async def _loop(self) -> None:
        conn = self.conn
        while conn.state is not _CLOSED:
            if self.stopping and conn.transaction is None:
                self.end = "shutdown"
                self.reply(replies.SHUTTING_DOWN)
                break
            event = self.pending_event
            self.pending_event = None
            if event is None:
                try:
                    event = await self._wait_for_command()
                except RemoteProtocolError as exc:
                    assert exc.reply is not None
                    self.reply_error(exc.reply)
                    continue
            if event is _WAKE:
                continue
            if event is PAUSED:
                raise AssertionError("paused outside STARTTLS")  # pragma: no cover
            await self._dispatch(event)

    async def _wait_for_command(self) -> Any:
        # Between transactions, a shutdown may end the session at once.
        self.idle = self.conn.transaction is None
        try:
            stream = self.inline_stream
            if stream is not None and INLINE and len(self.out) <= MAX_QUEUED_REPLIES:
                # The inline path keeps its own deadline: the session's is
                # set only if the task goes on, which spares a timer.
                event = self.conn.next_event()
                if event is NEED_DATA:
                    data = bytes(self.out)
                    del self.out[:]
                    drained = not data or stream.write_nowait(data)
                    if drained and stream.feed_to(self._feed):
                        return await self._inline_wait(stream)
                    self.expect(self._command_timeout())
                    if not drained:
                        await stream.send(b"")  # wait until the client reads
                    return await self.next_event()
                self.expect(self._command_timeout())
                return event
            # The deadline stays after the event arrives: what follows until
            # the next wait is quick, and hooks clear it (they have their own).
            self.expect(self._command_timeout())
            return await self.next_event()
        finally:
            self.idle = False

    async def _dispatch(self, event: object) -> None:
        conn = self.conn
        if isinstance(event, ConnectionClosed):
            self.gone = True
            raise _Close
        if isinstance(event, (Helo, Ehlo, Lhlo)):
            await self._on_hello(event)
        elif isinstance(event, MailFrom):
            await self._on_command("on_mail", self.hooks.on_mail, event, replies.SENDER_OK)
        elif isinstance(event, RcptTo):
            reply = await self._on_command(
                "on_rcpt", self.hooks.on_rcpt, event, replies.RECIPIENT_OK
            )
            self.recipients += reply.is_positive
        elif isinstance(event, Data):
            self.reply(replies.START_MAIL_INPUT)
            # The client waits for the 354 (RFC 2920 3.1: DATA ends a
            # pipelined group): send it before the hook runs, which may
            # prepare for a while before reading the body.
            await self.flush()
            await self._receive_message("DATA")
        elif isinstance(event, Bdat):
            await self._receive_message("BDAT")
        elif isinstance(event, StartTls):
            await self._on_starttls()
        elif isinstance(event, Auth):
            await self._on_auth(event)
        elif isinstance(event, Quit):
            self.end = "quit"
            self.reply(conn.default_reply(event))
        elif isinstance(event, (Rset, Noop, Help, Vrfy, Expn)):
            self._junk(event)
        else:  # pragma: no cover - every event type is handled above
            raise AssertionError(f"unexpected event {event!r}")

    def count_junk(self) -> bool:
        """Count a command that does not move a mail transaction on.

        Those are NOOP, RSET, VRFY, EXPN and HELP (between BDAT chunks
        too), a repeated HELO/EHLO, a ``BDAT 0`` that is not the last, and
        RCPTs refused for too many recipients beyond as many again.  Past
        ``max_junk_commands`` since the last accepted message, the client
        is keeping the session (and its slot) without sending mail; RFC
        5321 4.5.3.2 lets a server give up.  ``True`` when it did: the 421
        is said, and stands for the command's own reply.
        """
        self.junk += 1
        if self.junk <= self.settings.max_junk_commands or self.conn.state is _CLOSED:
            return False
        self.end = "too many junk commands"
        self.reply(replies.TOO_MANY_ERRORS)
        return True

    def between_chunks(self, event: Bdat | Noop | Help | Vrfy) -> bool:
        """Handle a command between BDAT chunks, on either path.

        A chunk's BDAT is answered at the chunk's end.  An empty chunk that
        is not the last, and NOOP, HELP or VRFY, are junk.  ``True`` if the
        command was one junk command too many (the 421 is said).
        """
        if isinstance(event, Bdat) and (event.size or event.last):
            return False
        if self.count_junk():
            return True
        if not isinstance(event, Bdat):
            self.reply(self.conn.default_reply(event))
        return False

    def _junk(self, event: Rset | Noop | Help | Vrfy | Expn) -> None:
        if not self.count_junk():
            self.reply(self.conn.default_reply(event))

    async def _on_hello(self, command: Helo | Ehlo | Lhlo) -> None:
        if self.session.hello is not None and self.count_junk():
            return
        result = await self.call_hook("on_hello", self.hooks.on_hello, command)
        reply = self._hook_reply(result, self.conn.ehlo_reply(command))
        self.reply(reply)
        if reply.is_positive:
            self.session.hello = command

    async def _on_command(
        self,
        name: str,
        hook: Callable[..., Awaitable[Reply | None]],
        command: Command,
        default: Reply,
    ) -> Reply:
        result = await self.call_hook(name, hook, command)
        reply = self._hook_reply(result, default)
        self.reply(reply)
        return reply

    def _hook_reply(self, result: object, default: Reply) -> Reply:
        if result is _HOOK_FAILED:
            return replies.LOCAL_ERROR
        if result is None:
            return default
        if isinstance(result, Reply):
            return result
        logger.error("session %s: hook returned %r, not a Reply or None", self.session.id, result)
        return replies.LOCAL_ERROR

    # -- Messages -----------------------------------------------------------

    async def _receive_message(self, body_command: str) -> None:
        conn = self.conn
        transaction = conn.transaction
        assert transaction is not None
        envelope = Envelope(transaction.mail_from, tuple(transaction.recipients), body_command)
        outcome: object = None
        if "on_message" not in self.overridden:
            # The default hook would only read the body to its end.  Each
            # read has its own limit (data_block); the command's deadline
            # must not bound the whole body.
            self.expect(None)
            body = _Body(self, None)
        else:
            outcome, body = await self._message_hook(envelope)
        if body.aborted is None and not body.done:
            with contextlib.suppress(MessageAborted):
                await body.drain()
        if body.aborted is not None:
            await self._aborted(body, envelope)
            return
        accepted = False
        for reply in self._message_replies(outcome, envelope):
            if self.conn.state is _CLOSED:
                break  # an LMTP outcome was 421: nothing more is said
            self.reply(reply)
            accepted = accepted or reply.is_positive
        if accepted:  # for one recipient at least, in LMTP: one message
            self.session.messages += 1
            self.junk = self.overshoot = 0

    async def _message_hook(self, envelope: Envelope) -> tuple[object, _Body]:
        outcome: object = None
        with anyio.CancelScope() as scope:
            body = _Body(self, scope)
            body.push_deadline()
            self.expect(None)  # the body's and the hook's own limits apply
            try:
                outcome = await self.hooks.on_message(self.session, envelope, body)
            except MessageAborted:
                outcome = _HOOK_FAILED
            except Exception:
                logger.exception("session %s: hook on_message failed", self.session.id)
                outcome = _HOOK_FAILED
        if scope.cancelled_caught:
            # RFC 5321 4.5.3.2.6: the client waits data_termination for the
            # reply, and gives up after; end the session as a timeout.
            logger.error("session %s: hook on_message timed out", self.session.id)
            raise TimeoutError
        return outcome, body

    async def _aborted(self, body: _Body, envelope: Envelope) -> None:
        logger.info("session %s: message aborted: %s", self.session.id, body.aborted)
        if self.timed_out:
            raise TimeoutError
        if self.gone:
            self.end = "connection lost"
            raise _Close
        if body.reject_reply is not None:
            count = len(envelope.recipients) if self.session.lmtp else 1
            for _ in range(count):
                if self.conn.state is _CLOSED:
                    break  # the rejection was one error too many: 421 said
                self.reply(body.reject_reply)

    def _message_replies(self, outcome: object, envelope: Envelope) -> list[Reply]:
        lmtp = self.session.lmtp
        count = len(envelope.recipients) if lmtp else 1
        if outcome is _HOOK_FAILED:
            return [replies.LOCAL_ERROR] * count
        if outcome is None or isinstance(outcome, Reply):
            return [outcome or replies.MESSAGE_ACCEPTED] * count
        if lmtp and isinstance(outcome, Sequence) and len(outcome) == count:
            out = []
            for item in outcome:
                if item is None or isinstance(item, Reply):
                    out.append(item or replies.MESSAGE_ACCEPTED)
                else:
                    break
            else:
                return out
        logger.error(
            "session %s: on_message returned %r: expected a Reply, None%s",
            self.session.id,
            outcome,
            f", or {count} of them" if lmtp else "",
        )
        return [replies.LOCAL_ERROR] * count

    # -- STARTTLS, AUTH, PROXY ----------------------------------------------------

    async def _handshake(self) -> None:
        context = self.settings.ssl_context
        assert context is not None
        await self.flush()
        receive: object = self.receive_stream
        if receive is self.send_stream and isinstance(receive, anyio.abc.ByteStream):
            transport: anyio.abc.ByteStream = receive
        else:
            transport = StapledByteStream(self.send_stream, self.receive_stream)
        # Until the handshake is done nothing can be said to the client: a
        # 421 in clear would land inside it.  A shutdown does not wait for
        # it (it is no mail transaction), it closes the connection.
        self.gone = True
        try:
            with anyio.fail_after(self.timeouts.tls_handshake):
                tls = await self._idle(
                    TLSStream.wrap(
                        transport,
                        server_side=True,
                        ssl_context=context,
                        standard_compatible=False,
                    )
                )
        except (TimeoutError, *_GONE) as exc:
            self.end = f"TLS handshake failed: {type(exc).__name__}"
            raise _Close from None
        self.gone = False
        self.receive_stream = self.send_stream = tls
        self.inline_stream = None
        self.session.tls = _tls_info(tls)

    async def _on_starttls(self) -> None:
        self.reply(replies.READY_TO_START_TLS)
        if self.conn.state is not ServerState.STARTTLS:
            return
        await self._handshake()
        discarded = self.conn.tls_established()
        if discarded:
            # CVE-2011-0411: commands pipelined after STARTTLS are injected
            # into the encrypted session by whoever sits in the middle.
            logger.warning(
                "session %s: discarded %d octets sent after STARTTLS",
                self.session.id,
                len(discarded),
            )
        self.session.hello = None
        self.session.auth_identity = None

    async def _idle(self, wait: Awaitable[_T]) -> _T:
        """Await ``wait`` as a wait between transactions.

        An AUTH exchange is not a mail transaction: a shutdown ends the
        session at once there, as it does between commands.
        """
        self.idle = True
        try:
            if self.stopping and self.scope is not None:
                self.scope.cancel()  # the shutdown came first
            return await wait
        finally:
            self.idle = False

    async def _on_auth(self, command: Auth) -> None:
        exchange = start(command.mechanism)
        response = command.initial_response
        while True:
            try:
                step = exchange.step(response)
            except SaslError as exc:
                self.reply(exc.reply)
                return
            if isinstance(step, bytes):
                self.reply(Reply(334, None, base64.b64encode(step).decode("ascii")))
                self.expect(self.timeouts.command)
                try:
                    event = await self._idle(self.next_event())
                except RemoteProtocolError as exc:  # "*" or bad base64
                    assert exc.reply is not None
                    self.reply_error(exc.reply)
                    return
                assert isinstance(event, (AuthResponse, ConnectionClosed))
                if isinstance(event, ConnectionClosed):
                    await self._dispatch(event)
                    return
                response = event.data
                continue
            await self._check_credentials(step)
            return

    async def _check_credentials(self, credentials: Credentials) -> None:
        result = await self.call_hook("on_auth", self.hooks.on_auth, credentials)
        refusal = replies.AUTH_FAILED
        if result is True or isinstance(result, str):
            identity = result if isinstance(result, str) else credentials.username
            authzid = credentials.authzid
            if authzid is None or authzid == identity:
                self.conn.authenticated(identity)
                self.session.auth_identity = identity
                self.reply(replies.AUTH_SUCCESSFUL)
                return
            # RFC 4616 2: the server "MUST verify that the authentication
            # identity is permitted to act as the authorization identity";
            # True accepts the password, not the request to act as another.
            refusal = _NOT_AUTHORIZED
        elif isinstance(result, Reply) and result.is_transient:
            self.reply(result)  # a temporary failure: no penalty
            return
        elif isinstance(result, Reply) and result.is_permanent:
            refusal = result  # the hook's own refusal is still a failure
        elif result is _HOOK_FAILED or isinstance(result, Reply):
            # A 2xx or 3xx from the hook: only the server says 235 (after
            # its own checks) or 334 (its SASL exchange), so it is the
            # hook's bug; the client hears a temporary failure.
            if result is not _HOOK_FAILED:
                logger.error("session %s: on_auth returned %r", self.session.id, result)
            self.reply(_AUTH_TEMPORARY_FAILURE)
            return
        self.auth_failures += 1
        logger.info(
            "session %s: AUTH %s failed for %r (%d)",
            self.session.id,
            credentials.mechanism,
            credentials.username,
            self.auth_failures,
        )
        delay = min(
            self.settings.auth_failure_delay * 2 ** (self.auth_failures - 1),
            MAX_AUTH_DELAY,
        )
        self.expect(self.timeouts.command + delay)
        await self.flush()
        await self._idle(anyio.sleep(delay))
        if self.auth_failures >= self.settings.max_auth_failures:
            self.end = "too many AUTH failures"
            self.reply(_TOO_MANY_AUTH_FAILURES)
        else:
            self.reply(refusal)

    async def _read_proxy_header(self) -> None:
        data = b""
        try:
            with anyio.fail_after(self.timeouts.proxy_header):
                while True:
                    header = parse_proxy_header(data)
                    if header is not None:
                        break
                    data += await self.receive_stream.receive(RECEIVE_SIZE)
        except (ProxyError, TimeoutError, anyio.EndOfStream) as exc:
            self.end = f"bad PROXY header: {str(exc) or type(exc).__name__}"
            self.gone = True
            raise _Close from None
        if header.source is not None:
            self.session.peer = header.source
            self.session.local = header.destination
        rest = data[header.length :]
        if rest:
            # What followed the header in the same read belongs to the next
            # layer: SMTP, or the TLS handshake on an implicit-TLS listener.
            self.receive_stream = _Replay(self.receive_stream, rest)
            self.inline_stream = None


class _Replay(anyio.abc.ByteReceiveStream):
    """A receive stream that first gives back octets already read from it."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream, data: bytes) -> None:
        self._stream = stream
        self._data = data

    async def receive(self, max_bytes: int = RECEIVE_SIZE) -> bytes:
        if self._data:
            data, self._data = self._data[:max_bytes], self._data[max_bytes:]
            await anyio.lowlevel.checkpoint()
            return data
        return await self._stream.receive(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


def _tls_info(stream: object) -> TLSInfo | None:
    """What the hooks are told of a TLS stream (``None`` if it is not one)."""
    if not isinstance(stream, anyio.TypedAttributeProvider):
        return None
    version = stream.extra(TLSAttribute.tls_version, None)
    if version is None:
        return None
    cipher = stream.extra(TLSAttribute.cipher, None)
    return TLSInfo(version, cipher[0] if cipher else None)


_HOOK_NAMES = (
    "on_connect", "on_hello", "on_auth", "on_mail", "on_rcpt", "on_message", "on_disconnect",
)  # fmt: skip
_ids = itertools.count(1)
_ID_PREFIX = os.urandom(2).hex()


#: The class ``anyio.CancelScope()`` makes on each backend.
_SCOPE_CLASSES: dict[str, Callable[[], anyio.CancelScope]] = {}


def _backend_tools() -> tuple[Callable[[], float], Callable[[], anyio.CancelScope]]:
    """The running loop's clock and a maker of its cancel scopes.

    :func:`anyio.current_time` and ``anyio.CancelScope()`` find the backend
    anew on every call (sniffio, ``current_task``), which was several per
    cent of a short session's CPU; here it is found once a session.  On
    asyncio the clock is the loop's ``time``; the scope class is the one
    anyio itself makes on this backend, so a scope is the same object.
    """
    library = sniffio.current_async_library()
    scope_class = _SCOPE_CLASSES.get(library)
    if scope_class is None:
        scope_class = _SCOPE_CLASSES[library] = type(anyio.CancelScope())
    if library == "asyncio":
        return asyncio.get_running_loop().time, scope_class
    return anyio.current_time, scope_class


def _session_id() -> str:
    """Unique within the process, and across restarts, for logs."""
    return f"{_ID_PREFIX}{next(_ids):06x}"


def _overridden(cls: type[Hooks]) -> frozenset[str]:
    """The hook methods ``cls`` overrides (the others need not be called).

    Cached per class: a class's methods are not expected to change once it
    serves.
    """
    found = _OVERRIDDEN.get(cls)
    if found is None:
        found = frozenset(
            name for name in _HOOK_NAMES if getattr(cls, name) is not getattr(Hooks, name)
        )
        _OVERRIDDEN[cls] = found
    return found


#: _overridden's cache; weak, so classes made on the fly can go.
_OVERRIDDEN: weakref.WeakKeyDictionary[type[Hooks], frozenset[str]] = weakref.WeakKeyDictionary()


def _token(value: str) -> str:
    """``value`` as one key=value token: quoted when it has a space (logfmt)."""
    if value and " " not in value and '"' not in value and "\\" not in value:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _address(address: tuple[str, int] | None) -> str:
    if address is None:
        return "-"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _stream_address(stream: object, attribute: Any) -> tuple[str, int] | None:
    if not isinstance(stream, anyio.TypedAttributeProvider):
        return None
    value = stream.extra(attribute, None)
    if isinstance(value, tuple) and len(value) >= 2:
        return (str(value[0]), int(value[1]))
    return None


async def interact(
    stream: anyio.abc.ByteReceiveStream,
    sink: anyio.abc.ByteSendStream,
    hooks: Hooks | None = None,
    settings: Settings | None = None,
    *,
    tls_active: bool = False,
    peer: tuple[str, int] | None = None,
    local: tuple[str, int] | None = None,
) -> Session:
    """Run one SMTP (or LMTP) session to its end, then close the streams.

    ``stream`` is where the client's bytes come from and ``sink`` where
    replies go; for a socket, pass the same :class:`anyio.abc.ByteStream`
    twice.  ``hooks`` decide (the default accepts and discards every
    message); ``settings`` say what is offered and enforced.  Pass
    ``tls_active=True`` if the streams are already encrypted.  ``peer`` and
    ``local`` default to the socket's addresses when the stream has them.

    Client misbehaviour never raises out of here: it gets its SMTP reply,
    or the connection is closed.  Returns the :class:`Session`.
    """
    if peer is None:
        peer = _stream_address(stream, anyio.abc.SocketAttribute.remote_address)
    if local is None:
        local = _stream_address(stream, anyio.abc.SocketAttribute.local_address)
    driver = _Driver(
        stream, sink, hooks or Hooks(), settings or Settings(), tls_active, peer, local
    )
    await driver.run()
    return driver.session
