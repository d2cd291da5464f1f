"""The retry schedule and the queue's settings."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

import attrs

from smtp_message import Mailbox

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "DEFAULT_RETRY_DELAYS",
    "MAX_QUEUE_LIFETIME",
    "QueueSettings",
    "RetrySchedule",
]

#: RFC 5321 4.5.4.1: "the give-up time generally needs to be at least 4-5
#: days"; Postfix's maximal_queue_lifetime is 5 days too.
MAX_QUEUE_LIFETIME = 5 * 24 * 3600.0

#: Seconds to wait after the 1st, 2nd, ... failed attempt; the last repeats.
#: RFC 5321 4.5.4.1 asks for "at least 30 minutes" but welcomes "more
#: sophisticated and variable strategies"; like Postfix (300 s doubling), the
#: first retries come after minutes, so a greylisting server or a brief outage
#: costs minutes, and the interval grows to hours for a host that stays down.
DEFAULT_RETRY_DELAYS = (300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)

#: Postfix's delay_warning_time is a common 4 hours when enabled.
DEFAULT_DELAY_WARNING = 4 * 3600.0

#: The largest message returned whole in a failure notification; a larger one
#: is returned as its headers (RFC 3461 4.3 lets the MTA choose when RET is
#: absent, and a 50 MB bounce helps nobody).  Postfix: bounce_size_limit.
DEFAULT_RETURN_LIMIT = 1024 * 1024


def _positive(_instance: object, attribute: Any, value: Any) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


def _to_delays(value: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(x) for x in value)


def _check_delays(_instance: object, _attribute: object, value: tuple[float, ...]) -> None:
    if not value or any(not d >= 0 for d in value):
        raise ValueError(f"retry delays must be a non-empty list of seconds: {value}")


def _check_jitter(_instance: object, _attribute: object, value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"jitter is a fraction in [0, 1): {value!r}")


@attrs.frozen
class RetrySchedule:
    """When to try again after a transient failure, and when to give up.

    After the n-th failed attempt the message waits ``delays[n - 1]`` seconds
    (the last entry repeats), spread by up to ``jitter`` of that either way so
    that mail queued during an outage does not all retry at once.  A message
    still undelivered ``max_age`` seconds after arrival gets one last attempt
    then and, if that fails too, is bounced.
    """

    delays: tuple[float, ...] = attrs.field(
        default=DEFAULT_RETRY_DELAYS,
        converter=_to_delays,
        validator=_check_delays,
    )
    max_age: float = attrs.field(default=MAX_QUEUE_LIFETIME, validator=_positive)
    jitter: float = attrs.field(default=0.1, validator=_check_jitter)

    @classmethod
    def exponential(
        cls,
        first: float = 300.0,
        factor: float = 2.0,
        maximum: float = 4 * 3600.0,
        max_age: float = MAX_QUEUE_LIFETIME,
        jitter: float = 0.1,
    ) -> RetrySchedule:
        """``first``, ``first * factor``, ... up to ``maximum`` (as Postfix)."""
        if not (first > 0 and factor >= 1 and maximum >= first):
            raise ValueError("need first > 0, factor >= 1 and maximum >= first")
        delays = [first]
        while delays[-1] * factor < maximum and factor > 1:
            delays.append(delays[-1] * factor)
        delays.append(maximum)
        return cls(tuple(delays), max_age, jitter)

    def delay(self, failures: int, spread: float = 0.5) -> float:
        """Seconds to wait after the ``failures``-th failed attempt.

        ``spread`` in [0, 1] picks a point in the jitter band (0.5 is none).
        """
        base = self.delays[min(max(failures, 1), len(self.delays)) - 1]
        return base * (1 + self.jitter * (2 * spread - 1))

    def next_attempt(
        self, *, now: float, arrival: float, failures: int, spread: float = 0.5
    ) -> float:
        """When to try again, never later than the expiry time."""
        return max(now, min(now + self.delay(failures, spread), self.expires(arrival)))

    def expires(self, arrival: float) -> float:
        """When a message that arrived at ``arrival`` is given up."""
        return arrival + self.max_age


def _default_hostname() -> str:
    return socket.gethostname() or "localhost"


def _check_hostname(_instance: object, _attribute: object, value: str) -> None:
    # It names the reporting MTA and MAILER-DAEMON's domain (RFC 3464 2.2.2).
    try:
        Mailbox("MAILER-DAEMON", value)
    except ValueError:
        raise ValueError(f"not a host name: {value!r}") from None
    if not value.isascii():
        raise ValueError(f"the host name must be ASCII (an A-label): {value!r}")


def _optional_positive(_instance: object, attribute: Any, value: Any) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be positive or None, not {value!r}")


@attrs.frozen
class QueueSettings:
    """Everything a :class:`~smtp_queue.Queue` can be told.  Times in seconds."""

    #: This MTA's name: the Reporting-MTA of notifications and the domain of
    #: their MAILER-DAEMON sender (RFC 3464 2.2.2).
    hostname: str = attrs.field(factory=_default_hostname, validator=_check_hostname)
    #: Retries and expiry.
    schedule: RetrySchedule = attrs.field(factory=RetrySchedule)
    #: Send a "delayed" notification to recipients that asked for one
    #: (``NOTIFY=DELAY``, RFC 3461 4.1) once a message has waited this long;
    #: ``None`` sends none.
    delay_warning_after: float | None = attrs.field(
        default=DEFAULT_DELAY_WARNING, validator=_optional_positive
    )
    #: Whether recipients without a NOTIFY parameter get delay notifications
    #: too (RFC 3461 4.1 leaves it to the MTA: "FAILURE" or "FAILURE,DELAY").
    delay_warning_by_default: bool = False
    #: Messages up to this size are returned whole in failure notifications
    #: unless RET=HDRS; larger ones are returned as headers only.
    return_limit: int = attrs.field(default=DEFAULT_RETURN_LIMIT, validator=_positive)
    #: Refuse (``MessageTooLargeError``) a body larger than this; ``None``: no
    #: limit here (the server enforces its SIZE).
    max_message_size: int | None = attrs.field(default=None, validator=_optional_positive)
    #: How long one delivery attempt may take before :meth:`Queue.serve`
    #: cancels it and the message goes back to the queue.  RFC 5321 4.5.3.2's
    #: timeouts add up to well under an hour for one message.
    lease_duration: float = attrs.field(default=3600.0, validator=_positive)
    #: How often a waiting worker looks for changes other processes made to
    #: the spool (an operator's ``retry``, ``release``, another enqueuer).
    poll_interval: float = attrs.field(default=1.0, validator=_positive)
    #: How often the whole spool is scanned again, in case a change was missed.
    rescan_interval: float = attrs.field(default=300.0, validator=_positive)
    #: Wait this long before trying again a message another process holds.
    busy_retry: float = attrs.field(default=30.0, validator=_positive)
