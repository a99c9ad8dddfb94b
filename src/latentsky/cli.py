"""The ``latentsky`` command.

Each sub-command lives in its own module of :mod:`latentsky.commands`, which
defines ``register(subparsers)`` (adds its parser and sets ``func``); the
modules are discovered, so adding a command touches no other file.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from latentsky import __version__, commands
from latentsky.exceptions import LatentskyError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="latentsky", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"latentsky {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"latentsky.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except LatentskyError as err:
        print(f"latentsky {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
