"""The public API: every name in ``__all__`` exists and says where it lives."""

from __future__ import annotations

import inspect

import smtp_client


def test_exports_resolve_and_name_the_package() -> None:
    """As trio's test_exports: users import from ``smtp_client``, nowhere else."""
    for name in smtp_client.__all__:
        obj = getattr(smtp_client, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__ == "smtp_client", name


def test_exports_have_docstrings() -> None:
    """Public API has docstrings (the documentation is generated from them)."""
    for name in smtp_client.__all__:
        obj = getattr(smtp_client, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name


def test_no_private_name_is_exported() -> None:
    """Implementation lives in ``_private`` modules; only their API is public."""
    assert all(not name.startswith("_") for name in smtp_client.__all__)
    assert sorted(smtp_client.__all__) == sorted(set(smtp_client.__all__))
