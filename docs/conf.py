"""Sphinx configuration: API reference from docstrings, pages in Markdown."""

from __future__ import annotations

project = "SMTP toolkit"
author = "The SMTP toolkit authors"
copyright = "2026, the SMTP toolkit authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxcontrib.mermaid",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "README.md"]
html_theme = "furo"
html_title = "SMTP toolkit"
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# No network here or in CI: no intersphinx inventories to fetch.
