"""``microcall load URL``: put load on a service and say honestly what it did.

Open loop by default (``--rate``: calls are due on a fixed schedule and
their latency counts from when they were due, as in wrk2), closed loop with
``--concurrency``. ``--compare single,hedged,retry:3`` runs each strategy in
turn against the same target and shows them side by side with the extra
load each added. A live view on stderr while it runs; a table (or
``--json``) on stdout at the end; ``--plot FILE.html`` for a chart.

Modules: :mod:`._generator` makes the calls, :mod:`._stats` keeps mergeable
figures, :mod:`._workers` spreads a run over processes, :mod:`._report`
draws the live view and the table, :mod:`._plot` writes the chart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from microcall.cli import _common, _options
from microcall.cli._common import CliError
from microcall.cli._items import parse_items
from microcall.cli.call import METHODS

DEFAULT_RATE = 50.0
DEFAULT_DURATION = 10.0
DEFAULT_CONNECTIONS = 100


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``load`` subcommand."""
    parser = commands.add_parser(
        "load",
        help="put load on a URL at a fixed rate (open loop) or concurrency, and report",
        description="Call URL at --rate calls a second (open loop: latency counts from when "
        "each call was due, so neither a stalled server nor a late generator can hide its "
        "delay) or with --concurrency calls in flight (closed loop), for --duration seconds.",
        epilog="Example: microcall load http://127.0.0.1:8080/books --rate 500 --duration 10 "
        "--compare single,hedged:0.02,retry:3 --plot load.html",
    )
    parser.add_argument("url", metavar="URL")
    parser.add_argument("items", nargs="*", metavar="ITEM", help="request items, as for get")
    parser.add_argument(
        "-m",
        "--method",
        default="GET",
        type=str.upper,
        choices=[method.upper() for method in METHODS],
        help="HTTP method (default %(default)s)",
    )
    parser.add_argument("--raw", metavar="TEXT", help="send TEXT as the body")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--rate",
        type=_rate,
        help=f"calls a second, open loop (the default, at {DEFAULT_RATE:g}/s)",
    )
    mode.add_argument(
        "-c",
        "--concurrency",
        type=_options.positive_int,
        help="calls in flight at once, closed loop (latency counts from each send)",
    )
    parser.add_argument(
        "-d",
        "--duration",
        type=_options.seconds,
        default=DEFAULT_DURATION,
        metavar="SECONDS",
        help="how long each run lasts (default %(default)s)",
    )
    parser.add_argument(
        "--compare",
        metavar="S1,S2,...",
        help="run each strategy in turn (e.g. single,hedged,retry:3) and show them side by side",
    )
    parser.add_argument(
        "--workers",
        type=_options.positive_int,
        default=1,
        help="processes sharing the load, results merged exactly (default %(default)s)",
    )
    parser.add_argument(
        "--connections",
        type=_options.positive_int,
        default=DEFAULT_CONNECTIONS,
        help="connections per process (default %(default)s)",
    )
    parser.add_argument("--plot", type=Path, metavar="FILE.html", help="write a chart there")
    parser.add_argument("--json", action="store_true", help="one JSON document")
    parser.add_argument(
        "--pretty", action="store_true", help="the table even when stdout is not a terminal"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no live view")
    _options.add_call_options(parser)
    parser.set_defaults(command=run)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be more than 0 calls a second, got {text}")
    return value


def run(arguments: argparse.Namespace) -> int:
    """Run the load (each strategy in turn with --compare) and report."""
    from microcall.cli.load import _report
    from microcall.cli.load._generator import Plan
    from microcall.cli.load._workers import Interrupted, run_load

    url = _options.parse_url(arguments.url)
    items = parse_items(arguments.items)
    target = _options.Target.of(url, arguments.replica)
    spellings = (
        [text.strip() for text in arguments.compare.split(",") if text.strip()]
        if arguments.compare
        else [arguments.strategy]
    )
    if not spellings:
        raise CliError("--compare needs at least one strategy")
    for spelling in spellings:
        _options.parse_strategy(spelling)  # refuse a bad one before any load is sent
    if arguments.raw is not None and items.json is not None:
        raise CliError("give --raw or JSON fields (key=value, key:=json), not both")
    if arguments.plot is not None and arguments.plot.suffix.lower() not in (".html", ".htm"):
        raise CliError(f"--plot writes HTML: give a FILE.html, not {arguments.plot}")
    rate = arguments.rate
    if rate is None and arguments.concurrency is None:
        rate = DEFAULT_RATE
    if arguments.concurrency is not None and arguments.concurrency < arguments.workers:
        raise CliError("--concurrency must be at least --workers")
    plan = Plan(
        method=arguments.method,
        bases=target.bases,
        path=target.path,
        headers=items.headers,
        params=items.params,
        json=items.json,
        content=None if arguments.raw is None else arguments.raw.encode(),
        deadline=arguments.deadline,
        priority=arguments.priority,
        idempotent=arguments.idempotent,
        rate=rate,
        concurrency=arguments.concurrency,
        duration=arguments.duration,
        connections=arguments.connections,
    )
    live = not arguments.quiet and sys.stderr.isatty()
    view = _report.LiveView(plan, enabled=live)
    runs = []
    interrupted = False
    for spelling in spellings:
        strategy_plan = dataclasses.replace(plan, strategy=spelling)
        view.start(spelling)
        try:
            stats = run_load(strategy_plan, arguments.workers, view.update)
        except Interrupted as stop:
            stats, interrupted = stop.stats, True
        finally:
            view.stop()
        runs.append(_report.Run(strategy=spelling, stats=stats))
        if live:  # the live view is gone: one line stays in its place
            print(
                f"{spelling}: {stats.calls:,} calls, {stats.failed:,} failed",
                file=sys.stderr,
                flush=True,
            )
        if interrupted:
            break
    title = f"{plan.method} {url}: {_report.asked(plan)} for {plan.duration:g} s" + (
        f" over {arguments.workers} workers" if arguments.workers > 1 else ""
    )
    if arguments.plot is not None:
        from microcall.cli.load import _plot

        _plot.write(arguments.plot, runs, title=title)
    if _common.wants_json(arguments.json, arguments.pretty):
        document = _report.document(runs, plan, arguments.workers, str(url))
        document["interrupted"] = interrupted
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        console = _common.console()
        console.print(_report.table(runs, plan, title))
        for run in runs:
            if run.stats.errors:
                kinds = ", ".join(f"{k} {n:,}" for k, n in run.stats.errors.most_common())
                console.print(f"{run.strategy} errors: {kinds}", highlight=False)
            warning = _report.lag_warning(run.stats)
            if warning:
                console.print(f"{run.strategy}: {warning}", style="bold red", highlight=False)
        if arguments.plot is not None:
            console.print(f"plot written to {arguments.plot}", highlight=False)
        if interrupted:
            console.print(
                "interrupted: the figures cover the calls that ended before", highlight=False
            )
    sys.stdout.flush()
    if not interrupted and all(run.stats.ok == 0 for run in runs):
        # Said after the report, which shows what failed and how: a run
        # against a service that is down is when those figures matter.
        kinds = ", ".join(
            sorted({kind for run in runs for kind in run.stats.errors}) or ["no calls"]
        )
        raise CliError(f"no call to {url} succeeded ({kinds})", _common.EXIT_NO_ANSWER)
    return _common.EXIT_INTERRUPTED if interrupted else _common.EXIT_OK
