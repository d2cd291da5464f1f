"""smtp_client: sending mail over SMTP and LMTP, under asyncio or trio.

The protocol is :mod:`smtp_message`'s :class:`~smtp_message.ClientConnection`;
this package drives it over anyio streams and decides where mail goes and
how:

- :class:`Client` sends a message to a :class:`SmartHost`, an
  :class:`LMTPServer` or an :class:`MXDomain`, reusing connections, and
  returns a :class:`SendResult`: a :class:`RecipientResult` per recipient
  (:class:`Status` delivered, transient or permanent, with the reply).
- :class:`MXResolver` finds mail exchangers with dnspython (RFC 5321 5.1,
  RFC 7505 null MX).
- :class:`TLSPolicy`, :class:`Credentials` and :class:`Timeouts` say how.
- :class:`Connection` is one session, for callers that want to drive it.
- Failures are :class:`ClientError` subclasses, each classified transient
  or permanent with an RFC 3463 status code.
"""

from __future__ import annotations

import contextlib

from ._body import BodySource as BodySource
from ._client import Client as Client
from ._connection import Connection as Connection
from ._destinations import Destination as Destination
from ._destinations import LMTPServer as LMTPServer
from ._destinations import MXDomain as MXDomain
from ._destinations import SmartHost as SmartHost
from ._envelope import Envelope as Envelope
from ._envelope import Recipient as Recipient
from ._errors import AuthError as AuthError
from ._errors import ClientError as ClientError
from ._errors import ConnectError as ConnectError
from ._errors import ConnectionLost as ConnectionLost
from ._errors import DNSError as DNSError
from ._errors import MessageRefused as MessageRefused
from ._errors import NoRouteError as NoRouteError
from ._errors import NoSuchDomain as NoSuchDomain
from ._errors import NullMXError as NullMXError
from ._errors import ProtocolError as ProtocolError
from ._errors import ReplyError as ReplyError
from ._errors import TimedOut as TimedOut
from ._errors import TLSError as TLSError
from ._mx import MXHost as MXHost
from ._mx import MXResolver as MXResolver
from ._mx import Route as Route
from ._mx import order_mx as order_mx
from ._policy import Credentials as Credentials
from ._policy import Timeouts as Timeouts
from ._policy import TLSMode as TLSMode
from ._policy import TLSPolicy as TLSPolicy
from ._policy import TLSPolicyResolver as TLSPolicyResolver
from ._results import RecipientResult as RecipientResult
from ._results import SendResult as SendResult
from ._results import Status as Status

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BodySource",
    "Client",
    "ClientError",
    "ConnectError",
    "Connection",
    "ConnectionLost",
    "Credentials",
    "DNSError",
    "Destination",
    "Envelope",
    "LMTPServer",
    "MXDomain",
    "MXHost",
    "MXResolver",
    "MessageRefused",
    "NoRouteError",
    "NoSuchDomain",
    "NullMXError",
    "ProtocolError",
    "Recipient",
    "RecipientResult",
    "ReplyError",
    "Route",
    "SendResult",
    "SmartHost",
    "Status",
    "TLSError",
    "TLSMode",
    "TLSPolicy",
    "TLSPolicyResolver",
    "TimedOut",
    "Timeouts",
    "order_mx",
]

# Public names say where users import them from (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("smtp_client._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj
