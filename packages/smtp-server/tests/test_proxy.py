"""The PROXY protocol (HAProxy's spec, versions 1 and 2) before SMTP."""

from __future__ import annotations

import ipaddress
import logging
import struct
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from serverkit import Recorder, serving, settings, timeouts, transaction, wait_for

from smtp_server._proxy import ProxyError, ProxyHeader, parse_proxy_header
from smtp_testkit.clients import RawClient

if TYPE_CHECKING:
    from smtp_server import Settings

if TYPE_CHECKING:
    import ssl

pytestmark = pytest.mark.anyio

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    *,
    command: int = 1,
    tlv: bytes = b"",
    version: int = 2,
) -> bytes:
    """A version 2 header as HAProxy writes it (spec section 2.2)."""
    if source is None or destination is None:
        family, addresses = 0x00, b""
    else:
        src = ipaddress.ip_address(source[0])
        dst = ipaddress.ip_address(destination[0])
        family = 0x11 if src.version == 4 else 0x21  # TCP over IPv4 / IPv6
        addresses = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    body = addresses + tlv
    return V2_SIGNATURE + struct.pack("!BBH", version << 4 | command, family, len(body)) + body


def proxied(**kwargs: Any) -> Settings:
    return settings(proxy_protocol=True, **kwargs)


@pytest.mark.parametrize(
    ("header", "peer", "local"),
    [
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
            ("192.0.2.1", 56324),
            ("198.51.100.2", 25),
        ),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 587\r\n",
            ("2001:db8::1", 40000),
            ("2001:db8::2", 587),
        ),
        (
            v2_header(("192.0.2.7", 1234), ("203.0.113.9", 25)),
            ("192.0.2.7", 1234),
            ("203.0.113.9", 25),
        ),
        (
            # With a TLV after the addresses (spec 2.2.7), e.g. PP2_TYPE_AUTHORITY.
            v2_header(
                ("2001:db8::7", 65535),
                ("2001:db8::9", 465),
                tlv=b"\x02\x00\x0bexample.com",
            ),
            ("2001:db8::7", 65535),
            ("2001:db8::9", 465),
        ),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v2-tcp4", "v2-tcp6-tlv"],
)
async def test_proxy_header_gives_hooks_the_client_address(
    header: bytes,
    peer: tuple[str, int],
    local: tuple[str, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PROXY protocol 2.1 / 2.2: the header names the real client, which the
    hooks see as the session's peer (and the log line names it)."""
    caplog.set_level(logging.INFO, logger="smtp_server")
    hooks = Recorder()
    async with serving(hooks, proxied()) as srv:
        client = await srv.connect(greeting=False)
        await client.send(header)
        assert (await client.read_reply()).code == 220
        await client.command("EHLO client.example")
        assert (await transaction(client)).code == 250
        await client.command("QUIT")
        await wait_for(lambda: hooks.disconnected)
    assert hooks.connects[0].peer == peer
    assert hooks.connects[0].local == local
    assert hooks.messages[0].session.peer == peer
    shown = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
    assert any(f"peer={shown}" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        v2_header(None, None, command=0),  # LOCAL: the proxy's health check
        v2_header(None, None, command=1),  # PROXY, AF_UNSPEC
    ],
    ids=["v1-unknown", "v1-unknown-long", "v2-local", "v2-unspec"],
)
async def test_proxy_header_without_address_keeps_the_socket_address(
    header: bytes,
) -> None:
    """PROXY protocol 2.1 (UNKNOWN) and 2.2 (LOCAL, AF_UNSPEC): the receiver
    ignores the addresses and uses the connection's own."""
    hooks = Recorder()
    async with serving(hooks, proxied()) as srv:
        client = await srv.connect(greeting=False)
        await client.send(header)
        assert (await client.read_reply()).code == 220
    assert hooks.connects[0].peer is not None
    assert hooks.connects[0].peer[0] == "127.0.0.1"


async def test_proxy_header_in_pieces_and_pipelined_with_smtp() -> None:
    """PROXY protocol 2: the header may arrive in pieces, and SMTP may follow
    it in the same segment (the client speaks before the greeting)."""
    hooks = Recorder()
    header = v2_header(("192.0.2.1", 4000), ("192.0.2.2", 25))
    async with serving(hooks, proxied()) as srv:
        client = await srv.connect(greeting=False)
        for i in range(len(header) - 1):
            await client.send(header[i : i + 1])
            await anyio.sleep(0.001)
        await client.send(header[-1:] + b"EHLO client.example\r\nNOOP\r\n")
        greeting, ehlo, noop = await client.read_replies(3)
    assert (greeting.code, ehlo.code, noop.code) == (220, 250, 250)
    assert hooks.connects[0].peer == ("192.0.2.1", 4000)


@pytest.mark.parametrize(
    "data",
    [
        b"EHLO client.example\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
        b"PROXY TCP4 192.0.2.1 2001:db8::1 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 99999 25\r\n",
        b"PROXY TCP4 " + b"1" * 200 + b"\r\n",
        v2_header(("192.0.2.1", 1), ("192.0.2.2", 2), version=3),
        v2_header(("192.0.2.1", 1), ("192.0.2.2", 2), command=7),
        # TCP over IPv4 / IPv6 with a length too short for the addresses.
        V2_SIGNATURE + b"\x21\x11\x00\x08" + b"\x00" * 8,
        V2_SIGNATURE + b"\x21\x21\x00\x20" + b"\x00" * 32,
        b"PROXY TCP6 fe80::1%eth0 2001:db8::2 40000 25\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    ],
    ids=[
        "smtp",
        "v1-short",
        "v1-mixed-family",
        "v1-bad-port",
        "v1-too-long",
        "v2-version",
        "v2-command",
        "v2-tcp4-short",
        "v2-tcp6-short",
        "v1-zone-index",
        "tls",
    ],
)
async def test_proxy_garbage_closes_without_greeting(data: bytes) -> None:
    """PROXY protocol 2 ("the receiver must ... close the connection" on an
    invalid header): no greeting, no hook, the server keeps serving."""
    hooks = Recorder()
    async with serving(hooks, proxied()) as srv:
        client = await srv.connect(greeting=False)
        await client.send(data)
        assert await client.read_until_closed() == b""
        good = await srv.connect(greeting=False)
        await good.send(b"PROXY UNKNOWN\r\n")
        assert (await good.read_reply()).code == 220
    assert len(hooks.connects) == 1


async def test_proxy_missing_header_times_out_without_greeting() -> None:
    """PROXY protocol 2: a client that sends no header (and waits for a
    greeting, as an SMTP client does) is closed after proxy_header."""
    hooks = Recorder()
    config = proxied(timeouts=timeouts(proxy_header=0.3))
    async with serving(hooks, config) as srv:
        client = await srv.connect(greeting=False)
        assert await client.read_until_closed() == b""
    assert hooks.connects == []


async def test_proxy_header_then_implicit_tls(
    tls_server_context: ssl.SSLContext, tls_client_context: ssl.SSLContext
) -> None:
    """PROXY protocol 2 and RFC 8314: behind a TCP proxy, the header comes in
    clear, then the client's TLS handshake."""
    hooks = Recorder()
    config = proxied(ssl_context=tls_server_context, implicit_tls=True)
    async with serving(hooks, config) as srv:
        client = await RawClient.connect(srv.host, srv.port)
        async with client:
            await client.send(b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 465\r\n")
            await client.start_tls(tls_client_context)
            assert (await client.read_reply()).code == 220
            await client.command("EHLO client.example")
            assert (await transaction(client)).code == 250
    assert hooks.messages[0].session.peer == ("192.0.2.1", 5000)
    assert hooks.messages[0].session.tls is not None


_ADDRESSES = st.one_of(
    st.tuples(st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.ip_addresses(v=6), st.ip_addresses(v=6)),
)
_PORTS = st.integers(0, 65535)


@given(
    addresses=_ADDRESSES,
    ports=st.tuples(_PORTS, _PORTS),
    v1=st.booleans(),
    tlv=st.binary(max_size=40),
    rest=st.binary(max_size=40),
)
def test_proxy_header_round_trip_and_prefixes(
    addresses: tuple[Any, Any], ports: tuple[int, int], v1: bool, tlv: bytes, rest: bytes
) -> None:
    """PROXY protocol 2.1 and 2.2: a header as HAProxy writes it parses back
    to its addresses, whatever follows it (SMTP pipelined behind), and every
    proper prefix of it is "incomplete", never an error."""
    src, dst = (str(a) for a in addresses)
    if v1:
        family = "TCP4" if addresses[0].version == 4 else "TCP6"
        header = f"PROXY {family} {src} {dst} {ports[0]} {ports[1]}\r\n".encode()
    else:
        header = v2_header((src, ports[0]), (dst, ports[1]), tlv=tlv)
    parsed = parse_proxy_header(header + rest)
    assert parsed == ProxyHeader((src, ports[0]), (dst, ports[1]), len(header))
    for end in range(len(header)):
        assert parse_proxy_header(header[:end]) is None


@given(
    st.one_of(
        st.binary(max_size=120),
        st.binary(max_size=120).map(lambda rest: V2_SIGNATURE + rest),
        st.binary(max_size=120).map(lambda rest: b"PROXY " + rest),
    )
)
def test_proxy_parser_on_any_bytes(data: bytes) -> None:
    """Hostile input: any bytes give a header no longer than the data,
    "incomplete", or a ProxyError; never another exception."""
    try:
        parsed = parse_proxy_header(data)
    except ProxyError:
        return
    if parsed is not None:
        assert 0 < parsed.length <= len(data)
