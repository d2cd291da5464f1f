"""The SASL mechanisms the server speaks: PLAIN (RFC 4616) and LOGIN."""

from __future__ import annotations

import attrs

from smtp_message import Reply

from ._hooks import Credentials

__all__ = ["MECHANISMS", "SaslError", "start"]

#: RFC 4616 2: authcid, authzid and passwd are at most 255 octets each.
MAX_SASL_FIELD = 255

_MALFORMED = Reply(501, "5.5.2", "Malformed authentication response")


class SaslError(Exception):
    """A client response the mechanism cannot accept; ``reply`` says why."""

    def __init__(self, reply: Reply = _MALFORMED) -> None:
        super().__init__(reply.text)
        self.reply = reply


def _text(raw: bytes) -> str:
    if len(raw) > MAX_SASL_FIELD:
        raise SaslError()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError() from None
    # No control characters in a name or password reaches a hook or a log.
    if any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in text):  # C0, DEL, C1
        raise SaslError()
    return text


@attrs.define(eq=False)
class Plain:
    """PLAIN (RFC 4616 2): ``[authzid] NUL authcid NUL passwd``."""

    name = "PLAIN"

    def step(self, response: bytes | None) -> bytes | Credentials:
        """Return the next challenge, or the credentials once complete."""
        if response is None:
            # No initial response: an empty challenge asks for it (RFC 4954 4).
            return b""
        parts = response.split(b"\0")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise SaslError()
        authzid, username, password = (_text(p) for p in parts)
        return Credentials("PLAIN", username, password, authzid or None)


@attrs.define(eq=False)
class Login:
    """LOGIN (draft-murchison-sasl-login): user name, then password.

    Not standardised, but what many mail clients offer when PLAIN is absent.
    """

    name = "LOGIN"
    _username: str | None = None

    def step(self, response: bytes | None) -> bytes | Credentials:
        """Return the next challenge, or the credentials once complete."""
        if response is None:
            return b"Username:"
        if self._username is None:
            self._username = _text(response)
            if not self._username:
                raise SaslError()
            return b"Password:"
        password = _text(response)
        if not password:
            # As in PLAIN (RFC 4616 2: passwd = 1*SAFE): no hook sees an
            # empty password.
            raise SaslError()
        return Credentials("LOGIN", self._username, password)


MECHANISMS: dict[str, type[Plain | Login]] = {"PLAIN": Plain, "LOGIN": Login}


def start(mechanism: str) -> Plain | Login:
    """A fresh exchange for ``mechanism`` (one the server offers)."""
    return MECHANISMS[mechanism]()
