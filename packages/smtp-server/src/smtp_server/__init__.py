"""smtp_server: SMTP and LMTP sessions over anyio streams.

:func:`interact` runs one session on any pair of byte streams, under asyncio
or trio; :func:`serve` accepts connections and runs a session for each.
Decisions come from :class:`Hooks`; what is offered and enforced from
:class:`Settings`.  The protocol itself is :mod:`smtp_message`'s
:class:`~smtp_message.ServerConnection`, which this package drives.
"""

from __future__ import annotations

import contextlib

from ._hooks import Credentials as Credentials
from ._hooks import Envelope as Envelope
from ._hooks import Hooks as Hooks
from ._hooks import MessageAborted as MessageAborted
from ._hooks import MessageOutcome as MessageOutcome
from ._hooks import Session as Session
from ._hooks import TLSInfo as TLSInfo
from ._proxy import ProxyError as ProxyError
from ._proxy import ProxyHeader as ProxyHeader
from ._proxy import parse_proxy_header as parse_proxy_header
from ._serve import Server as Server
from ._serve import ServerStatistics as ServerStatistics
from ._serve import listen as listen
from ._serve import raise_open_file_limit as raise_open_file_limit
from ._serve import serve as serve
from ._serve import systemd_listeners as systemd_listeners
from ._session import interact as interact
from ._settings import Settings as Settings
from ._settings import Timeouts as Timeouts

__version__ = "0.1.0"

__all__ = [
    "Credentials",
    "Envelope",
    "Hooks",
    "MessageAborted",
    "MessageOutcome",
    "ProxyError",
    "ProxyHeader",
    "Server",
    "ServerStatistics",
    "Session",
    "Settings",
    "TLSInfo",
    "Timeouts",
    "interact",
    "listen",
    "parse_proxy_header",
    "raise_open_file_limit",
    "serve",
    "systemd_listeners",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("smtp_server._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj
