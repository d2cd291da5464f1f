"""The ``smtp-mta`` command line: one subcommand per module."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Protocol

from . import __version__, _sink

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


class Subcommand(Protocol):
    """What a subcommand module provides."""

    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        """Add its parser; set ``func`` (returning the exit status) as a default."""


#: Subcommand modules, in the order ``--help`` lists them.
SUBCOMMANDS: list[Subcommand] = [_sink]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="smtp-mta",
        description="The reference mail transfer agent of the SMTP toolkit.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``smtp-mta``; return its exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
