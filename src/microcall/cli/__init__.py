"""The ``microcall`` command.

One module per subcommand, each with ``add_parser(s)(commands)`` and a
``run(arguments) -> int`` that returns the exit status: :mod:`~microcall.cli.call`
(get, post, put, patch, delete, head), :mod:`~microcall.cli.grpc`,
:mod:`~microcall.cli.load` and :mod:`~microcall.cli.demo`. :func:`main`
parses, dispatches, and turns every expected failure into one line on
stderr and an exit status (:mod:`microcall.cli._common` lists them); a
closed stdout ends the command quietly. A subcommand imports what it
needs (rich, grpc) when it runs, so ``microcall --help`` stays quick.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, cast

from microcall.cli import _common
from microcall.cli._common import CliError
from microcall.errors import ConfigurationError, UsageError

Command = Callable[[argparse.Namespace], int]

# Optional packages a subcommand may need, and the extra that brings each.
_EXTRAS = {
    "rich": "cli",
    "grpc": "grpc",
    "grpc_reflection": "grpc",
    "google": "grpc",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``microcall`` command with ``argv`` (default: the process's arguments)."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    command: Command | None = getattr(arguments, "command", None)
    if command is None:
        parser.print_help()
        return _common.EXIT_USAGE
    try:
        return command(arguments)
    except CliError as error:
        return _fail(str(error), error.status)
    except (ConfigurationError, UsageError) as error:
        return _fail(str(error), _common.EXIT_USAGE)
    except ModuleNotFoundError as error:
        extra = _EXTRAS.get((error.name or "").partition(".")[0])
        if extra is None:
            raise
        return _fail(f"this needs {error.name}: pip install 'microcall[{extra}]'", 2)
    except KeyboardInterrupt:
        return _common.EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return _common.EXIT_BROKEN_PIPE


def _fail(message: str, status: int) -> int:
    print(f"microcall: error: {_common.one_line(message)}", file=sys.stderr, flush=True)
    return status


def _silence_stdout() -> None:
    # Whatever is still buffered would fail again when the interpreter flushes
    # stdout at exit and print a second traceback: point stdout at /dev/null.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass


class _Parser(argparse.ArgumentParser):
    """argparse's parser, reporting bad input in one line rather than usage and error."""

    def error(self, message: str) -> NoReturn:
        self.exit(_common.EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    from microcall import __version__
    from microcall.cli import bookstore, call, demo, grpc, load

    parser = _Parser(
        prog="microcall",
        description="Fast, resilient calls between Python services: one call with the "
        "timeline of its attempts, a gRPC call, a load test, a demo.",
    )
    parser.add_argument("--version", action="version", version=f"microcall {__version__}")
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(title="commands", metavar="COMMAND"),
    )
    call.add_parsers(commands)
    grpc.add_parser(commands)
    load.add_parser(commands)
    demo.add_parser(commands)
    bookstore.add_parser(commands)
    return parser
