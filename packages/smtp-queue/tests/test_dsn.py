"""Delivery status notifications, parsed back with the stdlib and checked
field by field (RFC 3464, RFC 3461, RFC 6522)."""

from __future__ import annotations

import email.message
import email.utils
from typing import TYPE_CHECKING

import attrs
import pytest
from support import (
    BUSY,
    OK,
    SETTINGS,
    START,
    UNKNOWN,
    FakeClock,
    delivered,
    envelope,
    make_queue,
    message,
    parse,
    permanent,
    read_body,
    recipient,
    results,
    transient,
)

from smtp_message import (
    BodyType,
    Mailbox,
    MailParams,
    Notify,
    OriginalRecipient,
    Reply,
    Ret,
)
from smtp_queue import (
    Envelope,
    Handoff,
    Queue,
    Recipient,
    RecipientResult,
    ReportEntry,
    build_report,
)

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.anyio


async def next_report(queue: Queue) -> tuple[Envelope, bytes]:
    """Take the notification the queue enqueued, and deliver it away."""
    delivery = await queue.next_delivery()
    content = await read_body(delivery)
    env = delivery.envelope
    await delivery.record({r.mailbox: RecipientResult.delivered(OK) for r in delivery.recipients})
    return env, content


def parts(report: email.message.EmailMessage) -> list[email.message.EmailMessage]:
    out = list(report.iter_parts())
    assert all(isinstance(p, email.message.EmailMessage) for p in out)
    return out  # type: ignore[return-value]


def status_blocks(part: email.message.Message) -> list[dict[str, str]]:
    """RFC 3464 2.1: the delivery-status body is groups of fields."""
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    out = []
    for block in blocks:
        assert isinstance(block, email.message.Message)
        out.append({k: str(v) for k, v in block.items()})
    return out


async def test_failure_report_fields(spool: Path, clock: FakeClock) -> None:
    """RFC 3464 2.2 and 2.3: every required field, and the optional ones we know."""
    env = envelope(
        "alice@a.example",
        recipient(
            "bob@b.example",
            orcpt=OriginalRecipient("rfc822", "bob@old.example"),
        ),
        "carol@c.example",
        params=MailParams(envid="QQ314159", ret=Ret.FULL),
    )
    content = message("lost")
    async with make_queue(spool, clock) as queue:
        await queue.enqueue(env, content)
        clock.advance(5)
        delivery = await queue.next_delivery()
        await delivery.record(
            results(
                [
                    ("bob@b.example", permanent("mx.b.example")),
                    ("carol@c.example", delivered()),
                ]
            )
        )
        report_env, report_bytes = await next_report(queue)

    # RFC 3461 6.1: a null reverse-path, to the original sender.
    assert report_env.sender is None
    assert [r.mailbox for r in report_env.recipients] == [Mailbox("alice", "a.example")]
    report = parse(report_bytes)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"  # RFC 6522 3
    assert report["To"].addresses[0].addr_spec == "alice@a.example"
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@mx.example>"
    assert report["Auto-Submitted"] == "auto-replied"  # RFC 3834 5
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    date = email.utils.parsedate_to_datetime(report["Date"])
    assert date.timestamp() == START + 5
    human, machine, original = parts(report)
    assert human.get_content_type() == "text/plain"
    assert "<bob@b.example>: failed" in human.get_content()
    assert "It is attached below." in human.get_content()
    assert "carol" not in human.get_content()
    assert machine.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status_blocks(machine)
    assert per_message == {
        "Original-Envelope-Id": "QQ314159",
        "Reporting-MTA": "dns; mx.example",
        "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000",
    }
    assert per_recipient == {
        "Original-Recipient": "rfc822; bob@old.example",
        "Final-Recipient": "rfc822; bob@b.example",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.b.example",
        "Diagnostic-Code": "smtp; 550 5.1.1 No such user here",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 22:13:25 +0000",
    }
    # RET=FULL: the whole message, unchanged (RFC 3461 4.3).
    assert original.get_content_type() == "message/rfc822"
    returned = original.get_payload(0)
    assert isinstance(returned, email.message.Message)
    assert returned["Subject"] == "lost"
    assert content in report_bytes  # byte for byte


async def test_ret_hdrs_returns_headers_only(spool: Path) -> None:
    """RFC 3461 4.3: RET=HDRS returns only the header (text/rfc822-headers)."""
    env = envelope("alice@a.example", "bob@b.example", params=MailParams(ret=Ret.HDRS))
    async with make_queue(spool) as queue:
        await queue.enqueue(env, message("secret", "the body is private\r\n"))
        delivery = await queue.next_delivery()
        await delivery.record(results([("bob@b.example", permanent())]))
        _, report_bytes = await next_report(queue)
    assert b"the body is private" not in report_bytes
    human, _, original = parts(parse(report_bytes))
    assert original.get_content_type() == "text/rfc822-headers"
    # RFC 3464 2.1: the text says what the third part is.
    text = human.get_content()
    assert "header" in text
    assert "It is attached below" not in text
    text = original.get_payload()
    assert isinstance(text, str)
    assert "Subject: secret" in text


async def test_large_message_without_ret_returns_headers(spool: Path) -> None:
    """RFC 3461 4.3: without RET the MTA chooses; past return_limit, headers."""
    settings = attrs.evolve(SETTINGS, return_limit=1000)
    async with make_queue(spool, settings=settings) as queue:
        await queue.enqueue(envelope(), message("big", "z" * 5000 + "\r\n"))
        await queue.enqueue(envelope(), message("small", "tiny\r\n"))
        kinds = {}
        for _ in range(4):
            delivery = await queue.next_delivery()
            if delivery.envelope.sender is not None:
                await delivery.record(results([("bob@b.example", permanent())]))
                continue
            report_bytes = await read_body(delivery)
            await delivery.record(results([("alice@a.example", delivered())]))
            original = parts(parse(report_bytes))[2]
            subject = "big" if b"Subject: big" in report_bytes else "small"
            kinds[subject] = original.get_content_type()
            assert b"z" * 5000 not in report_bytes
    assert kinds == {"big": "text/rfc822-headers", "small": "message/rfc822"}


async def test_notify_never_sends_nothing(spool: Path) -> None:
    """RFC 3461 4.1: NOTIFY=NEVER: no notification under any condition."""
    env = envelope("alice@a.example", recipient("bob@b.example", notify={Notify.NEVER}))
    async with make_queue(spool) as queue:
        await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        await delivery.record(results([("bob@b.example", permanent())]))
        assert (await queue.statistics()).messages == 0


async def test_notify_success_only_sends_no_failure_report(spool: Path) -> None:
    """RFC 3461 4.1: NOTIFY=SUCCESS alone asks for a report on success only;
    a permanent failure of that recipient produces no notification."""
    env = envelope("alice@a.example", recipient("bob@b.example", notify={Notify.SUCCESS}))
    async with make_queue(spool) as queue:
        await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        assert await delivery.record(results([("bob@b.example", permanent())])) is None
        assert (await queue.statistics()).messages == 0
        assert await queue.try_next_delivery() is None


async def test_notify_success_reports_delivery(spool: Path) -> None:
    """RFC 3461 5.2.2 / 5.2.3: SUCCESS gets "relayed" (non-DSN next hop) or
    "delivered" (final delivery); a DSN-capable next hop reports itself (5.2.1)."""
    env = envelope(
        "alice@a.example",
        recipient("bob@b.example", notify={Notify.SUCCESS}),
        recipient("carol@c.example", notify={Notify.SUCCESS, Notify.FAILURE}),
        recipient("dan@d.example", notify={Notify.SUCCESS}),
        recipient("erin@e.example"),
    )
    async with make_queue(spool) as queue:
        await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        await delivery.record(
            {
                Mailbox("bob", "b.example"): RecipientResult.delivered(OK, "mx.b.example"),
                Mailbox("carol", "c.example"): RecipientResult.delivered(
                    OK, "lmtp.c.example", Handoff.DELIVERED
                ),
                Mailbox("dan", "d.example"): RecipientResult.delivered(
                    OK, "mx.d.example", Handoff.DSN_RELAYED
                ),
                # No NOTIFY: success is not reported (RFC 3461 4.1 default).
                Mailbox("erin", "e.example"): RecipientResult.delivered(OK, "mx.e.example"),
            }
        )
        _, report_bytes = await next_report(queue)
        assert (await queue.statistics()).messages == 0
    report = parse(report_bytes)
    assert report["Subject"] == "Successful Mail Delivery Report"
    _, machine, original = parts(report)
    blocks = status_blocks(machine)[1:]
    assert [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks] == [
        ("rfc822; bob@b.example", "relayed", "2.0.0"),
        ("rfc822; carol@c.example", "delivered", "2.0.0"),
    ]
    # Not a failure: the content is not returned whole.
    assert original.get_content_type() == "text/rfc822-headers"


async def test_delay_notification_once_after_threshold(spool: Path, clock: FakeClock) -> None:
    """RFC 3461 4.1 / 5.2.5: NOTIFY=DELAY gets one "delayed" report, with
    Will-Retry-Until (RFC 3464 2.3.9); recipients without NOTIFY get none."""
    env = envelope(
        "alice@a.example",
        recipient("bob@b.example", notify={Notify.DELAY, Notify.FAILURE}),
        "carol@c.example",
    )
    async with make_queue(spool, clock) as queue:
        original_id = await queue.enqueue(env, message())
        for _ in range(8):
            delivery = await queue.next_delivery()
            if delivery.id != original_id:
                break
            state = await delivery.record(
                results([("bob@b.example", transient()), ("carol@c.example", transient())])
            )
            assert state is not None
            clock.now = state.next_attempt
        else:
            pytest.fail("no delay notification")
        # Attempts at 0, 60, 660, 1260, then at 1800, when the notice is due.
        assert delivery.envelope.sender is None
        report = parse(await read_body(delivery))
        await delivery.record({Mailbox("alice", "a.example"): RecipientResult.delivered(OK)})
        assert report["Subject"] == "Delayed Mail (still being retried)"
        _, machine, _ = parts(report)
        (block,) = status_blocks(machine)[1:]
        assert block["Final-Recipient"] == "rfc822; bob@b.example"
        assert block["Action"] == "delayed"
        assert block["Status"] == "4.7.1"
        assert block["Will-Retry-Until"] == "Tue, 14 Nov 2023 23:13:20 +0000"
        info = await queue.show(original_id)
        assert Notify.DELAY in info.state.recipients[0].notified
        # Later failures do not repeat it.
        while True:
            delivery = await queue.next_delivery()
            assert delivery.id == original_id, "a second delay notification"
            state = await delivery.record(
                results([("bob@b.example", transient()), ("carol@c.example", transient())])
            )
            if state is None:
                break
            clock.now = state.next_attempt
        # Expired now: one failure report for both (carol's NOTIFY is absent,
        # which means FAILURE).
        _, report_bytes = await next_report(queue)
        blocks = status_blocks(parts(parse(report_bytes))[1])[1:]
        assert [(b["Final-Recipient"], b["Action"], b["Status"]) for b in blocks] == [
            ("rfc822; bob@b.example", "failed", "4.4.7"),
            ("rfc822; carol@c.example", "failed", "4.4.7"),
        ]
        assert blocks[0]["Diagnostic-Code"] == "smtp; 451 4.7.1 Greylisted, try again later"


async def test_delay_notice_is_sent_when_due_not_at_the_next_retry(
    spool: Path, clock: FakeClock
) -> None:
    """RFC 3461 4.1 NOTIFY=DELAY and RFC 3464 2.3.3 "delayed": the notice is
    due once the message has waited ``delay_warning_after``; the scheduler
    wakes the message then (an attempt that still fails sends it), instead of
    waiting for the next retry on the schedule, which for the default one
    would send a 4-hour notice at about 7.8 hours."""
    settings = attrs.evolve(SETTINGS, delay_warning_after=100.0)  # retries at 60, 660
    env = envelope(
        "alice@a.example",
        recipient("bob@b.example", notify={Notify.DELAY, Notify.FAILURE}),
    )
    async with make_queue(spool, clock, settings) as queue:
        original = await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        state = await delivery.record(results([("bob@b.example", transient())]))
        assert state is not None
        assert state.next_attempt == START + 60.0
        clock.now = state.next_attempt
        delivery = await queue.next_delivery()
        state = await delivery.record(results([("bob@b.example", transient())]))
        assert state is not None
        assert state.next_attempt == START + 100.0  # the notice's time, not 660
        clock.now = state.next_attempt
        delivery = await queue.next_delivery()
        assert delivery.id == original
        state = await delivery.record(results([("bob@b.example", transient())]))
        assert state is not None
        # Sent: back on the retry schedule (third failure: the last delay).
        assert state.next_attempt == START + 100.0 + 600.0
        env, report_bytes = await next_report(queue)
        assert env.sender is None
        blocks = status_blocks(parts(parse(report_bytes))[1])
        assert blocks[1]["Action"] == "delayed"
        assert email.utils.parsedate_to_datetime(parse(report_bytes)["Date"]).timestamp() == (
            START + 100.0
        )


async def test_delay_notice_time_does_not_move_retries_without_notify_delay(
    spool: Path, clock: FakeClock
) -> None:
    """RFC 3461 4.1: a recipient that did not ask for delay notices (and no
    delay_warning_by_default) keeps the plain retry schedule."""
    settings = attrs.evolve(SETTINGS, delay_warning_after=100.0)
    async with make_queue(spool, clock, settings) as queue:
        await queue.enqueue(envelope(), message())
        for expected in (60.0, 660.0):
            delivery = await queue.next_delivery()
            state = await delivery.record(results([("bob@b.example", transient())]))
            assert state is not None
            assert state.next_attempt == START + expected
            clock.now = state.next_attempt


async def test_delay_warning_by_default_setting(spool: Path, clock: FakeClock) -> None:
    """RFC 3461 4.1: without NOTIFY the MTA may act as if FAILURE,DELAY."""
    settings = attrs.evolve(SETTINGS, delay_warning_by_default=True, delay_warning_after=30.0)
    async with make_queue(spool, clock, settings) as queue:
        await queue.enqueue(envelope(), message())
        delivery = await queue.next_delivery()
        clock.advance(31)
        await delivery.record(results([("bob@b.example", transient())]))
        env, report_bytes = await next_report(queue)
    assert env.sender is None
    assert status_blocks(parts(parse(report_bytes))[1])[1]["Action"] == "delayed"


async def test_never_bounce_a_bounce(spool: Path, clock: FakeClock) -> None:
    """RFC 5321 4.5.5 / RFC 3461 6.1: no report about a null-sender message,
    whether it fails, expires, is delayed or is delivered."""
    settings = attrs.evolve(SETTINGS, delay_warning_by_default=True, delay_warning_after=1.0)
    env = envelope(
        None,
        recipient("bob@b.example", notify={Notify.SUCCESS, Notify.FAILURE, Notify.DELAY}),
        "carol@c.example",
    )
    async with make_queue(spool, clock, settings) as queue:
        await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        clock.advance(10)
        await delivery.record(
            results([("bob@b.example", delivered()), ("carol@c.example", transient())])
        )
        clock.advance(3600)
        delivery = await queue.next_delivery()
        assert await delivery.record(results([("carol@c.example", permanent())])) is None
        assert (await queue.statistics()).messages == 0


async def test_one_report_per_kind_for_many_recipients(spool: Path) -> None:
    """RFC 3464 2.1: one report may describe several recipients."""
    env = envelope("alice@a.example", "b1@b.example", "b2@b.example", "b3@b.example")
    async with make_queue(spool) as queue:
        await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        await delivery.record(
            results(
                [
                    ("b1@b.example", permanent()),
                    ("b2@b.example", delivered()),
                    ("b3@b.example", permanent()),
                ]
            )
        )
        _, report_bytes = await next_report(queue)
        assert (await queue.statistics()).messages == 0
    blocks = status_blocks(parts(parse(report_bytes))[1])[1:]
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; b1@b.example",
        "rfc822; b3@b.example",
    ]


def build(entries: list[ReportEntry], env: Envelope | None = None, **kw: object) -> bytes:
    _, content = build_report(
        kind=kw.pop("kind", Notify.FAILURE),  # type: ignore[arg-type]
        envelope=env or envelope(),
        entries=entries,
        arrival=START,
        now=START + 60,
        hostname="mx.example",
        original=kw.pop("original", message()),  # type: ignore[arg-type]
        full=kw.pop("full", True),  # type: ignore[arg-type]
    )
    return content


def test_report_local_failure_has_no_diagnostic_code() -> None:
    """RFC 3464 2.3.6: Diagnostic-Code is what a remote MTA said; a locally
    made reply gives Status only."""
    entry = ReportEntry(Recipient(Mailbox("bob", "b.example")), "failed", "4.4.1", BUSY)
    block = status_blocks(parts(parse(build([entry])))[1])[1]
    assert "Diagnostic-Code" not in block
    assert "Remote-MTA" not in block
    assert block["Status"] == "4.4.1"


def test_report_hostile_reply_text_stays_inert() -> None:
    """RFC 3464 2.1.1: the status part is US-ASCII; a reply with non-ASCII
    or long text cannot break the report's structure."""
    reply = Reply(550, "5.7.1", ["Rejected: \u00e9t\u00e9 " + "spam " * 100, "Next: line"])
    entry = ReportEntry(Recipient(Mailbox("bob", "b.example")), "failed", "5.7.1", reply, "mx.b")
    content = build([entry])
    assert content.isascii()
    block = status_blocks(parts(parse(content))[1])[1]
    assert block["Diagnostic-Code"].startswith("smtp; 550 5.7.1 Rejected: ?t? spam")
    assert block["Diagnostic-Code"].endswith("Next: line")
    assert all(len(line) <= 998 for line in content.split(b"\r\n"))


def test_report_utf8_addresses_use_global_types() -> None:
    """RFC 6533 3, 6: UTF-8 addresses go in message/global-delivery-status with
    the utf-8 address type, and the report needs SMTPUTF8."""
    env = Envelope(
        Mailbox("j\u00f6rg", "a.example"),
        [Mailbox("\u00fcser", "b.example")],
        MailParams(smtputf8=True, body=BodyType.EIGHT_BIT_MIME),
    )
    entry = ReportEntry(env.recipients[0], "failed", "5.1.1", UNKNOWN, "mx.b.example")
    original = "Subject: gr\u00fc\u00dfe\r\n\r\nHallo\r\n".encode()
    report_env, content = build_report(
        kind=Notify.FAILURE,
        envelope=env,
        entries=[entry],
        arrival=START,
        now=START,
        hostname="mx.example",
        original=original,
        full=True,
    )
    assert report_env.params.smtputf8
    assert report_env.params.body is BodyType.EIGHT_BIT_MIME
    report = parse(content)
    assert report.get_param("report-type") == "global-delivery-status"
    _human, machine, returned = parts(report)
    assert machine.get_content_type() == "message/global-delivery-status"
    assert "Final-Recipient: utf-8; \u00fcser@b.example" in content.decode()
    assert returned.get_content_type() == "message/global"
    assert original.split(b"\r\n\r\n")[1] in content


def test_report_long_address_and_token_are_not_encoded_words() -> None:
    """RFC 3464 2.3.2 and 2.3.6 with RFC 2047 5(3): Final-Recipient holds the
    address as it is, and a long token in a reply (a URL) stays readable.
    The email package folds a token longer than its 78-character lines into
    =?utf-8?q?...?= words; a report folds only past 998 (RFC 5322 2.1.1),
    and a token too long even for that is cut."""
    rcpt = Mailbox("b" * 60, "d" * 60 + ".example.com")
    url = "https://example.com/help?" + "x" * 80
    reply = Reply(550, "5.7.1", ["see " + url, "y" * 2000])
    for env in (envelope(), envelope(params=MailParams(smtputf8=True))):
        entry = ReportEntry(Recipient(rcpt), "failed", "5.7.1", reply, "mx.b")
        content = build([entry], env)
        assert b"=?" not in content
        text = content.decode().replace("\r\n ", " ")  # unfolded
        assert f"Final-Recipient: rfc822; {rcpt}\r\n" in text
        assert f"Diagnostic-Code: smtp; 550 5.7.1 see {url} {'y' * 900}...\r\n" in text
        assert all(len(line) <= 998 for line in content.split(b"\r\n"))


def test_report_line_separators_in_addresses_and_replies() -> None:
    """RFC 6531 3.3 lets a UTF-8 mailbox hold U+2028 or U+2029, which the
    email package refuses in a header (it would read as a line break).  The
    report is still made: Final-Recipient keeps the address exact in RFC
    6533 3's \\x{HEX} form, the reply's text and the To field get a space,
    and the UTF-8 status part says 8bit (RFC 6533 6.2, RFC 2045 6.1)."""
    sender = Mailbox("a\u2028b", "a.example")
    rcpt = Mailbox("c\u2029d\u00e9", "b.example")
    env = Envelope(sender, [rcpt], MailParams(smtputf8=True))
    reply = Reply(550, "5.1.1", "no\u2029such user")
    content = build([ReportEntry(env.recipients[0], "failed", "5.1.1", reply, "mx.b")], env)
    text = content.decode()
    assert "Final-Recipient: utf-8; c\\x{2029}d\u00e9@b.example\r\n" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n" in text
    report = parse(content)
    assert report["To"].addresses[0].username == "a b"
    machine = parts(report)[1]
    assert machine["Content-Transfer-Encoding"] == "8bit"


async def test_a_report_that_cannot_be_made_does_not_stop_the_results(
    spool: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 5321 6.1 and RFC 3461 4.1: when a notification cannot be made,
    the recipients' results are still saved.  Before, the error undid the
    attempt: recipients already delivered were sent the message again at
    every retry, and the message never expired.  build_report is made to
    fail by injection: no input is known to make it fail any more (the
    line separators that did are in the test above)."""

    def broken(**_: object) -> tuple[Envelope, bytes]:
        raise ValueError("header value refused")

    monkeypatch.setattr("smtp_queue._queue.build_report", broken)
    env = envelope("alice@a.example", "bob@b.example", "carol@c.example")
    async with make_queue(spool, clock) as queue:
        await queue.enqueue(env, message())
        delivery = await queue.next_delivery()
        outcome = results([("bob@b.example", permanent()), ("carol@c.example", delivered())])
        assert await delivery.record(outcome) is None  # done: out of the queue
        assert (await queue.statistics()).messages == 0
    assert "cannot make the failure notification" in caplog.text


def test_report_8bit_original_needs_8bitmime() -> None:
    """RFC 6152: returning 8-bit content makes the report 8BITMIME."""
    report_env, content = build_report(
        kind=Notify.FAILURE,
        envelope=envelope(),
        entries=[ReportEntry(Recipient(Mailbox("bob", "b.example")), "failed", "5.0.0")],
        arrival=START,
        now=START,
        hostname="mx.example",
        original=b"Subject: x\r\n\r\ncaf\xc3\xa9\r\n",
        full=True,
    )
    assert report_env.params.body is BodyType.EIGHT_BIT_MIME
    assert not report_env.params.smtputf8
    assert b"caf\xc3\xa9" in content


def test_report_binarymime_returns_headers_only() -> None:
    """RFC 3030 3: BINARYMIME content cannot be put in a MIME part as is."""
    env = envelope(params=MailParams(body=BodyType.BINARY_MIME))
    entry = ReportEntry(Recipient(Mailbox("bob", "b.example")), "failed", "5.0.0")
    content = build([entry], env, original=b"Subject: bin\r\n\r\n\x00\x01\r\x02")
    assert b"\x00" not in content
    assert parts(parse(content))[2].get_content_type() == "text/rfc822-headers"


def test_report_refuses_null_sender_and_empty_entries() -> None:
    """RFC 3461 6.1: never a report about a report; and never an empty one."""
    entry = ReportEntry(Recipient(Mailbox("bob", "b.example")), "failed", "5.0.0")
    with pytest.raises(ValueError, match="null reverse-path"):
        build([entry], envelope(None))
    with pytest.raises(ValueError, match="at least one"):
        build([])


def test_report_bare_line_ends_in_original_become_crlf() -> None:
    """RFC 5321 2.3.8: the report is sent over SMTP, so only CRLF line ends."""
    entry = ReportEntry(Recipient(Mailbox("bob", "b.example")), "failed", "5.0.0")
    content = build([entry], original=b"Subject: x\n\nbare\nlf\rcr\r\n")
    assert b"bare\r\nlf\r\ncr\r\n" in content
    assert b"\n" not in content.replace(b"\r\n", b"")
