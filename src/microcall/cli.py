"""The ``microcall`` command.

Each subcommand is a function taking the parsed arguments and returning an
exit status; :func:`main` parses and dispatches. A subcommand imports what it
needs when it runs, so ``microcall --help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence

from microcall.errors import ConfigurationError

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``microcall`` command with ``argv`` (default: the process's arguments)."""
    parser = _parser()
    arguments = parser.parse_args(argv)
    command: Command | None = getattr(arguments, "command", None)
    if command is None:
        parser.print_help()
        return 2
    try:
        return command(arguments)
    except ConfigurationError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microcall", description="Fast, resilient calls between Python services."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_demo(commands)
    return parser


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from microcall.demo import tail

    demo = commands.add_parser(
        "demo",
        help="call a backend with a heavy latency tail: single attempt, retries, hedging",
        description=(
            "Start a backend on 127.0.0.1 whose latency has a heavy tail, call it with a "
            "single attempt, with retries and with hedging, and print p50 / p99 / p99.9 "
            "and the extra load of each."
        ),
    )
    demo.add_argument(
        "--requests",
        type=_positive_int,
        default=tail.DEFAULT_REQUESTS,
        help="calls per strategy (default %(default)s)",
    )
    demo.add_argument(
        "--concurrency",
        type=_positive_int,
        default=tail.DEFAULT_CONCURRENCY,
        help="calls in flight at once (default %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=tail.DEFAULT_SEED,
        help="seed of the backend's latency draws (default %(default)s)",
    )
    demo.set_defaults(command=_demo)


def _demo(arguments: argparse.Namespace) -> int:
    from microcall.demo.table import print_table
    from microcall.demo.tail import Scenario, run_scenario

    scenario = Scenario(
        requests=arguments.requests, concurrency=arguments.concurrency, seed=arguments.seed
    )
    print(
        f"Backend on 127.0.0.1 answering {scenario.profile.describe()}; "
        f"{scenario.requests} calls per strategy, {scenario.concurrency} at a time...",
        flush=True,
    )
    started = time.perf_counter()
    rows = asyncio.run(run_scenario(scenario))
    title = (
        f"{scenario.requests} calls per strategy, measured in {time.perf_counter() - started:.1f} s"
    )
    print_table(rows, title=title, out=sys.stdout)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
