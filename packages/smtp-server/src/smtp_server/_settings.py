"""Settings of the I/O layer: timeouts, TLS, limits on misbehaviour."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs

from smtp_message import Reply, ServerSettings

if TYPE_CHECKING:
    import ssl

__all__ = ["Settings", "Timeouts"]


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class Timeouts:
    """How long the server waits, in seconds (RFC 5321 4.5.3.2).

    The RFC states most of these as the client's patience; a server mirrors
    them so that it never waits for a client longer than a client waits for
    it.  When one expires the client gets ``421 4.4.2`` and the connection
    closes.
    """

    #: From the greeting until HELO/EHLO (the client waits 5 minutes for the
    #: greeting, 4.5.3.2.1).
    hello: float = attrs.field(default=300.0, validator=_positive)
    #: For a command outside a mail transaction (4.5.3.2.7, server timeout).
    idle: float = attrs.field(default=300.0, validator=_positive)
    #: For the next command inside a transaction (MAIL, RCPT: 4.5.3.2.2-3).
    command: float = attrs.field(default=300.0, validator=_positive)
    #: After 354, until the body starts (DATA initiation, 4.5.3.2.4).
    data_initiation: float = attrs.field(default=120.0, validator=_positive)
    #: Between two pieces of body (data block, 4.5.3.2.5).
    data_block: float = attrs.field(default=180.0, validator=_positive)
    #: For the message hook to decide once it stops reading (DATA
    #: termination, 4.5.3.2.6: the client waits 10 minutes for the reply).
    data_termination: float = attrs.field(default=600.0, validator=_positive)
    #: For any other hook (connect, hello, MAIL, RCPT, AUTH) to decide.
    hook: float = attrs.field(default=300.0, validator=_positive)
    #: For a TLS handshake (STARTTLS or implicit TLS).
    tls_handshake: float = attrs.field(default=60.0, validator=_positive)
    #: For the PROXY protocol header, when a listener expects one.
    proxy_header: float = attrs.field(default=10.0, validator=_positive)
    #: For the last reply to leave when the session ends.
    close: float = attrs.field(default=10.0, validator=_positive)

    @classmethod
    def scaled(cls, factor: float) -> Timeouts:
        """Every timeout multiplied by ``factor`` (small values for tests)."""
        return cls(**{f.name: getattr(cls(), f.name) * factor for f in attrs.fields(cls)})


@attrs.frozen
class Settings:
    """Everything :func:`~smtp_server.interact` and :func:`~smtp_server.serve` need.

    ``protocol`` holds what the session offers and enforces (host name,
    size and recipient limits, extensions, AUTH mechanisms; see
    :class:`smtp_message.ServerSettings`); the rest is about I/O.
    """

    protocol: ServerSettings = attrs.field(factory=ServerSettings)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    #: The server's TLS context: with it, STARTTLS is offered (RFC 3207).
    ssl_context: ssl.SSLContext | None = None
    #: Start every connection with a TLS handshake (port 465, RFC 8314 3.3).
    implicit_tls: bool = False
    #: 4xx/5xx replies tolerated between two accepted messages before
    #: ``421 4.7.0`` closes the session (bad commands, unknown recipients).
    max_errors: int = 20
    #: Failed AUTH attempts tolerated on one connection before ``421``.
    max_auth_failures: int = 3
    #: The delay before answering a failed AUTH; it doubles with each
    #: failure on the connection (a password-guessing client slows down, a
    #: mistyped password costs a second).
    auth_failure_delay: float = 1.0
    #: Expect a PROXY protocol header (v1 or v2) before the session: the
    #: listener sits behind HAProxy or a load balancer.
    proxy_protocol: bool = False
    #: At most this many concurrent sessions per :func:`serve`; more get
    #: ``421 4.3.2`` and are closed.
    max_sessions: int = 10_000
    #: On shutdown, how long sessions in a mail transaction may take to
    #: finish before they get ``421`` (idle ones get it at once).
    shutdown_grace: float = 30.0
    #: Commands that do not move a transaction on (NOOP, RSET, VRFY, EXPN,
    #: HELP, a repeated HELO/EHLO, ``BDAT 0``...; docs/design/smtp-server.md
    #: lists them) tolerated between two accepted messages before
    #: ``421 4.7.0`` (a client keeping a session and its slot without
    #: sending mail; Postfix's smtpd_junk_command_limit).
    max_junk_commands: int = 100
    #: Text after the host name in the 220 greeting.
    greeting: str = "ESMTP ready"

    _effective: ServerSettings = attrs.field(init=False, eq=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.implicit_tls and self.ssl_context is None:
            raise ValueError("implicit_tls needs an ssl_context")
        if self.protocol.starttls and self.ssl_context is None:
            # Offering STARTTLS with no way to start TLS would answer 220
            # and then fail the session (RFC 3207 4 has 454 for a server
            # that cannot, but then it should not advertise the extension).
            raise ValueError("protocol.starttls needs an ssl_context")
        for name in ("max_errors", "max_auth_failures", "max_sessions", "max_junk_commands"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number, at least 1, not {value!r}")
        for name in ("shutdown_grace", "auth_failure_delay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
        try:
            # The greeting is reply text (RFC 5321 4.2): no CR, LF or other
            # control character, found now rather than in every session.
            Reply(220, None, f"{self.protocol.hostname} {self.greeting}")
        except ValueError as exc:
            raise ValueError(f"greeting: {exc}") from None
        protocol = self.protocol
        if self.ssl_context is not None and not protocol.starttls:
            protocol = attrs.evolve(protocol, starttls=not self.implicit_tls)
        object.__setattr__(self, "_effective", protocol)

    @property
    def effective_protocol(self) -> ServerSettings:
        """``protocol``, offering STARTTLS when there is a TLS context.

        Built once: sessions share it, and its cached extension lists.
        """
        return self._effective
