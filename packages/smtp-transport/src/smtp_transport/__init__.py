"""smtp_transport: a lean anyio socket stream for asyncio.

See :mod:`smtp_transport._asyncio` for why it exists.
"""

from __future__ import annotations

import contextlib

from ._asyncio import ACCEPT_RETRY_DELAY as ACCEPT_RETRY_DELAY
from ._asyncio import HIGH_WATER as HIGH_WATER
from ._asyncio import LOW_WATER as LOW_WATER
from ._asyncio import AsyncioSocketStream as AsyncioSocketStream
from ._asyncio import ExhaustionLog as ExhaustionLog
from ._asyncio import StreamProtocol as StreamProtocol
from ._asyncio import aborted as aborted
from ._asyncio import connect_tcp as connect_tcp
from ._asyncio import exhausted as exhausted
from ._asyncio import serve_asyncio as serve_asyncio

__version__ = "0.1.0"

__all__ = [
    "ACCEPT_RETRY_DELAY",
    "HIGH_WATER",
    "LOW_WATER",
    "AsyncioSocketStream",
    "ExhaustionLog",
    "StreamProtocol",
    "aborted",
    "connect_tcp",
    "exhausted",
    "serve_asyncio",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("smtp_transport._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj
