"""``microcall demo``: single attempt, retries and hedging against a heavy latency tail.

By default the calls go to a backend the demo starts on 127.0.0.1
(:mod:`microcall.demo.backend`), whose latency has a heavy tail; ``--url``
aims them at one's own service instead. Progress goes to stderr, one bar
(or, when stderr is not a terminal, one line) per strategy; the table, or
with ``--json`` one JSON document, goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from microcall.cli import _common, _options
from microcall.cli._common import CliError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``demo`` subcommand."""
    from microcall.demo import tail

    demo = commands.add_parser(
        "demo",
        help="call a backend with a heavy latency tail: single attempt, retries, hedging",
        description=(
            "Start a backend on 127.0.0.1 whose latency has a heavy tail (or aim at --url), "
            "call it with a single attempt, with retries and with hedging, and print "
            "p50 / p99 / p99.9 and the extra load of each."
        ),
    )
    demo.add_argument(
        "--requests",
        type=_options.positive_int,
        default=tail.DEFAULT_REQUESTS,
        help="calls per strategy (default %(default)s)",
    )
    demo.add_argument(
        "--concurrency",
        type=_options.positive_int,
        default=tail.DEFAULT_CONCURRENCY,
        help="calls in flight at once (default %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=tail.DEFAULT_SEED,
        help="seed of the backend's latency draws (default %(default)s)",
    )
    demo.add_argument(
        "--url",
        help="call this URL (your own service) instead of the demo's backend; "
        "the extra load is then counted from the attempts sent",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON document")
    demo.set_defaults(command=run)


def run(arguments: argparse.Namespace) -> int:
    """Run the scenario, showing progress, then print the table or the JSON."""
    from microcall.demo.table import print_table
    from microcall.demo.tail import Scenario, run_against, run_scenario

    scenario = Scenario(
        requests=arguments.requests, concurrency=arguments.concurrency, seed=arguments.seed
    )
    url = None if arguments.url is None else str(_options.parse_url(arguments.url))
    where = f"{url}" if url else f"a backend on 127.0.0.1 answering {scenario.profile.describe()}"
    print(
        f"Calling {where}; {scenario.requests} calls per strategy, "
        f"{scenario.concurrency} at a time...",
        file=sys.stderr,
        flush=True,
    )
    started = time.perf_counter()
    with _progress([label for label, _ in scenario.strategies]) as progress:
        if url is None:
            rows = asyncio.run(run_scenario(scenario, progress))
        else:
            rows = asyncio.run(run_against(url, scenario, progress))
    took = time.perf_counter() - started
    if all(row.failed == row.calls for row in rows):
        raise CliError(f"no call to {where} succeeded", _common.EXIT_NO_ANSWER)
    if arguments.json:
        document: dict[str, Any] = {
            "target": url or "demo backend",
            "profile": None if url else scenario.profile.describe(),
            "requests": scenario.requests,
            "concurrency": scenario.concurrency,
            "seconds": took,
            "load_counted_by": "client" if url else "server",
            "strategies": [
                {
                    "strategy": row.strategy,
                    "calls": row.calls,
                    "p50": row.p50,
                    "p99": row.p99,
                    "p999": row.p999,
                    "failed": row.failed,
                    "requests_received": row.server_requests,
                    "cancelled": row.server_cancelled,
                    "extra_load": row.extra_load,
                }
                for row in rows
            ],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        sys.stdout.flush()
        return 0
    title = f"{scenario.requests} calls per strategy, measured in {took:.1f} s"
    print_table(rows, title=title, out=sys.stdout, console=_common.console())
    sys.stdout.flush()
    return 0


@contextmanager
def _progress(labels: list[str]) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback: rich bars on a terminal, a line per finished strategy otherwise."""
    if not sys.stderr.isatty():

        def line(label: str, done: int, total: int) -> None:
            if done == total:
                print(f"  {label}: {total} calls done", file=sys.stderr, flush=True)

        yield line
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
    ) as bars:
        tasks = {label: bars.add_task(label, total=None) for label in labels}

        def update(label: str, done: int, total: int) -> None:
            bars.update(tasks[label], completed=done, total=total)

        yield update
