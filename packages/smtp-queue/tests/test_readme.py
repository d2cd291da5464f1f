"""The README's example does what the README says."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_example_runs_and_its_comments_hold() -> None:
    """The README's queue-and-worker example, run as written (RFC 5321 4.5.4.1:
    a transient failure stays queued for a later retry)."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert code is not None
    printed: list[tuple[object, ...]] = []
    namespace = {"print": lambda *a: printed.append(a), "__name__": "readme"}
    exec(code[1], namespace)
    assert len(printed) == 1
    same_id, size, status = printed[0]
    assert same_id is True
    assert size == 48
    assert str(status) == "RecipientStatus.PENDING"
