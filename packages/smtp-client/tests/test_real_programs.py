"""The real programs these tests use must be there: a missing one fails in CI.

A test that needs Postfix, Dovecot or dnsmasq and silently skips in CI
would hide a missing install step, and the client would go untested
against them (DESIGN.md, "Real components, not mocks").
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

import smtp_testkit.plugin
from smtp_testkit.dns import start_dnsmasq
from smtp_testkit.dovecot import start_dovecot
from smtp_testkit.plugin import require_program
from smtp_testkit.postfix import start_postfix

if TYPE_CHECKING:
    from collections.abc import Callable

MISSING = "smtp-toolkit-no-such-program"


def test_missing_program_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """CI=true: a missing program is a failure, never a skip."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        require_program(MISSING)


def test_missing_program_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a developer's machine without the program, the test is skipped."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=MISSING):
        require_program(MISSING)


@pytest.mark.parametrize(
    ("start", "program"),
    [(start_dnsmasq, "dnsmasq"), (start_dovecot, "dovecot"), (start_postfix, "postfix")],
    ids=["dnsmasq", "dovecot", "postfix"],
)
def test_every_real_server_fixture_requires_its_program(
    monkeypatch: pytest.MonkeyPatch, start: Callable[[], object], program: str
) -> None:
    """Each fixture's start function asks require_program for its binary
    before anything else, so under CI it fails when the binary is absent
    (here: made to look absent)."""
    asked: list[str] = []

    def absent(name: str) -> str:
        asked.append(name)
        return require_program(f"{MISSING}-{name}")

    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(smtp_testkit.plugin, "require_program", absent)
    with pytest.raises(pytest.fail.Exception, match=MISSING):
        start()
    assert asked == [program]


def test_the_real_programs_are_installed_here() -> None:
    """Under CI, the programs these tests drive are all present."""
    if os.environ.get("CI") != "true":
        pytest.skip("only checked under CI=true")
    for name in ("postfix", "dovecot", "dnsmasq", "doveadm", "postqueue"):
        assert require_program(name)
