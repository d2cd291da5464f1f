"""What one delivery attempt does to a message: pure functions, no I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from smtp_message import Notify, Reply

from ._dsn import ReportEntry
from ._model import (
    Handoff,
    MessageState,
    Outcome,
    Recipient,
    RecipientResult,
    RecipientStatus,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._model import Envelope, RecipientState
    from ._settings import QueueSettings

__all__ = ["NO_RESULT", "Notice", "apply_results", "wants"]

#: The result recorded for a pending recipient the worker said nothing about.
NO_RESULT = Reply(451, "4.3.0", "No delivery result was reported for this recipient")
#: RFC 3463 3.5 X.4.7 "Delivery time expired": the status of a recipient that
#: was still failing when the message reached the end of its queue lifetime.
EXPIRED_STATUS = "4.4.7"


@attrs.frozen
class Notice:
    """A notification to send to the reverse-path about some recipients."""

    kind: Notify
    entries: tuple[ReportEntry, ...]


def wants(recipient: Recipient, kind: Notify, settings: QueueSettings) -> bool:
    """Whether ``recipient`` asked for a notification of ``kind`` (RFC 3461 4.1).

    Without a NOTIFY parameter: failures yes, successes no, delays as
    configured ("FAILURE" or "FAILURE,DELAY" at the MTA's discretion).
    """
    notify = recipient.notify
    if notify is None:
        if kind is Notify.FAILURE:
            return True
        if kind is Notify.DELAY:
            return settings.delay_warning_by_default
        return False
    return kind in notify


def _delay_notice_due(
    envelope: Envelope,
    recipients: list[RecipientState],
    arrival: float,
    settings: QueueSettings,
) -> float | None:
    """When a pending recipient's delay notice is due, if one is still owed."""
    if settings.delay_warning_after is None or envelope.sender is None:
        return None
    for recipient, state in zip(envelope.recipients, recipients, strict=True):
        if (
            not state.is_final
            and Notify.DELAY not in state.notified
            and wants(recipient, Notify.DELAY, settings)
        ):
            return arrival + settings.delay_warning_after
    return None


def _status(reply: Reply) -> str:
    # RFC 3464 2.3.4: the RFC 3463 code; the server's own if it gave one.
    return reply.enhanced or f"{reply.code // 100}.0.0"


def apply_results(
    *,
    envelope: Envelope,
    state: MessageState,
    results: Mapping[int, RecipientResult],
    now: float,
    arrival: float,
    settings: QueueSettings,
    spread: float = 0.5,
) -> tuple[MessageState, list[Notice]]:
    """The state after an attempt, and the notifications it causes.

    ``results`` maps recipient indices to results; a pending recipient without
    one counts as a transient failure (:data:`NO_RESULT`).  A transient
    failure at or after the expiry time is final.  Nothing is ever reported
    about a message with a null reverse-path (RFC 3461 6.1: never bounce a
    bounce).
    """
    schedule = settings.schedule
    expires = schedule.expires(arrival)
    recipients = list(state.recipients)
    notices: dict[Notify, list[ReportEntry]] = {
        Notify.FAILURE: [],
        Notify.SUCCESS: [],
        Notify.DELAY: [],
    }
    for i in state.pending():
        result = results.get(i) or RecipientResult(Outcome.TRANSIENT, NO_RESULT)
        recipient = envelope.recipients[i]
        old = recipients[i]
        reply = result.reply
        new = attrs.evolve(
            old,
            attempts=old.attempts + 1,
            last_reply=reply,
            last_attempt=now,
            host=result.host,
        )
        entry = None
        kind = None
        if result.outcome is Outcome.DELIVERED:
            new = attrs.evolve(new, status=RecipientStatus.DELIVERED)
            # RFC 3461 5.2.1: a DSN-capable next hop reports from now on.
            if result.handoff is not Handoff.DSN_RELAYED:
                kind = Notify.SUCCESS
                action = "delivered" if result.handoff is Handoff.DELIVERED else "relayed"
                entry = ReportEntry(recipient, action, _status(reply), reply, result.host, now)
        elif result.outcome is Outcome.PERMANENT:
            new = attrs.evolve(new, status=RecipientStatus.FAILED)
            kind = Notify.FAILURE
            entry = ReportEntry(recipient, "failed", _status(reply), reply, result.host, now)
        elif now >= expires:
            new = attrs.evolve(new, status=RecipientStatus.FAILED)
            kind = Notify.FAILURE
            entry = ReportEntry(recipient, "failed", EXPIRED_STATUS, reply, result.host, now)
        elif (
            settings.delay_warning_after is not None
            and now - arrival >= settings.delay_warning_after
            and Notify.DELAY not in old.notified
        ):
            kind = Notify.DELAY
            entry = ReportEntry(recipient, "delayed", _status(reply), reply, result.host, now)
        if (
            kind is not None
            and entry is not None
            and envelope.sender is not None
            and wants(recipient, kind, settings)
        ):
            notices[kind].append(entry)
            new = attrs.evolve(new, notified=old.notified | {kind})
        recipients[i] = new
    attempts = state.attempts + 1
    new_state = MessageState(
        recipients,
        next_attempt=state.next_attempt,
        attempts=attempts,
        held=state.held,
    )
    if not new_state.done:
        next_attempt = schedule.next_attempt(
            now=now, arrival=arrival, failures=attempts, spread=spread
        )
        notice_due = _delay_notice_due(envelope, recipients, arrival, settings)
        if notice_due is not None:
            # Wake the message when its delay notice is due, not at the next
            # retry (hours later with the default schedule): that attempt
            # sends the notice if it fails too.
            next_attempt = min(next_attempt, max(now, notice_due))
        new_state = attrs.evolve(new_state, next_attempt=next_attempt)
    return new_state, [Notice(kind, tuple(entries)) for kind, entries in notices.items() if entries]
