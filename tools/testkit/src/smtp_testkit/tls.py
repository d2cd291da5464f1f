"""TLS for tests: a throw-away CA (trustme) and contexts that trust it.

The fixtures are registered by :mod:`smtp_testkit.plugin`, so every
package's tests can ask for them by name:

- ``tls_ca``: the :class:`trustme.CA` of the test session;
- ``tls_server_context``: a server :class:`ssl.SSLContext` holding a
  certificate for ``localhost``, ``127.0.0.1`` and ``::1``;
- ``tls_client_context``: a client context that verifies against the CA
  (host names checked, as a real client does).
"""

from __future__ import annotations

import ssl

import pytest
import trustme

__all__ = [
    "CERT_NAMES",
    "client_context",
    "server_context",
    "tls_ca",
    "tls_client_context",
    "tls_server_cert",
    "tls_server_context",
]

#: The names the server certificate is issued for: what tests connect to.
CERT_NAMES = ("localhost", "127.0.0.1", "::1")


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    """A server context presenting ``cert``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts ``ca`` and checks host names."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The certificate authority of the whole test session."""
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_server_cert(tls_ca: trustme.CA) -> trustme.LeafCert:
    """A certificate for :data:`CERT_NAMES`, signed by ``tls_ca``."""
    return tls_ca.issue_cert(*CERT_NAMES)


@pytest.fixture
def tls_server_context(tls_server_cert: trustme.LeafCert) -> ssl.SSLContext:
    """A fresh server context for one test (tests may change it)."""
    return server_context(tls_server_cert)


@pytest.fixture
def tls_client_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A fresh client context for one test, trusting ``tls_ca``."""
    return client_context(tls_ca)
