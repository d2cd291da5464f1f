"""``smtp-mta send``: send one message with smtp_client, like swaks.

Exit status (sysexits.h): 0 when every recipient was delivered, 75
(EX_TEMPFAIL) when any failed transiently and none permanently, 69
(EX_UNAVAILABLE) when any failed permanently, 64 (EX_USAGE) for bad
arguments or an address that cannot be sent, with a one-line error and
nothing sent.
"""

from __future__ import annotations

import argparse
import email.utils
import ipaddress
import json
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import anyio
import attrs

from smtp_message import Helo, Mailbox

# smtp_client (and dnspython under it) is imported when a message is sent,
# not with the command line: the sink starts 0.15 s sooner (of 0.42).
if TYPE_CHECKING:
    from smtp_client import (
        Destination,
        Envelope,
        MXResolver,
        SendResult,
        Timeouts,
        TLSMode,
        TLSPolicy,
    )

__all__ = ["register"]

EX_OK = 0
EX_USAGE = 64
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

#: The values of :class:`smtp_client.TLSMode`, for ``--tls`` (a test checks
#: that they agree).
TLS_MODES = ("none", "opportunistic", "required", "implicit")

#: ``--timeout`` gives this timeout (RFC 5321 4.5.3.2's 5 minutes for MAIL,
#: RCPT and other commands); every other timeout keeps its proportion.
_BASE_TIMEOUT = 300.0

# RFC 5322 3.6.8:  field-name = 1*ftext ; ftext = %d33-57 / %d59-126
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# A header value: printable ASCII, tab, or any non-ASCII character (RFC
# 6532), never a control character (CR and LF above all).
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_HOST = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\s]+))(?::(?P<port>\d+))?")


class UsageError(Exception):
    """An argument that cannot be used: exit 64 with this one-line message."""


class _Parser(argparse.ArgumentParser):
    """argparse's errors exit 2; this command's exit 64 (EX_USAGE), as sendmail."""

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``send`` to the ``smtp-mta`` command line."""
    parser = subparsers.add_parser(
        "send",
        help="send one message and report each recipient's outcome (like swaks)",
        description=(
            "Send one message to a server, an LMTP server or a domain's MX, and "
            "print one line per recipient with its outcome and the server's "
            "reply.  Exit status: 0 all delivered, 75 some failed transiently "
            "(none permanently), 69 some failed permanently, 64 bad arguments "
            "(nothing sent)."
        ),
    )
    parser.__class__ = _Parser  # exit 64, not 2, on a usage error
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", metavar="HOST:PORT", help="relay through this server")
    where.add_argument("--mx", metavar="DOMAIN", help="deliver to DOMAIN's MX hosts")
    where.add_argument("--lmtp", metavar="HOST:PORT|SOCKET", help="deliver over LMTP (RFC 2033)")
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    parser.add_argument("--to", dest="recipients", action="append", required=True, metavar="ADDR")
    parser.add_argument(
        "--tls",
        choices=TLS_MODES,
        help="default: required for --server, opportunistic for --mx, none for --lmtp",
    )
    parser.add_argument(
        "--ca-file", metavar="PEM", help="trust these CAs (verifies the certificate)"
    )
    parser.add_argument(
        "--auth", metavar="USER:PASSWORD", help="AUTH PLAIN or LOGIN, over TLS only"
    )
    parser.add_argument(
        "--dns",
        metavar="HOST:PORT",
        help="the nameserver for --mx (default: system); its exchangers may be on this "
        "host (loopback), which the system's are never",
    )
    parser.add_argument("--port", type=int, help="port of the MX hosts (default 25)")
    parser.add_argument("--helo", metavar="NAME", help="the EHLO name")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="the command timeout (RFC 5321's 5 minutes); the others scale with it",
    )
    parser.add_argument(
        "--body", metavar="FILE|-", help="the message, as is (default: a test message)"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="add (or replace) a header field",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=main)


@attrs.frozen
class Request:
    """Everything ``send`` needs, validated: nothing invalid gets this far."""

    destination: Destination
    envelope: Envelope
    body: bytes
    helo: str
    timeouts: Timeouts
    resolver: MXResolver | None
    json: bool


def main(args: argparse.Namespace) -> int:
    """Run ``smtp-mta send``; return the exit status."""
    try:
        request = build_request(args)
    except UsageError as exc:
        print(f"smtp-mta send: {exc}", file=sys.stderr)
        return EX_USAGE
    result = anyio.run(deliver, request)
    if request.json:
        print(json.dumps(to_json(result), indent=2, ensure_ascii=False))
    else:
        for line in to_lines(result):
            print(line)
    return exit_status(result)


async def deliver(request: Request) -> SendResult:
    """Send the message; return the per-recipient result."""
    from smtp_client import Client  # deferred: see the imports

    async with Client(
        helo=request.helo, timeouts=request.timeouts, resolver=request.resolver
    ) as client:
        return await client.send(request.destination, request.envelope, request.body)


def exit_status(result: SendResult) -> int:
    """0, 75 or 69, from the recipients' outcomes."""
    if result.permanent:
        return EX_UNAVAILABLE
    if result.transient:
        return EX_TEMPFAIL
    return EX_OK


def to_json(result: SendResult) -> dict[str, dict[str, dict[str, object]]]:
    """``{"recipients": {addr: {status, code, enhanced, text, host}}}``."""
    return {
        "recipients": {
            str(r.recipient): {
                "status": r.status.value,
                "code": r.reply.code,
                "enhanced": r.reply.enhanced,
                "text": r.reply.text,
                "host": r.host,
            }
            for r in result.recipients
        }
    }


def to_lines(result: SendResult) -> list[str]:
    """One line per recipient: address, outcome, reply, host."""
    lines = []
    for r in result.recipients:
        code = f"{r.reply.code} {r.reply.enhanced}" if r.reply.enhanced else str(r.reply.code)
        text = " ".join(r.reply.lines)
        where = f" [{r.host}]" if r.host else ""
        lines.append(f"{r.recipient}: {r.status.value} {code} {text}{where}")
    return lines


# -- Arguments ---------------------------------------------------------------


def _one_line(value: str) -> str:
    return repr(value)  # a CR or LF in it is shown, never printed


def _address(value: str, what: str) -> Mailbox:
    try:
        return Mailbox.parse(value, utf8=True)
    except ValueError as exc:
        raise UsageError(f"bad {what} address {_one_line(value)}: {exc}") from None


def _host_port(value: str, what: str, default_port: int) -> tuple[str, int]:
    match = _HOST_PORT.fullmatch(value)
    # Control characters, and bytes the locale could not decode (lone
    # surrogates in sys.argv), are never part of a host name.
    if match is None or _BAD_HOST.search(value):
        raise UsageError(f"bad {what} {_one_line(value)}: expected HOST:PORT")
    port = int(match["port"]) if match["port"] else default_port
    if not 0 < port < 65536:
        raise UsageError(f"bad {what} {_one_line(value)}: port out of range")
    return match["v6"] or match["host"], port


def _utf8(value: str, what: str) -> str:
    """``value`` if it is text; a UsageError for undecodable command-line bytes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"bad {what} {_one_line(value)}: not valid UTF-8") from None
    return value


def _policy(args: argparse.Namespace, default: TLSMode) -> TLSPolicy:
    from smtp_client import TLSMode, TLSPolicy  # deferred: see the imports

    mode = TLSMode(args.tls) if args.tls else default
    ca_file = args.ca_file
    if ca_file is not None:
        if not Path(ca_file).is_file():
            raise UsageError(f"no such CA file {_one_line(ca_file)}")
        import ssl  # deferred, as smtp_client: see the imports

        try:
            # Loaded now: a file that holds no certificate is a bad argument
            # (64), not a TLS failure found after connecting (75).
            ssl.create_default_context(cafile=ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise UsageError(f"bad CA file {_one_line(ca_file)}: {_one_line(str(exc))}") from None
    if mode is TLSMode.NONE:
        return TLSPolicy.none()
    if mode is TLSMode.OPPORTUNISTIC:
        if ca_file:
            return TLSPolicy(TLSMode.OPPORTUNISTIC, verify=True, ca_file=ca_file)
        return TLSPolicy.opportunistic()
    if mode is TLSMode.REQUIRED:
        return TLSPolicy.required(ca_file=ca_file)
    return TLSPolicy.implicit(ca_file=ca_file)


def _destination(args: argparse.Namespace) -> Destination:
    from smtp_client import (  # deferred: see the imports
        Credentials,
        LMTPServer,
        MXDomain,
        SmartHost,
        TLSMode,
    )

    credentials = None
    if args.auth is not None:
        user, colon, password = args.auth.partition(":")
        if not colon or not user:
            raise UsageError("--auth takes USER:PASSWORD")
        try:
            # No queue waits behind this command: a refused password is
            # final here (exit 69), not deferred as a relay defers it.
            credentials = Credentials(user, password, soft_bounce=False)
        except ValueError as exc:
            # Not the value itself: it holds the password.
            raise UsageError(f"bad --auth: {exc}") from None
    if args.mx is None and (args.port is not None or args.dns is not None):
        raise UsageError("--port and --dns go with --mx")
    if args.server is not None:
        host, port = _host_port(args.server, "--server", 25)
        return SmartHost(host, port, tls=_policy(args, TLSMode.REQUIRED), credentials=credentials)
    if args.lmtp is not None:
        policy = _policy(args, TLSMode.NONE)
        # A socket path has a slash ("./lmtp" for one here), or names a socket
        # that exists; anything else is HOST[:PORT].
        if "/" in args.lmtp or Path(args.lmtp).is_socket():
            return LMTPServer(path=args.lmtp, tls=policy, credentials=credentials)
        host, port = _host_port(args.lmtp, "--lmtp", 24)
        return LMTPServer(host=host, port=port, tls=policy, credentials=credentials)
    if credentials is not None:
        raise UsageError("--auth goes with --server or --lmtp")
    try:
        Mailbox("postmaster", args.mx)
    except ValueError:
        raise UsageError(f"bad --mx domain {_one_line(args.mx)}") from None
    port = args.port if args.port is not None else 25
    if not 0 < port < 65536:
        raise UsageError(f"bad --port {port}")
    return MXDomain(args.mx, port, tls=_policy(args, TLSMode.OPPORTUNISTIC))


def _headers(args: argparse.Namespace) -> list[tuple[str, str]]:
    headers = []
    for item in args.header:
        name, colon, value = _utf8(item, "--header").partition(":")
        value = value.strip(" \t")
        if not colon or not _FIELD_NAME.fullmatch(name) or _BAD_VALUE.search(value):
            raise UsageError(f"bad --header {_one_line(item)}: expected 'Name: value'")
        headers.append((name, value))
    return headers


def with_headers(message: bytes, headers: list[tuple[str, str]]) -> bytes:
    """``message`` with ``headers`` first, in place of its fields of those names.

    RFC 5322 3.6 allows Subject, From, Date and most others once: a field
    given with --header replaces the message's own (with its folded
    lines).  The header section ends at the first empty line, or at a line
    that is not a field (the rest is left as it is).
    """
    if not headers:
        return message
    names = {name.lower().encode("ascii") for name, _ in headers}
    kept: list[bytes] = []
    dropping = False
    pos = 0
    while pos < len(message):
        newline = message.find(b"\n", pos)
        end = len(message) if newline < 0 else newline + 1
        line = message[pos:end]
        if line.rstrip(b"\r\n") == b"":
            break  # the end of the header section
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)  # a folded line of the field before
        else:
            name, colon, _ = line.partition(b":")
            if not colon or not _FIELD_NAME.fullmatch(name.decode("ascii", "replace")):
                break  # not a header section (or its end): kept as is
            dropping = name.lower() in names
            if not dropping:
                kept.append(line)
        pos = end
    prefix = "".join(f"{n}: {v}\r\n" for n, v in headers).encode("utf-8")
    return prefix + b"".join(kept) + message[pos:]


def _read_body(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read --body {_one_line(path)}: {exc.strerror}") from None


def generated_message(
    sender: Mailbox | None,
    recipients: list[Mailbox],
    helo: str,
    extra: list[tuple[str, str]],
) -> bytes:
    """A small RFC 5322 message: Date, Message-ID, From, To, Subject, a body."""
    fields = {
        "Date": email.utils.formatdate(localtime=True),
        "Message-ID": email.utils.make_msgid(domain=helo),
        "From": str(sender) if sender is not None else f"MAILER-DAEMON@{helo}",
        "To": ", ".join(str(r) for r in recipients),
        "Subject": "test message from smtp-mta send",
    }
    lines = []
    for name, value in fields.items():
        override = [v for n, v in extra if n.lower() == name.lower()]
        lines.append(f"{name}: {override[-1] if override else value}")
    known = {name.lower() for name in fields}
    lines += [f"{n}: {v}" for n, v in extra if n.lower() not in known]
    text = "\r\n".join(lines) + "\r\n\r\nThis is a test message sent by smtp-mta send.\r\n"
    return text.encode("utf-8")


def build_request(args: argparse.Namespace) -> Request:
    """Check every argument; raise :class:`UsageError` on the first bad one."""
    from smtp_client import Envelope, MXResolver, Timeouts  # deferred: see the imports

    sender = None if args.sender in ("", "<>") else _address(args.sender, "--from")
    recipients = [_address(r, "--to") for r in args.recipients]
    destination = _destination(args)
    helo = args.helo or socket.gethostname() or "localhost"
    try:
        Helo(helo)
    except ValueError:
        raise UsageError(f"bad --helo name {_one_line(helo)}") from None
    headers = _headers(args)
    if args.body is not None:
        body = with_headers(_read_body(args.body), headers)
    else:
        body = generated_message(sender, recipients, helo, headers)
    timeouts = Timeouts()
    if args.timeout is not None:
        if not args.timeout > 0:
            raise UsageError("--timeout must be positive")
        timeouts = timeouts.scaled(args.timeout / _BASE_TIMEOUT)
    resolver = None
    if args.dns is not None:
        host, port = _host_port(args.dns, "--dns", 53)
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(f"--dns takes an IP address, not {_one_line(host)}") from None
        # A private nameserver is a test set-up: its exchangers may be on
        # this host, which the system resolver's route never uses.
        resolver = MXResolver.at(
            host, port, lifetime=min(timeouts.command, 10.0), local_targets=True
        )
    return Request(
        destination=destination,
        envelope=Envelope.build(sender, recipients),
        body=body,
        helo=helo,
        timeouts=timeouts,
        resolver=resolver,
        json=args.json,
    )
