"""The ``latentsky`` command.

Each sub-command lives in its own module of :mod:`latentsky.commands`, which
defines ``register(subparsers)`` (adds its parser and sets ``func``); the
modules are discovered, so adding a command touches no other file.

Exit status: 0 success, 1 some work failed (the command says what and how to
retry), 2 bad input or a refused output folder, 130 interrupted (Ctrl-C: the
message says what was kept and how to resume).  No input a user can give
ends in a traceback; ``-v`` shows one for unexpected errors.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from latentsky import __version__, commands
from latentsky.exceptions import LatentskyError

log = logging.getLogger("latentsky.cli")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="latentsky", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"latentsky {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debugging details")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"latentsky.commands.{info.name}").register(sub)
    return parser


def _partial_hint(out) -> str:
    from latentsky.store.output import temporaries

    found = temporaries(out, ("partial",)) if out is not None else []
    return f" (in {found[0]})" if found else ""


def interrupted_hint(args) -> str:
    """What an interrupted ``args.command`` kept, and how to resume it."""
    command, out = args.command, getattr(args, "out", None)
    if command == "ingest":
        return (
            f"nothing was written to {out}: a store is moved into place only when complete, and an earlier "
            "store there is unchanged. Run the same command again to start over."
        )
    if command == "embed":
        return (
            f"the chunks finished so far are kept beside {out}{_partial_hint(out)}. Run the same command again "
            "to resume from them (--restart starts afresh)."
        )
    if command == "pipeline":
        return (
            f"the finished stages are kept in {out}, and the finished chunks of the stage under way beside its "
            "output. Run the same command again to resume."
        )
    if command == "download":
        dest = getattr(args, "dest", None) or getattr(args, "table", None)
        return (
            f"the verified files are kept in {dest}, and partly downloaded ones (*.part) resume where they "
            "stopped. Run the same command again to go on."
        )
    if command in ("app", "archive", "classroom"):
        return "stopped."
    return "nothing half-written was kept. Run the same command again."


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"\nlatentsky {args.command}: interrupted; {interrupted_hint(args)}", file=sys.stderr)
        return 130
    except LatentskyError as err:
        log.debug("traceback", exc_info=True)
        print(f"latentsky {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the file system said no: disk full, permission denied, a file gone
        log.debug("traceback", exc_info=True)
        print(f"latentsky {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:
        if args.verbose:
            raise
        print(
            f"latentsky {args.command}: unexpected error ({type(err).__name__}: {err}); run with -v for the "
            "details, and please report it",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
