"""smtp_mta: the reference MTA built from the toolkit's packages.

The ``smtp-mta`` command's subcommands live in one module each; the
command line is assembled in :mod:`smtp_mta._cli`.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
