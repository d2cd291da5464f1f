"""Pytest plugin of the toolkit's test suites."""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str) -> str:
    """Return the path of ``name``; fail under CI, skip elsewhere, if missing.

    A test that needs a real program must fail, never skip, when it is
    missing in CI: a skip there would hide a missing install step.
    """
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if path is None:
        message = f"{name} is not installed (see .ci/run)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


# Fixtures other modules define, registered here (the plugin's namespace is
# what pytest scans).
from smtp_testkit.tls import (  # noqa: E402, F401
    tls_ca,
    tls_client_context,
    tls_server_cert,
    tls_server_context,
)
