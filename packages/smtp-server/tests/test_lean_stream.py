"""The lean asyncio socket stream serve() uses on asyncio.

It is asyncio's alone, so most of these tests run on asyncio only (trio's
sockets are used as anyio gives them; the last test checks that).
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from smtp_server import listen, serve
from smtp_server._serve import _raw_sockets

asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


@pytest.mark.anyio
async def test_serve_takes_over_plain_listeners_on_asyncio_only(anyio_backend: str) -> None:
    """On asyncio, serve() accepts on a plain TCP listener's sockets itself
    (with the lean stream); on trio, and for listeners that are not plain
    sockets, it accepts through the listener."""
    listener = await listen("127.0.0.1:0")
    try:
        sockets = _raw_sockets(listener)
        if anyio_backend == "asyncio":
            assert sockets is not None
            assert [s.getsockname() for s in sockets] == [
                listener.extra(anyio.abc.SocketAttribute.local_address)
            ]
        else:
            assert sockets is None
        assert _raw_sockets(object()) is None
    finally:
        await listener.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "anyio_backend", [pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop")]
)
async def test_serve_runs_sessions_on_uvloop() -> None:
    """uvloop's transports are not asyncio.Transport subclasses: the lean
    stream must take them all the same (RFC 5321 D.1, a whole transaction)."""
    import smtplib

    listener = await listen("127.0.0.1:0")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    def client() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            return smtp.sendmail("a@b.example", ["c@d.example"], b"Subject: uv\r\n\r\nhi\r\n")

    async with anyio.create_task_group() as tg:
        server = await tg.start(serve, listener)
        assert await anyio.to_thread.run_sync(client) == {}
        assert server.statistics.accepted == 1
        server.shutdown()
