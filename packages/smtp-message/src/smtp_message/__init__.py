"""smtp_message: the SMTP protocol without I/O.

Bytes in, events out; replies in, bytes out.  Nothing here reads a socket,
knows an event loop or imports asyncio: the server and client packages (and
anything else) drive these objects over whatever transport they have.

- Values: :class:`Mailbox`, :class:`Reply`, the commands (:class:`MailFrom`,
  :class:`RcptTo`, ...), :class:`MailParams`, :class:`RcptParams`,
  :class:`Extensions`.
- Readers and writers: :class:`ReplyParser`, :class:`DataReader`,
  :class:`DotStuffer`, :func:`parse_command`.
- Sessions: :class:`ServerConnection` and :class:`ClientConnection`, state
  machines whose every transition is a row of one table.
"""

from __future__ import annotations

import contextlib

from . import _replies as replies
from ._address import AddressPolicy as AddressPolicy
from ._address import Mailbox as Mailbox
from ._address import parse_path as parse_path
from ._body import BareLineEndings as BareLineEndings
from ._body import DataReader as DataReader
from ._body import DotStuffer as DotStuffer
from ._body import LineEndingNormalizer as LineEndingNormalizer
from ._buffer import ReceiveBuffer as ReceiveBuffer
from ._client import ClientConnection as ClientConnection
from ._client import DataResponse as DataResponse
from ._client import Greeting as Greeting
from ._client import Response as Response
from ._commands import Auth as Auth
from ._commands import AuthResponse as AuthResponse
from ._commands import Bdat as Bdat
from ._commands import Command as Command
from ._commands import Data as Data
from ._commands import Ehlo as Ehlo
from ._commands import Expn as Expn
from ._commands import Helo as Helo
from ._commands import Help as Help
from ._commands import Lhlo as Lhlo
from ._commands import MailFrom as MailFrom
from ._commands import Noop as Noop
from ._commands import Quit as Quit
from ._commands import RcptTo as RcptTo
from ._commands import Rset as Rset
from ._commands import StartTls as StartTls
from ._commands import Vrfy as Vrfy
from ._commands import parse_auth_response as parse_auth_response
from ._commands import parse_command as parse_command
from ._errors import AddressError as AddressError
from ._errors import BadSequenceError as BadSequenceError
from ._errors import BareLineEndingError as BareLineEndingError
from ._errors import CommandSyntaxError as CommandSyntaxError
from ._errors import LineTooLongError as LineTooLongError
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import MessageRejectedError as MessageRejectedError
from ._errors import ParameterError as ParameterError
from ._errors import RemoteProtocolError as RemoteProtocolError
from ._errors import ReplySyntaxError as ReplySyntaxError
from ._errors import SMTPError as SMTPError
from ._events import NEED_DATA as NEED_DATA
from ._events import PAUSED as PAUSED
from ._events import BodyChunk as BodyChunk
from ._events import ConnectionClosed as ConnectionClosed
from ._events import EndOfChunk as EndOfChunk
from ._events import EndOfData as EndOfData
from ._events import Sentinel as Sentinel
from ._extensions import Extensions as Extensions
from ._params import BodyType as BodyType
from ._params import MailParams as MailParams
from ._params import Notify as Notify
from ._params import OriginalRecipient as OriginalRecipient
from ._params import RcptParams as RcptParams
from ._params import Ret as Ret
from ._params import xtext_decode as xtext_decode
from ._params import xtext_encode as xtext_encode
from ._reply import Reply as Reply
from ._reply import ReplyParser as ReplyParser
from ._server import ServerConnection as ServerConnection
from ._server import ServerSettings as ServerSettings
from ._server import Transaction as Transaction
from ._state import ClientState as ClientState
from ._state import ServerState as ServerState

__version__ = "0.1.0"

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AddressError",
    "AddressPolicy",
    "Auth",
    "AuthResponse",
    "BadSequenceError",
    "BareLineEndingError",
    "BareLineEndings",
    "Bdat",
    "BodyChunk",
    "BodyType",
    "ClientConnection",
    "ClientState",
    "Command",
    "CommandSyntaxError",
    "ConnectionClosed",
    "Data",
    "DataReader",
    "DataResponse",
    "DotStuffer",
    "Ehlo",
    "EndOfChunk",
    "EndOfData",
    "Expn",
    "Extensions",
    "Greeting",
    "Helo",
    "Help",
    "Lhlo",
    "LineEndingNormalizer",
    "LineTooLongError",
    "LocalProtocolError",
    "MailFrom",
    "MailParams",
    "Mailbox",
    "MessageRejectedError",
    "Noop",
    "Notify",
    "OriginalRecipient",
    "ParameterError",
    "Quit",
    "RcptParams",
    "RcptTo",
    "ReceiveBuffer",
    "RemoteProtocolError",
    "Reply",
    "ReplyParser",
    "ReplySyntaxError",
    "Response",
    "Ret",
    "Rset",
    "SMTPError",
    "Sentinel",
    "ServerConnection",
    "ServerSettings",
    "ServerState",
    "StartTls",
    "Transaction",
    "Vrfy",
    "parse_auth_response",
    "parse_command",
    "parse_path",
    "replies",
    "xtext_decode",
    "xtext_encode",
]

# Public names say where users import them from (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("smtp_message._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj
