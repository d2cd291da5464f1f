"""Delivery status notifications: RFC 3464 reports in RFC 6522 multipart/report.

Built with the stdlib :mod:`email` package.  A notification goes to the
original reverse-path with a null reverse-path of its own (RFC 3461 6.1, RFC
5321 4.5.5), so it can never cause another.
"""

from __future__ import annotations

import datetime
import email.generator
import email.policy
import email.utils
import io
import re
import textwrap
from email.message import EmailMessage, Message
from typing import TYPE_CHECKING

import attrs

from smtp_message import BodyType, Mailbox, MailParams, Notify, Reply

from ._model import Envelope, Recipient

if TYPE_CHECKING:
    from collections.abc import Sequence
    from email.policy import Policy

__all__ = ["ReportEntry", "build_report", "header_block"]

_SUBJECTS = {
    Notify.FAILURE: "Undelivered Mail Returned to Sender",
    Notify.DELAY: "Delayed Mail (still being retried)",
    Notify.SUCCESS: "Successful Mail Delivery Report",
}
_OPENINGS = {
    Notify.FAILURE: "Your message could not be delivered to one or more recipients.",
    Notify.DELAY: (
        "Your message has not been delivered yet to one or more recipients. "
        "Nothing needs to be done: delivery will be tried again until {until}."
    ),
    Notify.SUCCESS: "Your message was delivered to the recipients listed below.",
}
#: What the text says of the returned content (RFC 3464 2.1, the third part).
_RETURNED_WHOLE = "It is attached below."
_RETURNED_HEADERS = "Its header section is attached below; the body is not returned."
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
#: What ``str.splitlines`` breaks at: the email package refuses a header
#: value holding any of them, and U+2028 or U+0085 is a valid character of a
#: UTF-8 mailbox (RFC 6531 3.3) or a reply's text.
_BREAKS = re.compile("[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
#: A token longer than this would not fit on a line of 998 octets (RFC 5322
#: 2.1.1) with its field name, and the email package would turn it into RFC
#: 2047 encoded words, which a reader of the report does not decode.
_LONG_TOKEN = 900
_LONG = re.compile(rf"\S{{{_LONG_TOKEN + 1},}}")


@attrs.frozen
class ReportEntry:
    """One recipient's block of a report (RFC 3464 2.3)."""

    recipient: Recipient
    #: RFC 3464 2.3.3: failed, delayed, delivered, relayed.
    action: str
    #: RFC 3464 2.3.4 / RFC 3463: e.g. "5.1.1".
    status: str
    reply: Reply | None = None
    #: The server that gave ``reply`` (RFC 3464 2.3.5 Remote-MTA).
    host: str | None = None
    last_attempt: float | None = None


def _date(timestamp: float) -> str:
    # RFC 5322 3.3 date-time, in UTC with a numeric zone.
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC))


def _ascii(text: str) -> str:
    # A plain delivery-status part is US-ASCII (RFC 3464 2.1.1).
    return text.encode("ascii", "replace").decode("ascii")


def _one_line(text: str) -> str:
    """``text`` with nothing a header reader would take for a line break."""
    return _BREAKS.sub(" ", text)


def _address(mailbox: Mailbox, utf8: bool) -> str:
    text = str(mailbox)
    if text.isascii():
        return f"rfc822; {text}"
    if utf8:
        # RFC 6533 3: the "utf-8" address type, in a global delivery-status;
        # a character that would break the line is written \x{HEX}
        # (EmbeddedUnicodeChar), which keeps the address exact.
        return "utf-8; " + _BREAKS.sub(lambda m: f"\\x{{{ord(m[0]):X}}}", text)
    return f"rfc822; {_ascii(text)}"


def _diagnostic(reply: Reply, utf8: bool) -> str:
    # RFC 3464 2.3.6: "smtp; " and the reply, one line (the email package
    # folds it, at spaces only: see _LONG_TOKEN).
    text = _one_line(" ".join(line for line in reply.lines if line))
    text = _LONG.sub(lambda m: m[0][:_LONG_TOKEN] + "...", text)
    code = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
    diagnostic = f"smtp; {code} {text}".rstrip()
    return diagnostic if utf8 else _ascii(diagnostic)


def header_block(content: bytes) -> bytes:
    """The header section of a message: everything before the first empty line."""
    match = _HEADER_END.search(content)
    return content if match is None else content[: match.start()] + b"\r\n"


def _crlf(content: bytes) -> bytes:
    return _LINE_BREAK.sub(b"\r\n", content)


class _Generator(email.generator.BytesGenerator):
    """A BytesGenerator that writes a message/* part given as text byte for byte.

    The stdlib's encodes such a payload as strict ASCII, but returned content
    may be 8-bit (RFC 6152) and a global delivery-status is UTF-8 (RFC 6533);
    surrogateescape carries those octets through unchanged, as it already
    does for text parts.
    """

    def _encode(self, s: str) -> bytes:
        return s.encode("ascii", "surrogateescape")


def _fields(policy: Policy, fields: list[tuple[str, str]]) -> Message:
    block = Message(policy=policy)
    for name, value in fields:
        block[name] = value
    return block


def build_report(
    *,
    kind: Notify,
    envelope: Envelope,
    entries: Sequence[ReportEntry],
    arrival: float,
    now: float,
    hostname: str,
    original: bytes,
    full: bool,
    will_retry_until: float | None = None,
) -> tuple[Envelope, bytes]:
    """A notification about ``entries`` of a message; its envelope and content.

    ``original`` is the returned content: the whole message when ``full``,
    else (or if it is binary) only its header section is returned (RFC 3461
    4.3 RET).  The report is addressed to the original reverse-path, which
    must not be null: a notification about a notification is never made.
    """
    if envelope.sender is None:
        raise ValueError("never notify about a message with a null reverse-path")
    if not entries:
        raise ValueError("a report needs at least one recipient")
    sender = envelope.sender
    mailboxes = [sender, *(e.recipient.mailbox for e in entries)]
    utf8 = envelope.params.smtputf8 or any(m.needs_smtputf8 for m in mailboxes)
    # The status fields are read by programs, and the email package folds a
    # token too long for its line into RFC 2047 encoded words, which RFC 3464
    # 2.3.2 does not allow in an address.  So lines are folded only where
    # they would pass RFC 5322's 998 octets (2.1.1), and at spaces.
    policy = (email.policy.SMTPUTF8 if utf8 else email.policy.SMTP).clone(max_line_length=998)
    if envelope.params.body is BodyType.BINARY_MIME:
        full = False  # binary content cannot travel in a MIME part
    returned = _crlf(original if full else header_block(original))

    report = EmailMessage(policy=policy)
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{hostname}>"
    report["To"] = _one_line(sender.to_path())
    report["Subject"] = _SUBJECTS[kind]
    report["Date"] = _date(now)
    report["Message-ID"] = email.utils.make_msgid("dsn", domain=hostname)
    # RFC 3834 5: automatic responses say so, and nothing answers them.
    report["Auto-Submitted"] = "auto-replied"
    report["MIME-Version"] = "1.0"
    status_type = "global-delivery-status" if utf8 else "delivery-status"
    report["Content-Type"] = f"multipart/report; report-type={status_type}"

    # 1. For people (RFC 6522 3: the first part is human-readable).
    text = EmailMessage(policy=policy)
    opening = _OPENINGS[kind].format(
        until=_date(will_retry_until) if will_retry_until else "it expires"
    )
    if kind is Notify.FAILURE and (full or returned):
        opening += " " + (_RETURNED_WHOLE if full else _RETURNED_HEADERS)
    lines = [f"This is the mail system at {hostname}.", "", opening, ""]
    for entry in entries:
        line = f"<{entry.recipient.mailbox}>: {entry.action}"
        if entry.reply is not None:
            where = f" (from {entry.host})" if entry.host else ""
            line += f"{where}: {_diagnostic(entry.reply, True)[6:]}"
        # Wrapped at spaces: a long reply would pass 998 octets (RFC 5322
        # 2.1.1); its tokens are shorter than that (_LONG_TOKEN).
        lines += textwrap.wrap(
            line, 78, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
        )
    body = "\n".join(lines) + "\n"
    if utf8:
        text.set_content(body, charset="utf-8", cte="8bit")
    else:
        text.set_content(_ascii(body), charset="us-ascii", cte="7bit")
    del text["MIME-Version"]
    report.attach(text)

    # 2. For programs: RFC 3464 2.2 per-message fields, 2.3 per-recipient.
    per_message = []
    if envelope.params.envid is not None:
        per_message.append(("Original-Envelope-Id", envelope.params.envid))
    per_message.append(("Reporting-MTA", f"dns; {hostname}"))
    per_message.append(("Arrival-Date", _date(arrival)))
    blocks: list[Message | str] = [_fields(policy, per_message)]
    for entry in entries:
        fields = []
        orcpt = entry.recipient.orcpt
        if orcpt is not None:
            fields.append(("Original-Recipient", f"{orcpt.addr_type}; {orcpt.address}"))
        fields.append(("Final-Recipient", _address(entry.recipient.mailbox, utf8)))
        fields.append(("Action", entry.action))
        fields.append(("Status", entry.status))
        if entry.host is not None:
            fields.append(("Remote-MTA", f"dns; {entry.host}"))
        if entry.reply is not None and entry.host is not None:
            fields.append(("Diagnostic-Code", _diagnostic(entry.reply, utf8)))
        if entry.last_attempt is not None:
            fields.append(("Last-Attempt-Date", _date(entry.last_attempt)))
        if entry.action == "delayed" and will_retry_until is not None:
            fields.append(("Will-Retry-Until", _date(will_retry_until)))
        blocks.append(_fields(policy, fields))
    status = EmailMessage(policy=policy)
    status["Content-Type"] = f"message/{status_type}"
    if utf8:
        # The generator knows only message/delivery-status as a list of field
        # blocks; the global form is the same text, given whole.
        # Each block ends with its blank line (RFC 3464 2.1).
        joined = b"".join(b.as_bytes(policy=policy) for b in blocks if isinstance(b, Message))
        status.set_payload(joined.decode("ascii", "surrogateescape"))
        if not joined.isascii():
            # RFC 6533 6.2 with RFC 2045 6.1: raw UTF-8 is 8bit, not the 7bit
            # a part without this field is taken for.
            status["Content-Transfer-Encoding"] = "8bit"
    else:
        status.set_payload(blocks)
    report.attach(status)

    # 3. The original (RFC 3464 2.1, RFC 6533 6.3 for UTF-8 headers).
    if full:
        content_type = "message/global" if utf8 else "message/rfc822"
    else:
        content_type = "message/global-headers" if utf8 else "text/rfc822-headers"
    part = EmailMessage(policy=policy)
    part["Content-Type"] = content_type
    if not returned.isascii():
        part["Content-Transfer-Encoding"] = "8bit"
    # As bytes, untouched: the generator writes a string payload of a
    # message/* part as is, and surrogateescape carries 8-bit octets through.
    part.set_payload(returned.decode("ascii", "surrogateescape"))
    report.attach(part)

    out = io.BytesIO()
    _Generator(out, policy=policy).flatten(report)
    content = out.getvalue()
    params = MailParams(
        body=None if content.isascii() else BodyType.EIGHT_BIT_MIME,
        smtputf8=utf8,
    )
    return Envelope(None, [Recipient(sender)], params), content
