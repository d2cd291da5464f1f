"""EHLO extension lists (RFC 5321 4.1.1.1), and the package's public names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import smtp_message
from smtp_message import Ehlo, Extensions, Reply, ServerConnection, ServerSettings


def test_extensions_from_ehlo_reply() -> None:
    """RFC 5321 4.1.1.1: ehlo-line = ehlo-keyword *( SP ehlo-param ); the
    first line is the greeting; keywords are case-insensitive."""
    reply = Reply(
        250,
        None,
        [
            "mx.example Hello",
            "pipelining",
            "SIZE 35882577",
            "AUTH PLAIN login XOAUTH2",
            "8BITMIME",
            "X-EXPS=LOGIN",
            "DSN",
        ],
    )
    ext = Extensions.from_reply(reply)
    assert ext.pipelining
    assert ext.size == 35882577
    assert ext.auth == {"PLAIN", "LOGIN", "XOAUTH2"}
    assert ext.eightbitmime
    assert ext.dsn
    assert "x-exps=login" not in ext  # not a keyword: ignored
    assert not ext.chunking
    assert not ext.smtputf8
    assert ext.params("size") == ("35882577",)
    assert ext.params("CHUNKING") is None
    assert "Pipelining" in ext
    assert 42 not in ext


def test_extensions_from_reply_is_liberal() -> None:
    """RFC 5321 4.1.1.1 read liberally (a client takes what it can): bad
    lines and bad parameters are skipped, the first mention wins."""
    reply = Reply(
        250,
        None,
        ["mx", "", "-BAD", "SIZE abc", "SIZE 10", "AUTH PLAIN", "STARTTLS"],
    )
    ext = Extensions.from_reply(reply)
    assert ext.size == 0  # RFC 1870: no usable number: no fixed limit
    assert [k for k, _ in ext.entries] == ["SIZE", "AUTH", "STARTTLS"]
    assert Extensions.from_reply(Reply(250, None, "mx only")).entries == ()


def test_extensions_construction_is_validated() -> None:
    """RFC 5321 4.1.1.1: what a server advertises must be well-formed."""
    with pytest.raises(ValueError, match="keyword"):
        Extensions([("BAD KEY", [])])
    with pytest.raises(ValueError, match="twice"):
        Extensions([("SIZE", []), ("size", ["1"])])
    with pytest.raises(ValueError, match="parameter"):
        Extensions([("AUTH", ["PLAIN LOGIN"])])
    assert Extensions([("auth", ["PLAIN", "LOGIN"])]).lines() == ["AUTH PLAIN LOGIN"]


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,10}", fullmatch=True),
            st.lists(st.from_regex(r"[\x21-\x7e]{1,8}", fullmatch=True), max_size=3),
        ),
        max_size=8,
        unique_by=lambda kv: kv[0],
    )
)
def test_extensions_round_trip_through_an_ehlo_reply(
    entries: list[tuple[str, list[str]]],
) -> None:
    """What a server lists, a client reads back (RFC 5321 4.1.1.1)."""
    ext = Extensions(entries)
    reply = Reply(250, None, ["mx.example", *ext.lines()])
    assert Extensions.from_reply(reply) == ext


def test_server_settings_advertise_what_they_enforce() -> None:
    """The EHLO list follows the settings and the session (RFC 3207 4: no
    STARTTLS under TLS; RFC 4954 4: AUTH only where offered)."""
    settings = ServerSettings(
        starttls=True,
        auth_mechanisms=("PLAIN",),
        requiretls=True,
        max_message_size=None,
    )
    clear = settings.extensions(tls_active=False, authenticated=False)
    assert clear.starttls
    assert clear.auth == frozenset()
    assert not clear.requiretls
    assert clear.size == 0
    secure = settings.extensions(tls_active=True, authenticated=False)
    assert not secure.starttls
    assert secure.auth == {"PLAIN"}
    assert secure.requiretls
    done = settings.extensions(tls_active=True, authenticated=True)
    assert done.auth == frozenset()


def test_public_names_are_exported_from_the_package() -> None:
    """STYLE (trio's test_exports): every public name is in ``__all__``,
    importable from ``smtp_message``, and says so in its ``__module__``."""
    for name in smtp_message.__all__:
        obj = getattr(smtp_message, name)
        module = getattr(obj, "__module__", None)
        if isinstance(obj, type):
            assert module == "smtp_message", (name, module)
    public = {n for n in dir(smtp_message) if not n.startswith("_")}
    assert public - set(smtp_message.__all__) <= {"annotations", "contextlib"}
    assert smtp_message.replies.BAD_SEQUENCE.code == 503


_LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", fullmatch=True)
_DOMAIN = st.lists(_LABEL, min_size=1, max_size=6).map(".".join).filter(lambda d: len(d) <= 255)


@given(
    hostname=_DOMAIN,
    client=st.one_of(_DOMAIN, st.sampled_from(["[192.0.2.1]", "[IPv6:2001:db8::1]"])),
    tls_active=st.booleans(),
    starttls=st.booleans(),
)
def test_the_ehlo_reply_is_what_its_lines_serialise_to(
    hostname: str, client: str, tls_active: bool, starttls: bool
) -> None:
    """RFC 5321 4.1.1.1 and 4.5.3.1.5: the EHLO reply built from cached
    extension lines is exactly the reply its lines make, octet for octet,
    for short and long (wrapped) names alike; and every line fits in 512
    octets."""
    settings = ServerSettings(hostname=hostname, starttls=starttls)
    conn = ServerConnection(settings, tls_active=tls_active)
    reply = conn.ehlo_reply(Ehlo(client))
    rebuilt = Reply(reply.code, reply.enhanced, reply.lines)
    assert reply == rebuilt
    assert reply.to_bytes() == rebuilt.to_bytes()
    assert reply.lines[0] == f"{hostname} Hello {client}"
    lines = reply.to_bytes().split(b"\r\n")[:-1]
    assert all(len(line) + 2 <= 512 for line in lines)
    assert (b"STARTTLS" in reply.to_bytes()) == (starttls and not tls_active)
    # The greeting is cached too, and still names the server.
    assert conn.greeting().to_bytes() == f"220 {hostname} ESMTP ready\r\n".encode()
