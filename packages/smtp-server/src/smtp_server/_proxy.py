"""The PROXY protocol header (HAProxy's spec, versions 1 and 2), sans I/O.

A listener behind HAProxy or a cloud load balancer receives, before any
SMTP, a header naming the real client.  Only listeners configured for it
expect the header (anyone could send one), and a connection whose header is
missing or malformed is closed without a greeting.
"""

from __future__ import annotations

import ipaddress
import struct

import attrs

__all__ = ["ProxyError", "ProxyHeader", "parse_proxy_header"]

#: Version 1: "the maximum line length is 107 characters including the CRLF".
MAX_V1 = 107
#: Version 2: the 12-octet signature.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Version 2: signature, version/command, family, and a 16-bit length.
V2_FIXED = 16


class ProxyError(ValueError):
    """The bytes do not start with a valid PROXY header."""


@attrs.frozen
class ProxyHeader:
    """What the header says.

    ``source`` is ``None`` for LOCAL / UNKNOWN (a health check, or an address
    family we do not map): the connection's own addresses then stand.
    """

    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    #: How many octets the header took; what follows is SMTP.
    length: int


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, MAX_V1)
    if end == -1:
        if len(data) >= MAX_V1:
            raise ProxyError("PROXY v1 line too long")
        return None
    try:
        words = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyError("PROXY v1 line is not ASCII") from None
    if words[:2] == ["PROXY", "UNKNOWN"]:
        return ProxyHeader(None, None, end + 2)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyError("malformed PROXY v1 line")
    _, family, src, dst, sport, dport = words
    try:
        version = 4 if family == "TCP4" else 6
        for text in (src, dst):
            # No zone index ("fe80::1%eth0"): it names an interface of the
            # proxy's host, which is no client address here.
            if "%" in text or ipaddress.ip_address(text).version != version:
                raise ValueError(text)
        ports = [int(p) for p in (sport, dport) if p.isdigit() and len(p) <= 5]
        if len(ports) != 2 or not all(0 <= p <= 65535 for p in ports):
            raise ValueError("port")
    except ValueError:
        raise ProxyError("malformed PROXY v1 address") from None
    return ProxyHeader((src, ports[0]), (dst, ports[1]), end + 2)


def _v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    ver_cmd, fam, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2:
        raise ProxyError("unsupported PROXY v2 version")
    command = ver_cmd & 0x0F
    total = V2_FIXED + length
    if len(data) < total:
        return None
    if command == 0:  # LOCAL: the proxy's own connection (health check)
        return ProxyHeader(None, None, total)
    if command != 1:
        raise ProxyError("unsupported PROXY v2 command")
    family, transport = fam >> 4, fam & 0x0F
    body = data[V2_FIXED:total]
    src: ipaddress.IPv4Address | ipaddress.IPv6Address
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address
    if transport == 1 and family in (1, 2) and length < (12 if family == 1 else 36):
        # The length covers the addresses and any TLVs (spec 2.2): a block
        # too short for the family's addresses is a broken header, not one
        # without an address.
        raise ProxyError("PROXY v2 address block too short")
    if family == 1 and transport == 1:  # TCP over IPv4
        src, dst = ipaddress.IPv4Address(body[0:4]), ipaddress.IPv4Address(body[4:8])
        sport, dport = struct.unpack_from("!HH", body, 8)
    elif family == 2 and transport == 1:  # TCP over IPv6
        src, dst = ipaddress.IPv6Address(body[0:16]), ipaddress.IPv6Address(body[16:32])
        sport, dport = struct.unpack_from("!HH", body, 32)
    else:
        # UNSPEC, UNIX or UDP: "the receiver ... must ignore the address".
        return ProxyHeader(None, None, total)
    return ProxyHeader((str(src), sport), (str(dst), dport), total)


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """Parse the header at the start of ``data``; ``None`` if incomplete.

    Raises :class:`ProxyError` as soon as the bytes cannot be a header.
    """
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and data[:1] == b"\r":
        return _v2(data) if len(data) >= 12 else None
    if data[:6] == b"PROXY "[: len(data[:6])]:
        return _v1(data) if len(data) >= 6 else None
    raise ProxyError("no PROXY header")
