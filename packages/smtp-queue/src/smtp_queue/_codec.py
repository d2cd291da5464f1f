"""JSON forms of envelopes and states, and their strict readers.

What is read back comes from a file anybody with access to the spool could
have written, so the readers trust nothing: every field is checked for type
and rebuilt through the validating constructors, and any problem is one
:class:`CodecError`.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, TypeVar

from smtp_message import (
    BodyType,
    Mailbox,
    MailParams,
    Notify,
    OriginalRecipient,
    RcptParams,
    Reply,
    Ret,
)

from ._model import Envelope, MessageState, Recipient, RecipientState, RecipientStatus

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FORMAT_VERSION",
    "CodecError",
    "decode_header",
    "decode_state",
    "encode_header",
    "encode_state",
]

#: The version written into every header and state; a reader refuses others.
FORMAT_VERSION = 1

_T = TypeVar("_T")


class CodecError(ValueError):
    """Stored metadata that does not decode to a valid value."""


def _dumps(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def _reject_constant(name: str) -> object:
    raise CodecError(f"{name} is not a number here")


def _loads(data: bytes) -> object:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except CodecError:
        raise
    except (ValueError, RecursionError) as exc:
        # ValueError: not UTF-8 or not JSON, and also an integer of more
        # digits than Python converts (sys.get_int_max_str_digits()).
        raise CodecError(f"not JSON: {exc}") from None


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in obj:
        raise CodecError(f"missing field {key!r}")
    return _check(obj[key], kind, key)


def _opt(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = obj.get(key, default)
    if value is None or value is default:
        return value
    return _check(value, kind, key)


def _check(value: object, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int in Python; JSON keeps them apart and so do we.
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise CodecError(f"{what}: expected {kinds}, got a boolean")
    if not isinstance(value, kinds):
        raise CodecError(f"{what}: expected {kinds}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"{what}: not a finite number")
    return value


def _time(value: object, what: str) -> float:
    number = _check(value, (int, float), what)
    # Compared before float(), which raises OverflowError for a huge int.
    if not 0 <= number < 2**40:
        raise CodecError(f"{what}: time out of range")
    return float(number)


def _count(value: object, what: str) -> int:
    number: int = _check(value, int, what)
    if not 0 <= number < 2**31:
        raise CodecError(f"{what}: count out of range")
    return number


def _build(what: str, make: Callable[[], _T]) -> _T:
    try:
        return make()
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"{what}: {exc}") from None


# -- Mailboxes and parameters -------------------------------------------------


def _mailbox_out(mailbox: Mailbox) -> list[str | None]:
    return [mailbox.local_part, mailbox.domain]


def _mailbox_in(value: object) -> Mailbox:
    pair = _check(value, list, "mailbox")
    if len(pair) != 2:
        raise CodecError("mailbox: expected [local part, domain]")
    local = _check(pair[0], str, "local part")
    domain = None if pair[1] is None else _check(pair[1], str, "domain")
    return _build("mailbox", lambda: Mailbox(local, domain))


def _extra_out(extra: tuple[tuple[str, str | None], ...]) -> list[list[str | None]]:
    return [[k, v] for k, v in extra]


def _extra_in(value: object) -> tuple[tuple[str, str | None], ...]:
    out = []
    for item in _check(value, list, "extra"):
        pair = _check(item, list, "extra parameter")
        if len(pair) != 2:
            raise CodecError("extra parameter: expected [keyword, value]")
        keyword = _check(pair[0], str, "keyword")
        val = None if pair[1] is None else _check(pair[1], str, "value")
        out.append((keyword, val))
    return tuple(out)


def _mail_params_out(params: MailParams) -> dict[str, object]:
    out: dict[str, object] = {}
    if params.size is not None:
        out["size"] = params.size
    if params.body is not None:
        out["body"] = params.body.value
    if params.smtputf8:
        out["smtputf8"] = True
    if params.ret is not None:
        out["ret"] = params.ret.value
    if params.envid is not None:
        out["envid"] = params.envid
    if params.auth is not None:
        out["auth"] = params.auth
    if params.requiretls:
        out["requiretls"] = True
    if params.extra:
        out["extra"] = _extra_out(params.extra)
    return out


def _enum_in(cls: Callable[[str], _T], value: object, what: str) -> _T:
    return _build(what, lambda: cls(_check(value, str, what)))


def _mail_params_in(value: object) -> MailParams:
    obj = _check(value, dict, "params")
    size = _opt(obj, "size", int, None)
    body = obj.get("body")
    ret = obj.get("ret")
    return _build(
        "MAIL parameters",
        lambda: MailParams(
            size=size,
            body=None if body is None else _enum_in(BodyType, body, "body"),
            smtputf8=_opt(obj, "smtputf8", bool, False),
            ret=None if ret is None else _enum_in(Ret, ret, "ret"),
            envid=_opt(obj, "envid", str, None),
            auth=_opt(obj, "auth", str, None),
            requiretls=_opt(obj, "requiretls", bool, False),
            extra=_extra_in(obj.get("extra", [])),
        ),
    )


_NOTIFY_ORDER = [Notify.NEVER, Notify.SUCCESS, Notify.FAILURE, Notify.DELAY]


def _notify_out(notify: frozenset[Notify]) -> list[str]:
    return [n.value for n in _NOTIFY_ORDER if n in notify]


def _notify_in(value: object) -> frozenset[Notify]:
    return frozenset(_enum_in(Notify, v, "notify") for v in _check(value, list, "notify"))


def _recipient_out(recipient: Recipient) -> dict[str, object]:
    out: dict[str, object] = {"to": _mailbox_out(recipient.mailbox)}
    params = recipient.params
    if params.notify is not None:
        out["notify"] = _notify_out(params.notify)
    if params.orcpt is not None:
        out["orcpt"] = [params.orcpt.addr_type, params.orcpt.address]
    if params.extra:
        out["extra"] = _extra_out(params.extra)
    return out


def _recipient_in(value: object) -> Recipient:
    obj = _check(value, dict, "recipient")
    mailbox = _mailbox_in(_field(obj, "to", list))
    notify = None if obj.get("notify") is None else _notify_in(obj["notify"])
    orcpt = None
    if obj.get("orcpt") is not None:
        pair = _check(obj["orcpt"], list, "orcpt")
        if len(pair) != 2:
            raise CodecError("orcpt: expected [type, address]")
        addr_type = _check(pair[0], str, "orcpt type")
        address = _check(pair[1], str, "orcpt address")
        orcpt = _build("orcpt", lambda: OriginalRecipient(addr_type, address))
    extra = _extra_in(obj.get("extra", []))
    params = _build("RCPT parameters", lambda: RcptParams(notify=notify, orcpt=orcpt, extra=extra))
    return Recipient(mailbox, params)


def _envelope_out(envelope: Envelope) -> dict[str, object]:
    return {
        "from": None if envelope.sender is None else _mailbox_out(envelope.sender),
        "params": _mail_params_out(envelope.params),
        "rcpts": [_recipient_out(r) for r in envelope.recipients],
    }


def _envelope_in(value: object) -> Envelope:
    obj = _check(value, dict, "envelope")
    if "from" not in obj:
        raise CodecError("missing field 'from'")
    sender = None if obj["from"] is None else _mailbox_in(obj["from"])
    recipients = [_recipient_in(r) for r in _field(obj, "rcpts", list)]
    params = _mail_params_in(obj.get("params", {}))
    envelope = _build("envelope", lambda: Envelope(sender, recipients, params))
    if len(envelope.recipients) != len(recipients):
        # Duplicates were merged on the way in; a file that has them was not
        # written by this package.
        raise CodecError("envelope: duplicate recipients")
    return envelope


# -- Headers and states ---------------------------------------------------------


def _version(obj: dict[str, Any]) -> None:
    if obj.get("v") != FORMAT_VERSION:
        raise CodecError(f"unknown format version {obj.get('v')!r}")


def encode_header(message_id: str, arrival: float, envelope: Envelope) -> bytes:
    """The immutable metadata written before a message's body."""
    return _dumps(
        {
            "v": FORMAT_VERSION,
            "id": message_id,
            "arrival": arrival,
            "envelope": _envelope_out(envelope),
        }
    )


def decode_header(data: bytes) -> tuple[str, float, Envelope]:
    """Read back :func:`encode_header`'s output: (id, arrival, envelope)."""
    obj = _check(_loads(data), dict, "header")
    _version(obj)
    message_id = _field(obj, "id", str)
    arrival = _time(_field(obj, "arrival", (int, float)), "arrival")
    return message_id, arrival, _envelope_in(_field(obj, "envelope", dict))


def _reply_out(reply: Reply) -> list[object]:
    return [reply.code, reply.enhanced, list(reply.lines)]


def _reply_in(value: object) -> Reply:
    triple = _check(value, list, "reply")
    if len(triple) != 3:
        raise CodecError("reply: expected [code, enhanced, lines]")
    code = _check(triple[0], int, "reply code")
    enhanced = None if triple[1] is None else _check(triple[1], str, "enhanced")
    lines = [_check(line, str, "reply line") for line in _check(triple[2], list, "")]
    return _build("reply", lambda: Reply(code, enhanced, lines))


def _rstate_out(state: RecipientState) -> dict[str, object]:
    out: dict[str, object] = {"s": state.status.value, "n": state.attempts}
    if state.last_reply is not None:
        out["r"] = _reply_out(state.last_reply)
    if state.last_attempt is not None:
        out["t"] = state.last_attempt
    if state.host is not None:
        out["h"] = state.host
    if state.notified:
        out["dsn"] = _notify_out(state.notified)
    return out


def _rstate_in(value: object) -> RecipientState:
    obj = _check(value, dict, "recipient state")
    status = _enum_in(RecipientStatus, _field(obj, "s", str), "status")
    attempts = _count(_field(obj, "n", int), "attempts")
    reply = None if obj.get("r") is None else _reply_in(obj["r"])
    last = None if obj.get("t") is None else _time(obj["t"], "last attempt")
    host = _opt(obj, "h", str, None)
    notified = _notify_in(obj.get("dsn", []))
    if Notify.NEVER in notified:
        raise CodecError("NEVER is not a notification")
    return _build(
        "recipient state",
        lambda: RecipientState(status, attempts, reply, last, host, notified),
    )


def encode_state(state: MessageState) -> bytes:
    """The mutable metadata of a message."""
    return _dumps(
        {
            "v": FORMAT_VERSION,
            "next": state.next_attempt,
            "attempts": state.attempts,
            "held": state.held,
            "rcpts": [_rstate_out(r) for r in state.recipients],
        }
    )


def decode_state(data: bytes, recipients: int) -> MessageState:
    """Read back :func:`encode_state`'s output for a message of ``recipients``."""
    obj = _check(_loads(data), dict, "state")
    _version(obj)
    states = [_rstate_in(r) for r in _field(obj, "rcpts", list)]
    if len(states) != recipients:
        raise CodecError(f"state has {len(states)} recipients, envelope {recipients}")
    return MessageState(
        states,
        next_attempt=_time(_field(obj, "next", (int, float)), "next attempt"),
        attempts=_count(_field(obj, "attempts", int), "attempts"),
        held=_field(obj, "held", bool),
    )
