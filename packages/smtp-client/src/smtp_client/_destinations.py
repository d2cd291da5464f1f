"""Where a message goes: a smart host, an LMTP server, or a domain's MX."""

from __future__ import annotations

import attrs

from ._policy import Credentials, TLSPolicy, TLSPolicyResolver

__all__ = ["Destination", "LMTPServer", "MXDomain", "SmartHost"]

#: RFC 5321 4.5.4 (and IANA): the SMTP relay port.
SMTP_PORT = 25
#: RFC 2033 5 asks that LMTP not use port 25; 24 is IANA's LMTP port.
LMTP_PORT = 24


def _check_port(_instance: object, _attribute: object, value: int) -> None:
    if not 0 < value < 65536:
        raise ValueError(f"not a TCP port: {value!r}")


def _check_host(_instance: object, _attribute: object, value: str) -> None:
    if not value or any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(f"not a host name or address: {value!r}")


@attrs.frozen
class SmartHost:
    """Relay everything through one server (``host:port``), e.g. submission.

    TLS is required and the certificate checked by default; ``credentials``
    authenticate with AUTH PLAIN or LOGIN once TLS is up (RFC 4954).
    """

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(default=SMTP_PORT, validator=_check_port)
    tls: TLSPolicy = attrs.field(factory=TLSPolicy.required)
    credentials: Credentials | None = None


@attrs.frozen
class LMTPServer:
    """Deliver over LMTP (RFC 2033): to a unix socket ``path`` or ``host:port``.

    How local mail reaches an MDA such as Dovecot.  Each recipient gets its
    own reply after the body.  No TLS by default (a local socket).
    """

    host: str | None = attrs.field(default=None, validator=attrs.validators.optional(_check_host))
    port: int = attrs.field(default=LMTP_PORT, validator=_check_port)
    path: str | None = None
    tls: TLSPolicy = attrs.field(factory=TLSPolicy.none)
    credentials: Credentials | None = None

    def __attrs_post_init__(self) -> None:
        if (self.host is None) == (self.path is None):
            raise ValueError("an LMTP server has a host or a path, not both")

    @classmethod
    def unix(cls, path: str) -> LMTPServer:
        """The LMTP server listening on the unix socket ``path``."""
        return cls(path=path)


@attrs.frozen
class MXDomain:
    """Deliver to a domain's mail exchangers, found in the DNS (RFC 5321 5.1).

    ``port`` replaces 25 (for tests).  ``tls`` is a policy, or a
    :class:`~smtp_client.TLSPolicyResolver` asked for each exchanger
    (MTA-STS, DANE).  Opportunistic STARTTLS by default.
    """

    domain: str = attrs.field(validator=_check_host)
    port: int = attrs.field(default=SMTP_PORT, validator=_check_port)
    tls: TLSPolicy | TLSPolicyResolver = attrs.field(factory=TLSPolicy.opportunistic)


Destination = SmartHost | LMTPServer | MXDomain
