"""Settings of a delivery: TLS policy, credentials, timeouts."""

from __future__ import annotations

import enum
import functools
import ssl
from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

__all__ = ["Credentials", "TLSMode", "TLSPolicy", "TLSPolicyResolver", "Timeouts"]


class TLSMode(enum.Enum):
    """How a session is encrypted."""

    #: Never: not even when the server offers STARTTLS (LMTP on a local socket).
    NONE = "none"
    #: STARTTLS when the server offers it; in clear otherwise (RFC 3207 with
    #: RFC 7435 "opportunistic security").  The default for MX relaying.
    OPPORTUNISTIC = "opportunistic"
    #: STARTTLS, or no delivery (RFC 3207 4.1 "the client MAY ... close the
    #: connection").  The default for smart hosts and submission.
    REQUIRED = "required"
    #: TLS from the first byte: submissions on port 465 (RFC 8314 3).
    IMPLICIT = "implicit"


@functools.cache
def _default_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    # Loading the CA store costs milliseconds: build each context once.
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        # RFC 7435 opportunistic security: encrypt without authenticating
        # rather than fall back to clear text.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@attrs.frozen
class TLSPolicy:
    """When to use TLS and what to check, for one destination.

    Build one with the named constructors: :meth:`none`,
    :meth:`opportunistic`, :meth:`required` and :meth:`implicit`.

    ``verify`` checks the server's certificate chain and name (the name is
    ``server_hostname``, by default the host connected to: the MX name, the
    smart host).  ``fallback_to_plaintext`` says whether a failed STARTTLS
    handshake is retried in clear on a new connection (only ever under
    ``OPPORTUNISTIC``; Postfix's "may" level does the same).  Under
    ``OPPORTUNISTIC`` with ``verify``, a failed handshake is first retried
    with TLS but no certificate check (RFC 7435 3: unauthenticated
    encryption rather than clear text).

    MTA-STS (RFC 8461) and DANE (RFC 7672) fit as a
    :class:`TLSPolicyResolver`: a function an :class:`~smtp_client.MXDomain`
    calls for each mail exchanger, returning a ``required`` policy with the
    name and trust anchors to check, or an ``opportunistic`` one.
    """

    mode: TLSMode = TLSMode.OPPORTUNISTIC
    verify: bool = False
    #: A PEM file of trusted CA certificates, instead of the system's.
    ca_file: str | None = None
    #: The name the certificate must match (and SNI); default: the host.
    server_hostname: str | None = None
    fallback_to_plaintext: bool = False
    #: A ready context (client certificates, pinning ...); overrides
    #: ``verify`` and ``ca_file``.
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False)

    @classmethod
    def none(cls) -> TLSPolicy:
        """Never TLS."""
        return cls(TLSMode.NONE)

    @classmethod
    def opportunistic(
        cls, *, verify: bool = False, fallback_to_plaintext: bool = True
    ) -> TLSPolicy:
        """STARTTLS if offered, unauthenticated by default (RFC 7435)."""
        return cls(
            TLSMode.OPPORTUNISTIC,
            verify=verify,
            fallback_to_plaintext=fallback_to_plaintext,
        )

    @classmethod
    def required(
        cls,
        *,
        verify: bool = True,
        ca_file: str | None = None,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> TLSPolicy:
        """STARTTLS or nothing, with the certificate checked by default."""
        return cls(
            TLSMode.REQUIRED,
            verify=verify,
            ca_file=ca_file,
            server_hostname=server_hostname,
            ssl_context=ssl_context,
        )

    @classmethod
    def implicit(
        cls,
        *,
        verify: bool = True,
        ca_file: str | None = None,
        server_hostname: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> TLSPolicy:
        """TLS from the start (port 465, RFC 8314 3.3)."""
        return cls(
            TLSMode.IMPLICIT,
            verify=verify,
            ca_file=ca_file,
            server_hostname=server_hostname,
            ssl_context=ssl_context,
        )

    def context(self) -> ssl.SSLContext:
        """The SSL context this policy connects with."""
        if self.ssl_context is not None:
            return self.ssl_context
        return _default_context(self.verify, self.ca_file)


class TLSPolicyResolver(Protocol):
    """Decides the TLS policy for one mail exchanger of a domain.

    The hook for MTA-STS (RFC 8461 4) and DANE (RFC 7672 2): called with the
    recipient domain and the MX host name before connecting to that host.
    """

    def __call__(self, domain: str, mx_host: str) -> Awaitable[TLSPolicy]:
        """Return the policy for ``mx_host``, an exchanger of ``domain``."""
        ...


def _redact(_value: str) -> str:
    return "<redacted>"


def _check_secret(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    # RFC 4616 2: authcid and passwd are "1*SAFE" with SAFE = UTF8 except
    # NUL; a NUL would move the field boundaries of the PLAIN message (a
    # user name "a\0b" authenticating as "b").  Lone surrogates are not
    # UTF-8 at all.
    if "\0" in value:
        raise ValueError(f"NUL in the {attribute.name} (RFC 4616 2)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"the {attribute.name} is not valid UTF-8") from None


def _check_username(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value:
        raise ValueError("empty user name")
    _check_secret(instance, attribute, value)


#: The SASL mechanisms the client implements (RFC 4616; the LOGIN draft).
MECHANISMS = ("PLAIN", "LOGIN")


def _to_mechanisms(value: str | Iterable[str]) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple(m.upper() for m in items)


def _check_mechanisms(_instance: object, _attribute: object, value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("no AUTH mechanism")
    unknown = [m for m in value if m not in MECHANISMS]
    if unknown:
        raise ValueError(f"unsupported AUTH mechanism {unknown[0]!r} (only PLAIN and LOGIN)")


@attrs.frozen
class Credentials:
    """A user name and password for AUTH PLAIN or LOGIN (RFC 4954, 4616).

    ``mechanisms`` lists those to use, in order of preference, among what
    the server offers.  Credentials are only ever sent over TLS, unless
    ``allow_plaintext`` (a loopback or unix-socket test server).  Neither
    may hold NUL (RFC 4616 2): :class:`ValueError`.

    ``soft_bounce`` (the default, as Postfix's ``smtp_sasl_auth_soft_bounce``)
    makes a 5xx refusal of the credentials (RFC 4954 6: ``535 5.7.8``) a
    transient failure: a wrong or expired password is the sender's to fix,
    and the mail waits for that instead of bouncing.
    """

    username: str = attrs.field(validator=_check_username)
    password: str = attrs.field(repr=_redact, validator=_check_secret)
    mechanisms: tuple[str, ...] = attrs.field(
        default=("PLAIN", "LOGIN"), converter=_to_mechanisms, validator=_check_mechanisms
    )
    allow_plaintext: bool = False
    soft_bounce: bool = True


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen
class Timeouts:
    """How long to wait for the server, in seconds (RFC 5321 4.5.3.2).

    The defaults are the RFC's minimums: a client "SHOULD" wait at least
    this long, because a slow server may be doing real work (a DATA
    termination timeout shorter than 10 minutes causes duplicate mail).
    """

    #: Not in the RFC: TCP connect (Postfix's ``smtp_connect_timeout``).
    connect: float = attrs.field(default=30.0, validator=_positive)
    #: 4.5.3.2.1 Initial 220 Message: 5 minutes.
    greeting: float = attrs.field(default=300.0, validator=_positive)
    #: Other commands (EHLO, STARTTLS and its handshake, AUTH, RSET, QUIT):
    #: the 5 minutes the RFC gives MAIL and RCPT.
    command: float = attrs.field(default=300.0, validator=_positive)
    #: 4.5.3.2.2 MAIL Command: 5 minutes.
    mail: float = attrs.field(default=300.0, validator=_positive)
    #: 4.5.3.2.3 RCPT Command: 5 minutes.
    rcpt: float = attrs.field(default=300.0, validator=_positive)
    #: 4.5.3.2.4 DATA Initiation: 2 minutes.
    data_init: float = attrs.field(default=120.0, validator=_positive)
    #: 4.5.3.2.5 Data Block: 3 minutes for each send of body data.
    data_block: float = attrs.field(default=180.0, validator=_positive)
    #: 4.5.3.2.6 DATA Termination: 10 minutes (each LMTP recipient's reply).
    data_end: float = attrs.field(default=600.0, validator=_positive)

    def scaled(self, factor: float) -> Timeouts:
        """Every timeout multiplied by ``factor``."""
        return Timeouts(**{k: v * factor for k, v in attrs.asdict(self).items()})
