"""smtp_queue: a durable mail spool, the part of an MTA that must never lose mail.

- :class:`Queue`: :meth:`~Queue.enqueue` returns once the message is on disk
  for good; :meth:`~Queue.serve` hands due messages to N delivery workers
  under leases, records per-recipient results, retries on a schedule, expires,
  and bounces with RFC 3464 notifications; operations (list, show, retry,
  hold, release, delete, statistics) work from any process.
- :class:`FilesystemStore`: the default storage, one directory; the
  :class:`Store` protocol lets a shared store replace it.
- Values: :class:`Envelope`, :class:`Recipient`, :class:`RecipientResult`,
  :class:`MessageState`, :class:`MessageInfo`, built on ``smtp_message``'s
  :class:`~smtp_message.Mailbox`, :class:`~smtp_message.Reply` and DSN
  parameters.
"""

from __future__ import annotations

import contextlib

from ._delivery import Delivery as Delivery
from ._dsn import ReportEntry as ReportEntry
from ._dsn import build_report as build_report
from ._errors import CorruptMessageError as CorruptMessageError
from ._errors import LeaseLostError as LeaseLostError
from ._errors import MessageNotFoundError as MessageNotFoundError
from ._errors import MessageTooLargeError as MessageTooLargeError
from ._errors import QueueError as QueueError
from ._errors import SpoolError as SpoolError
from ._fs import FilesystemStore as FilesystemStore
from ._model import Envelope as Envelope
from ._model import Handoff as Handoff
from ._model import MessageInfo as MessageInfo
from ._model import MessageState as MessageState
from ._model import Outcome as Outcome
from ._model import QueueStatistics as QueueStatistics
from ._model import Recipient as Recipient
from ._model import RecipientResult as RecipientResult
from ._model import RecipientState as RecipientState
from ._model import RecipientStatus as RecipientStatus
from ._queue import Handler as Handler
from ._queue import Queue as Queue
from ._settings import QueueSettings as QueueSettings
from ._settings import RetrySchedule as RetrySchedule
from ._store import BodyStream as BodyStream
from ._store import Lease as Lease
from ._store import QuarantineEntry as QuarantineEntry
from ._store import ScanEntry as ScanEntry
from ._store import Store as Store
from ._store import StoredMessage as StoredMessage

__version__ = "0.1.0"

__all__ = [
    "BodyStream",
    "CorruptMessageError",
    "Delivery",
    "Envelope",
    "FilesystemStore",
    "Handler",
    "Handoff",
    "Lease",
    "LeaseLostError",
    "MessageInfo",
    "MessageNotFoundError",
    "MessageState",
    "MessageTooLargeError",
    "Outcome",
    "QuarantineEntry",
    "Queue",
    "QueueError",
    "QueueSettings",
    "QueueStatistics",
    "Recipient",
    "RecipientResult",
    "RecipientState",
    "RecipientStatus",
    "ReportEntry",
    "RetrySchedule",
    "ScanEntry",
    "SpoolError",
    "Store",
    "StoredMessage",
    "build_report",
]

# Public names say where users import them from (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("smtp_queue._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj
