"""The session states and every transition between them, in one table each.

Rule 1 (as in h11): a state changes only through a row of these tables.
The state diagram in the documentation is generated from them
(``docs/gen_state_diagrams.py``), so the two cannot disagree.

A row is ``(state, trigger, outcome, next state)``.  The trigger is a
command verb (``"MAIL"``), ``"BDAT LAST"`` for the last chunk, or one of the
non-command triggers below; the outcome is the class of the reply that
answered it: ``"2"``, ``"3"``, ``"4"`` or ``"5"``, or ``"*"`` for any.
A reply not covered by a row leaves the state unchanged, except that a
``421`` always closes the session (RFC 5321 3.8).  A command with no row at
all for the current state is out of sequence: it gets ``503 5.5.1`` (or the
more precise reply in :data:`SEQUENCE_ERRORS`) and changes nothing.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from ._replies import NO_SERVICE, NO_VALID_RECIPIENTS

if TYPE_CHECKING:
    from ._reply import Reply

__all__ = ["ClientState", "ServerState"]


class ServerState(enum.Enum):
    """Where a server session is (RFC 5321 3 and 4.1.4)."""

    #: Connection open; the greeting has not been sent (RFC 5321 3.1).
    GREETING = "GREETING"
    #: Greeted; waiting for HELO/EHLO (or LHLO).
    HELLO = "HELLO"
    #: The client said hello; no mail transaction.
    READY = "READY"
    #: MAIL accepted; no recipient accepted yet.
    MAIL = "MAIL"
    #: At least one recipient accepted.
    RCPT = "RCPT"
    #: 354 sent; reading the message (RFC 5321 4.1.1.4).
    DATA = "DATA"
    #: A BDAT chunk was accepted and LAST has not been seen (RFC 3030).
    BDAT = "BDAT"
    #: A SASL exchange is in progress (RFC 4954 4).
    AUTH = "AUTH"
    #: 220 sent to STARTTLS; the TLS handshake is due (RFC 3207 4).
    STARTTLS = "STARTTLS"
    #: The greeting was 554: only QUIT is accepted (RFC 5321 3.1).
    NO_SERVICE = "NO_SERVICE"
    #: 221 or 421 sent; the connection is to be closed.
    CLOSED = "CLOSED"

    # Members are singletons: hash by identity, in C (Enum's own __hash__
    # hashes the name in Python, and the table is consulted on every event).
    __hash__ = object.__hash__


class ClientState(enum.Enum):
    """Where a client session is, as far as the server's replies tell."""

    #: Waiting for the server's greeting.
    GREETING = "GREETING"
    #: Greeted (or TLS just started): HELO/EHLO/LHLO is next.
    HELLO = "HELLO"
    #: Hello accepted; no mail transaction.
    READY = "READY"
    #: MAIL accepted.
    MAIL = "MAIL"
    #: At least one recipient accepted.
    RCPT = "RCPT"
    #: 354 received: the body is to be sent.
    DATA = "DATA"
    #: Inside a chunked body (RFC 3030).
    BDAT = "BDAT"
    #: The server sent 334: a SASL response is due.
    AUTH = "AUTH"
    #: The server sent 220 to STARTTLS: the TLS handshake is due.
    STARTTLS = "STARTTLS"
    #: The greeting was 554: only QUIT may be sent (RFC 5321 3.1).
    NO_SERVICE = "NO_SERVICE"
    #: QUIT answered, 421 received, the connection dropped, or a reply did
    #: not parse (RFC 5321 4.2: nothing after it can be trusted).
    CLOSED = "CLOSED"

    __hash__ = object.__hash__


# Non-command triggers.
GREETING = "greeting"  # the server's first reply
END_OF_DATA = "end of data"  # the body's reply (DATA, or BDAT LAST)
AUTH_RESPONSE = "auth response"  # a line answering a 334 challenge
TLS_ESTABLISHED = "TLS established"  # the STARTTLS handshake completed

_S = ServerState
_COMMAND_STATES = (_S.HELLO, _S.READY, _S.MAIL, _S.RCPT, _S.BDAT)
_SESSION_STATES = (_S.READY, _S.MAIL, _S.RCPT, _S.BDAT)


def _everywhere(
    trigger: str, outcome: str, target: ServerState | None
) -> list[tuple[ServerState, str, str, ServerState]]:
    """Rows for a command legal in every command state (None: stays put)."""
    return [(s, trigger, outcome, target or s) for s in _COMMAND_STATES]


SERVER_TRANSITIONS: Final[tuple[tuple[ServerState, str, str, ServerState], ...]] = (
    # RFC 5321 3.1: the greeting opens the session, or refuses service.
    (_S.GREETING, GREETING, "2", _S.HELLO),
    (_S.GREETING, GREETING, "5", _S.NO_SERVICE),
    (_S.NO_SERVICE, "QUIT", "2", _S.CLOSED),
    # RFC 5321 4.1.4: HELO/EHLO may come again at any time; it resets the
    # transaction like RSET.  LHLO is LMTP's (RFC 2033 4.1).
    *[(s, verb, "2", _S.READY) for verb in ("HELO", "EHLO", "LHLO") for s in _COMMAND_STATES],
    # RFC 5321 4.1.1.2 / 4.1.1.3: MAIL opens a transaction, RCPT adds to it.
    (_S.READY, "MAIL", "2", _S.MAIL),
    (_S.MAIL, "RCPT", "2", _S.RCPT),
    (_S.RCPT, "RCPT", "2", _S.RCPT),
    # RFC 5321 4.1.1.4: 354, the body, then one reply (LMTP: one per
    # accepted recipient, RFC 2033 4.2); success or not, the transaction
    # is over.
    (_S.RCPT, "DATA", "3", _S.DATA),
    (_S.DATA, END_OF_DATA, "*", _S.READY),
    # RFC 3030 2: chunks; a failed chunk ends the transaction ("the
    # receiver SMTP must accept and discard additional BDAT chunks").
    (_S.RCPT, "BDAT", "2", _S.BDAT),
    (_S.RCPT, "BDAT", "4", _S.READY),
    (_S.RCPT, "BDAT", "5", _S.READY),
    (_S.BDAT, "BDAT", "2", _S.BDAT),
    (_S.BDAT, "BDAT", "4", _S.READY),
    (_S.BDAT, "BDAT", "5", _S.READY),
    (_S.RCPT, "BDAT LAST", "*", _S.READY),
    (_S.BDAT, "BDAT LAST", "*", _S.READY),
    # The reply to a message sent with BDAT (its LAST chunk accepted) ends
    # the transaction as the reply after DATA does.
    (_S.RCPT, END_OF_DATA, "*", _S.READY),
    (_S.BDAT, END_OF_DATA, "*", _S.READY),
    # RFC 5321 4.1.1.5: RSET clears the transaction.
    (_S.HELLO, "RSET", "2", _S.HELLO),
    *[(s, "RSET", "2", _S.READY) for s in _SESSION_STATES],
    # Commands that change nothing (RFC 5321 4.1.1.6-4.1.1.9).
    *_everywhere("NOOP", "*", None),
    *_everywhere("HELP", "*", None),
    *_everywhere("VRFY", "*", None),
    *_everywhere("EXPN", "*", None),
    # RFC 5321 4.1.1.10.
    *_everywhere("QUIT", "2", _S.CLOSED),
    # RFC 3207 4 and 4.2: after the handshake the client starts over.
    (_S.READY, "STARTTLS", "2", _S.STARTTLS),
    (_S.STARTTLS, TLS_ESTABLISHED, "*", _S.HELLO),
    # RFC 4954 4: AUTH outside a transaction; 334 continues the exchange.
    (_S.READY, "AUTH", "3", _S.AUTH),
    (_S.AUTH, AUTH_RESPONSE, "3", _S.AUTH),
    (_S.AUTH, AUTH_RESPONSE, "2", _S.READY),
    (_S.AUTH, AUTH_RESPONSE, "4", _S.READY),
    (_S.AUTH, AUTH_RESPONSE, "5", _S.READY),
)

#: Where an out-of-sequence command has a more precise reply than 503.
SEQUENCE_ERRORS: Final[dict[tuple[ServerState, str], Reply]] = {
    # RFC 5321 3.3: DATA when every RCPT was rejected.
    (_S.MAIL, "DATA"): NO_VALID_RECIPIENTS,
    (_S.MAIL, "BDAT"): NO_VALID_RECIPIENTS,
    (_S.MAIL, "BDAT LAST"): NO_VALID_RECIPIENTS,
    **{
        (_S.NO_SERVICE, verb): NO_SERVICE
        for verb in (
            "HELO",
            "EHLO",
            "LHLO",
            "MAIL",
            "RCPT",
            "DATA",
            "BDAT",
            "BDAT LAST",
            "RSET",
            "NOOP",
            "HELP",
            "VRFY",
            "EXPN",
            "STARTTLS",
            "AUTH",
        )
    },
}


def _index(
    rows: tuple[tuple[enum.Enum, str, str, enum.Enum], ...],
) -> tuple[dict[tuple[enum.Enum, str, str], enum.Enum], set[tuple[enum.Enum, str]]]:
    table: dict[tuple[enum.Enum, str, str], enum.Enum] = {}
    legal: set[tuple[enum.Enum, str]] = set()
    for state, trigger, outcome, target in rows:
        key = (state, trigger, outcome)
        if key in table:
            raise AssertionError(f"two transitions for {key}")
        table[key] = target
        legal.add((state, trigger))
    return table, legal


_SERVER_TABLE, _SERVER_LEGAL = _index(SERVER_TRANSITIONS)


_DIGITS = "0123456789"


def server_is_legal(state: ServerState, trigger: str) -> bool:
    """Whether ``trigger`` may happen in ``state`` (a row exists)."""
    return (state, trigger) in _SERVER_LEGAL


def server_next(state: ServerState, trigger: str, code: int) -> ServerState:
    """The state after ``trigger`` in ``state`` was answered with ``code``."""
    if code == 421:
        return ServerState.CLOSED
    outcome = _DIGITS[code // 100]
    target = _SERVER_TABLE.get((state, trigger, outcome))
    if target is None:
        target = _SERVER_TABLE.get((state, trigger, "*"), state)
    assert isinstance(target, ServerState)
    return target


_C = ClientState
_CLIENT_COMMAND_STATES = (_C.HELLO, _C.READY, _C.MAIL, _C.RCPT, _C.BDAT)

CLIENT_TRANSITIONS: Final[tuple[tuple[ClientState, str, str, ClientState], ...]] = (
    (_C.GREETING, GREETING, "2", _C.HELLO),
    # RFC 5321 3.1: after a 554 greeting the server "MUST still wait for
    # the client to send a QUIT": the client may send that, and nothing else.
    (_C.GREETING, GREETING, "5", _C.NO_SERVICE),
    (_C.NO_SERVICE, "QUIT", "*", _C.CLOSED),
    *[
        (s, verb, "2", _C.READY)
        for verb in ("HELO", "EHLO", "LHLO")
        for s in _CLIENT_COMMAND_STATES
    ],
    (_C.READY, "MAIL", "2", _C.MAIL),
    (_C.MAIL, "RCPT", "2", _C.RCPT),
    (_C.RCPT, "RCPT", "2", _C.RCPT),
    (_C.RCPT, "DATA", "3", _C.DATA),
    (_C.DATA, END_OF_DATA, "*", _C.READY),
    (_C.RCPT, "BDAT", "2", _C.BDAT),
    (_C.RCPT, "BDAT", "4", _C.READY),
    (_C.RCPT, "BDAT", "5", _C.READY),
    (_C.BDAT, "BDAT", "2", _C.BDAT),
    (_C.BDAT, "BDAT", "4", _C.READY),
    (_C.BDAT, "BDAT", "5", _C.READY),
    (_C.RCPT, "BDAT LAST", "*", _C.READY),
    (_C.BDAT, "BDAT LAST", "*", _C.READY),
    (_C.HELLO, "RSET", "2", _C.HELLO),
    *[(s, "RSET", "2", _C.READY) for s in (_C.READY, _C.MAIL, _C.RCPT, _C.BDAT)],
    *[
        (s, verb, "*", s)
        for verb in ("NOOP", "HELP", "VRFY", "EXPN")
        for s in _CLIENT_COMMAND_STATES
    ],
    *[(s, "QUIT", "*", _C.CLOSED) for s in _CLIENT_COMMAND_STATES],
    (_C.READY, "STARTTLS", "2", _C.STARTTLS),
    (_C.STARTTLS, TLS_ESTABLISHED, "*", _C.HELLO),
    (_C.READY, "AUTH", "3", _C.AUTH),
    (_C.AUTH, AUTH_RESPONSE, "3", _C.AUTH),
    (_C.AUTH, AUTH_RESPONSE, "2", _C.READY),
    (_C.AUTH, AUTH_RESPONSE, "4", _C.READY),
    (_C.AUTH, AUTH_RESPONSE, "5", _C.READY),
)

_CLIENT_TABLE, _CLIENT_LEGAL = _index(CLIENT_TRANSITIONS)


def client_is_legal(state: ClientState, trigger: str) -> bool:
    """Whether the client may send ``trigger`` in ``state``."""
    return (state, trigger) in _CLIENT_LEGAL


def client_next(state: ClientState, trigger: str, code: int) -> ClientState:
    """The state after the server answered ``trigger`` with ``code``."""
    if code == 421:
        return ClientState.CLOSED
    outcome = _DIGITS[code // 100]
    target = _CLIENT_TABLE.get((state, trigger, outcome))
    if target is None:
        target = _CLIENT_TABLE.get((state, trigger, "*"), state)
    assert isinstance(target, ClientState)
    return target
