"""The public names (as trio's test_exports guards its own)."""

from __future__ import annotations

import smtp_queue


def test_public_names_live_in_the_package() -> None:
    """Every public name is importable from smtp_queue and says so."""
    for name in smtp_queue.__all__:
        obj = getattr(smtp_queue, name)
        module = getattr(obj, "__module__", "smtp_queue")
        if isinstance(obj, type) or callable(obj):
            assert module == "smtp_queue", name
    assert sorted(smtp_queue.__all__) == smtp_queue.__all__


def test_no_private_module_leaks_into_all() -> None:
    """Only public names are exported."""
    assert not [n for n in smtp_queue.__all__ if n.startswith("_")]
