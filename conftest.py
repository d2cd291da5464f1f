"""Pytest settings shared by every package's tests.

Each package's tests run from the repository root (``nox -s tests``), so this
file applies to all of them: the anyio backends and the hypothesis profiles.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# "ci" is the default: enough examples to catch regressions in a few seconds
# per property.  "fuzz" is what `nox -s fuzz -- SECONDS` runs smtp-message's
# properties with, after the atheris targets: as many examples as fit in
# about SECONDS (HYPOTHESIS_FUZZ_SECONDS) for the whole run.  Measured: its
# twenty-odd properties draw about 500 examples a second between them, so
# each gets 25 per second of the budget.
FUZZ_EXAMPLES_PER_SECOND = 25
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=max(
        10, int(float(os.environ.get("HYPOTHESIS_FUZZ_SECONDS", "60")) * FUZZ_EXAMPLES_PER_SECOND)
    ),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every anyio test on both backends.

    Overridden explicitly (rather than relying on the plugin's default) so a
    missing trio makes the trio half of every async test fail, not skip.
    """
    backend: str = request.param
    return backend
