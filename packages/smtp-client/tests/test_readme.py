"""The README's example is valid code against the public API."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import smtp_client

README = Path(__file__).parents[1] / "README.md"


def test_readme_example_uses_the_public_api() -> None:
    """The example compiles, and every name it imports from smtp_client exists.

    (It sends to example.com's MX, so it is not run: tests stay on loopback.)
    """
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert code is not None
    tree = ast.parse(code[1])
    compile(tree, "README.md", "exec")
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "smtp_client"
        for alias in node.names
    ]
    assert imported == ["Client", "Envelope", "MXDomain"]
    assert all(name in smtp_client.__all__ for name in imported)
