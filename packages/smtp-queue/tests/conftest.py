"""Fixtures of the queue's tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from support import FakeClock

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"
