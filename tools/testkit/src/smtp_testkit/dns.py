"""DNS servers on loopback for tests: a scriptable one (dnspython) and dnsmasq.

Two kinds, for what each does best (see RECIPES.md, section 3):

- :class:`DNSServer` is a tiny authoritative UDP server written with
  dnspython, answering from a zone held in memory that a test edits while
  it runs.  It can also answer SERVFAIL, REFUSED, or nothing at all for a
  name, which dnsmasq cannot do reliably.  Fixture: ``dns_server``.
- :class:`Dnsmasq` runs the real ``dnsmasq`` program (package
  ``dnsmasq-base``) with ``--mx-host`` and ``--host-record`` options, as an
  independent implementation to test against.  Fixture: ``dnsmasq_factory``.

Both bind 127.0.0.1 on a free port; point a resolver at
``(server.host, server.port)``, e.g. ``MXResolver.at(server.host,
server.port, local_targets=True)`` in smtp_client (the exchangers of a
test are on loopback too).  Names live under ``.test`` (RFC 2606), and
nothing ever reaches a real DNS server.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
import time
from typing import IO, TYPE_CHECKING

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

__all__ = ["DNSServer", "Dnsmasq", "dns_server", "dnsmasq_factory", "start_dnsmasq"]


def _key(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


class DNSServer:
    """An authoritative DNS server on 127.0.0.1 (UDP), answering from memory.

    ``add("two.test", "MX", "10 mx1.two.test.", "20 mx2.two.test.")`` adds
    records (rdata in zone-file syntax); ``servfail(name)``, ``refuse(name)``
    and ``drop(name)`` (never answer: the client times out) make lookups of
    a name fail.  A name with records of other types gets NOERROR/NODATA; an
    unknown name NXDOMAIN, with the AA flag as an authority would.
    ``queries`` records every question asked, as ``(name, type)``.

    No TCP listener: answers are never truncated in tests this small.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.zone: dict[tuple[str, str], list[str]] = {}
        self._servfail: set[str] = set()
        self._refuse: set[str] = set()
        self._drop: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.1)
        self.host, self.port = self._sock.getsockname()[:2]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def add(self, name: str, rdtype: str, *rdatas: str) -> None:
        """Add records of type ``rdtype`` to ``name``."""
        self.zone.setdefault((_key(name), rdtype.upper()), []).extend(rdatas)

    def servfail(self, name: str) -> None:
        """Answer every question about ``name`` with SERVFAIL."""
        self._servfail.add(_key(name))

    def refuse(self, name: str) -> None:
        """Answer every question about ``name`` with REFUSED."""
        self._refuse.add(_key(name))

    def drop(self, name: str) -> None:
        """Never answer questions about ``name`` (a timeout)."""
        self._drop.add(_key(name))

    def _answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        key = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((key, rdtype))
        if key in self._drop:
            return None
        if key in self._servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif key in self._refuse:
            response.set_rcode(dns.rcode.REFUSED)
        elif (key, rdtype) in self.zone:
            response.answer.append(
                dns.rrset.from_text_list(question.name, 0, "IN", rdtype, self.zone[(key, rdtype)])
            )
            response.flags |= dns.flags.AA
        elif any(name == key for name, _ in self.zone):
            response.flags |= dns.flags.AA  # NODATA
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.flags |= dns.flags.AA
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                wire, address = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                answer = self._answer(wire)
            except Exception:  # noqa: BLE001 - a test server must keep serving
                continue
            if answer is not None:
                self._sock.sendto(answer, address)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._stopping.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    """A :class:`DNSServer` with an empty zone, stopped after the test."""
    server = DNSServer()
    try:
        yield server
    finally:
        server.stop()


class Dnsmasq:
    """A running ``dnsmasq`` (dnsmasq-base) on loopback; see :func:`start_dnsmasq`."""

    def __init__(
        self, process: subprocess.Popen[bytes], host: str, port: int, log: IO[bytes]
    ) -> None:
        self.process = process
        self.host = host
        self.port = port
        self._log = log

    def log(self) -> str:
        """What dnsmasq printed (one line per query, ``--log-queries``)."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM (dnsmasq exits at once), then wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _free_port(host: str) -> int:
    """A port free on ``host`` for both UDP and TCP (dnsmasq binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port: int = udp.getsockname()[1]
            with socket.socket() as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port


def start_dnsmasq(
    *,
    mx: Sequence[tuple[str, str, int]] = (),
    hosts: Sequence[tuple[str, str]] = (),
    local: Sequence[str] = ("test",),
    extra: Sequence[str] = (),
    host: str = "127.0.0.1",
) -> Dnsmasq:
    """Start dnsmasq answering only from its command line.

    ``mx`` holds ``(domain, exchange, preference)`` (``--mx-host``; an
    exchange of ``"."`` makes a null MX, RFC 7505), ``hosts`` holds
    ``(name, address)`` (``--host-record``).  Names under the ``local``
    domains that are not configured get NXDOMAIN (without ``--local``,
    dnsmasq answers REFUSED).  No upstream, no /etc/hosts, no resolv.conf.
    """
    from .plugin import require_program  # here: plugin imports this module

    binary = require_program("dnsmasq")
    port = _free_port(host)
    args = [
        binary,
        "--no-daemon",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        f"--port={port}",
        f"--listen-address={host}",
        "--bind-interfaces",
        "--pid-file=",
        "--log-facility=-",
        "--log-queries",
        *(f"--local=/{domain}/" for domain in local),
        *(f"--mx-host={d},{x},{p}" for d, x, p in mx),
        *(f"--host-record={n},{a}" for n, a in hosts),
        *extra,
    ]
    # A file, not a pipe: nobody reads while it runs, and a full pipe would
    # stall it.
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Dnsmasq.stop
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    server = Dnsmasq(process, host, port, log)
    # Ready when it answers: a query for the root's SOA gets REFUSED.
    probe = dns.message.make_query(".", "SOA").to_wire()
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.05)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output = server.log()
                server.stop()
                raise RuntimeError(f"dnsmasq exited: {output}")
            sock.sendto(probe, (host, port))
            with contextlib.suppress(TimeoutError):
                sock.recvfrom(4096)
                return server
    server.stop()
    raise RuntimeError("dnsmasq did not answer within 10 s")


@pytest.fixture
def dnsmasq_factory() -> Iterator[Callable[..., Dnsmasq]]:
    """Start dnsmasq instances (:func:`start_dnsmasq`'s arguments); stopped after."""
    started: list[Dnsmasq] = []

    def factory(**kwargs: object) -> Dnsmasq:
        server = start_dnsmasq(**kwargs)  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield factory
    finally:
        for server in started:
            server.stop()
