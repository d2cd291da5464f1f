"""Hypothesis strategies for the queue's values."""

from __future__ import annotations

from hypothesis import strategies as st

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
from smtp_queue import (
    Envelope,
    MessageState,
    Recipient,
    RecipientState,
    RecipientStatus,
)

PRINTABLE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
NON_ASCII = st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF, categories=["L", "N"])
LOCAL_PART = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | NON_ASCII,
    min_size=1,
    max_size=20,
)
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
DOMAIN = st.one_of(
    st.lists(LABEL, min_size=1, max_size=4).map(".".join),
    st.tuples(st.integers(0, 255), st.integers(0, 255)).map(lambda t: f"[192.0.{t[0]}.{t[1]}]"),
)
KEYWORD = st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,10}", fullmatch=True)
VALUE = st.from_regex(r"[\x21-\x3c\x3e-\x7e]{1,12}", fullmatch=True)
TIME = st.floats(min_value=0, max_value=2**39, allow_nan=False, allow_infinity=False)

mailboxes = st.one_of(
    st.builds(Mailbox, LOCAL_PART, DOMAIN),
    st.just(Mailbox("Postmaster", None)),
)
# Extra parameters as MailParams/RcptParams accept them: each keyword once,
# and none of the keywords they type themselves.
_TYPED = {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH", "REQUIRETLS", "NOTIFY", "ORCPT"}
extras = st.lists(
    st.tuples(KEYWORD.filter(lambda k: k not in _TYPED), st.none() | VALUE),
    max_size=3,
    unique_by=lambda item: item[0],
).map(tuple)
NONEMPTY_PRINTABLE = PRINTABLE.filter(bool)

mail_params = st.builds(
    MailParams,
    size=st.none() | st.integers(0, 10**19),
    body=st.none() | st.sampled_from(BodyType),
    smtputf8=st.booleans(),
    ret=st.none() | st.sampled_from(Ret),
    envid=st.none() | NONEMPTY_PRINTABLE,
    auth=st.none() | st.just("<>") | NONEMPTY_PRINTABLE,
    requiretls=st.booleans(),
    extra=extras,
)

notifies = (
    st.none()
    | st.just(frozenset({Notify.NEVER}))
    | st.frozensets(st.sampled_from([Notify.SUCCESS, Notify.FAILURE, Notify.DELAY]), min_size=1)
)
orcpts = st.none() | st.builds(
    OriginalRecipient,
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}", fullmatch=True),
    PRINTABLE,
)
recipients = st.builds(
    Recipient,
    mailboxes,
    st.builds(RcptParams, notify=notifies, orcpt=orcpts, extra=extras),
)
envelopes = st.builds(
    Envelope,
    st.none() | mailboxes,
    st.lists(recipients, min_size=1, max_size=5),
    mail_params,
)


@st.composite
def replies(draw: st.DrawFn) -> Reply:
    code = draw(st.integers(2, 5)) * 100 + draw(st.integers(0, 5)) * 10 + draw(st.integers(0, 9))
    # RFC 3463 2: enhanced codes exist for classes 2, 4 and 5 only.
    enhanced = None
    if code // 100 != 3:
        enhanced = draw(
            st.none()
            | st.tuples(st.integers(0, 999), st.integers(0, 999)).map(
                lambda t: f"{code // 100}.{t[0]}.{t[1]}"
            )
        )
    lines = draw(
        st.lists(
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | NON_ASCII),
            min_size=1,
            max_size=3,
        )
    )
    return Reply(code, enhanced, lines)


recipient_states = st.builds(
    RecipientState,
    status=st.sampled_from(RecipientStatus),
    attempts=st.integers(0, 10_000),
    last_reply=st.none() | replies(),
    last_attempt=st.none() | TIME,
    host=st.none() | st.from_regex(r"[\x21-\x7e]{1,20}", fullmatch=True),
    notified=st.frozensets(st.sampled_from([Notify.SUCCESS, Notify.FAILURE, Notify.DELAY])),
)
message_states = st.builds(
    MessageState,
    st.lists(recipient_states, min_size=1, max_size=5),
    next_attempt=TIME,
    attempts=st.integers(0, 10_000),
    held=st.booleans(),
)
