"""The README's example does what the README says."""

from __future__ import annotations

import re
from pathlib import Path

import smtp_message

README = Path(__file__).parents[1] / "README.md"


def test_readme_example_runs_and_its_comments_hold() -> None:
    """The ten-line session of the README, run as written (RFC 5321 D.1)."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert code is not None
    printed: list[object] = []
    namespace = {"print": printed.append, "__name__": "readme"}
    exec(code[1], namespace)
    out = namespace["out"]
    assert isinstance(out, bytes)
    assert out.startswith(b"220 mx.example ESMTP ready\r\n")
    assert out.endswith(b"250 2.0.0 Message accepted\r\n")
    assert printed == [smtp_message.BodyChunk(b"Subject: hi\r\n\r\n.leading dot\r\n")]
    assert len(b"Subject: hi\r\n\r\n.leading dot\r\n") == 29
