"""The lean asyncio socket stream (asyncio only, by design: under trio the
client uses anyio's own stream, as the last test checks on both backends).

Real sockets on 127.0.0.1; the peer is an anyio listener in the same loop.
"""

from __future__ import annotations

import pytest

from smtp_client import Connection
from smtp_transport import AsyncioSocketStream

from .conftest import Dialogue, scripted_server

pytestmark = pytest.mark.anyio
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])


async def test_connection_uses_the_lean_stream_only_on_asyncio(anyio_backend: str) -> None:
    """Under asyncio a session to an IP address runs on the lean stream; under
    trio, or to a host name (anyio tries each of its addresses), on anyio's."""
    async with scripted_server(Dialogue()) as server:
        for host, lean in [("127.0.0.1", anyio_backend == "asyncio"), ("localhost", False)]:
            conn = await Connection.open(host, server.port, helo="c.test")
            try:
                assert isinstance(conn.stream, AsyncioSocketStream) == lean
            finally:
                await conn.aclose()
