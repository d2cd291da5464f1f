"""The queue's values."""

from __future__ import annotations

import pytest
from support import BUSY, OK, UNKNOWN

from smtp_message import (
    Mailbox,
    MailFrom,
    MailParams,
    Notify,
    RcptParams,
    RcptTo,
    Reply,
    Ret,
)
from smtp_queue import (
    Envelope,
    MessageInfo,
    MessageState,
    Outcome,
    Recipient,
    RecipientResult,
    RecipientState,
    RecipientStatus,
)


def test_envelope_from_server_commands() -> None:
    """RFC 5321 3.3: the envelope is the MAIL and RCPT commands, with their
    DSN parameters (RFC 3461 4)."""
    mail = MailFrom(Mailbox("a", "a.example"), MailParams(ret=Ret.HDRS, envid="X1"))
    rcpt = RcptTo(Mailbox("b", "b.example"), RcptParams(notify=frozenset({Notify.NEVER})))
    env = Envelope.from_commands(mail, [rcpt])
    assert env.sender == mail.reverse_path
    assert env.params.ret is Ret.HDRS
    assert env.recipients[0].notify == frozenset({Notify.NEVER})
    assert env.recipients[0].orcpt is None


def test_envelope_merges_duplicate_recipients() -> None:
    """RFC 5321 2.4: domains compare case-insensitively, local parts exactly;
    a mailbox named twice gets one copy."""
    env = Envelope(
        None,
        [
            Mailbox("Bob", "B.Example"),
            Recipient(Mailbox("Bob", "b.example"), RcptParams(notify={Notify.SUCCESS})),
            Mailbox("bob", "b.example"),
            Mailbox("POSTMASTER", None),
            Mailbox("postmaster", None),
        ],
    )
    assert [str(r.mailbox) for r in env.recipients] == [
        "Bob@B.Example",
        "bob@b.example",
        "POSTMASTER",
    ]
    assert env.recipients[0].notify is None
    assert env.recipient_index(Mailbox("Bob", "b.EXAMPLE")) == 0
    with pytest.raises(KeyError):
        env.recipient_index(Mailbox("carol", "b.example"))


def test_envelope_needs_a_recipient() -> None:
    """RFC 5321 3.3: a transaction has at least one recipient."""
    with pytest.raises(ValueError, match="at least one"):
        Envelope(None, [])


def test_result_outcome_must_match_reply_class() -> None:
    """RFC 5321 4.2.1: 2yz is success, 4yz transient, 5yz permanent failure."""
    assert RecipientResult.delivered(OK).outcome is Outcome.DELIVERED
    assert RecipientResult.transient(BUSY, "mx.example").host == "mx.example"
    # A client may decide a 5yz is worth retrying, or a 4yz is final.
    RecipientResult.transient(UNKNOWN)
    RecipientResult.permanent(BUSY)
    with pytest.raises(ValueError, match="cannot carry reply"):
        RecipientResult.delivered(UNKNOWN)
    with pytest.raises(ValueError, match="cannot carry reply"):
        RecipientResult.permanent(OK)
    with pytest.raises(ValueError, match="not a final reply"):
        RecipientResult.transient(Reply(354, None, "go on"))
    with pytest.raises(ValueError, match="host"):
        RecipientResult.transient(BUSY, "mx.example\r\nInjected: yes")


def test_state_progress() -> None:
    """A message is done when every recipient is delivered or failed."""
    state = MessageState.initial(3, 100.0)
    assert state.pending() == [0, 1, 2]
    assert state.next_attempt == 100.0
    assert not state.done
    done = MessageState(
        [
            RecipientState(RecipientStatus.DELIVERED),
            RecipientState(RecipientStatus.FAILED),
        ],
        next_attempt=0,
    )
    assert done.done
    assert done.pending() == []


def test_message_info_summary() -> None:
    """What ``smtp-mta queue list`` shows: last error is the latest failure."""
    env = Envelope(
        Mailbox("a", "a.example"),
        [Mailbox("b", "b.example"), Mailbox("c", "c.example")],
    )
    state = MessageState(
        [
            RecipientState(RecipientStatus.PENDING, 2, BUSY, 50.0),
            RecipientState(RecipientStatus.FAILED, 1, UNKNOWN, 40.0),
        ],
        next_attempt=200.0,
    )
    info = MessageInfo("x", env, state, 10.0, 123, leased=False)
    assert info.last_error == BUSY
    assert [str(r.mailbox) for r in info.pending] == ["b@b.example"]
    assert info.age(70.0) == 60.0
    assert info.arrival.timestamp() == 10.0
    assert info.next_attempt is not None
    assert info.next_attempt.timestamp() == 200.0
