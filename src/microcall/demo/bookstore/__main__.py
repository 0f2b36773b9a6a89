"""``python -m microcall.demo.bookstore up | scenario | chaos``: run the bookstore on this machine.

* ``up``: start every service on 127.0.0.1 (two Recommendations replicas),
  print the URLs, run until Ctrl-C;
* ``scenario``: start them, run the scripted fault scenario, print per phase
  what the Marketplace's users saw, write an HTML report, stop;
* ``chaos SERVICE [--latency S] [--error-rate R] [--route R] [--kill]``:
  flip a fault on a running ``up`` (SERVICE: ``catalog``,
  ``recommendations-1``, ``recommendations-2``, ``marketplace``, or a URL);
  no fault given: heal it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from microcall.demo.bookstore import scenario
from microcall.demo.bookstore.stack import start_stack
from microcall.testing.services import ServiceGraph, inject

# Where ``up`` writes its services' URLs, for ``chaos`` to find them.
STATE_FILE = Path(tempfile.gettempdir()) / "microcall-bookstore.json"


def _up(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="bookstore-logs-"))
    with ServiceGraph(logs) as graph:
        stack = start_stack(graph, replicas=args.replicas, plain=args.plain)
        admin = {"catalog": stack.admin("catalog"), "marketplace": stack.marketplace}
        admin.update(
            {
                f"recommendations-{i}": stack.admin(f"recommendations-{i}")
                for i in range(1, args.replicas + 1)
            }
        )
        STATE_FILE.write_text(json.dumps(admin))
        print("The bookstore is up:")
        for name, url in stack.urls().items():
            print(f"  {name:<28} {url}")
        print(f"Logs in {logs}. Ctrl-C stops it.", flush=True)
        stopping: list[int] = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
        try:
            while not stopping:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        STATE_FILE.unlink(missing_ok=True)
    return 0


def _scenario(args: argparse.Namespace) -> int:
    logs = Path(tempfile.mkdtemp(prefix="bookstore-logs-"))
    started = time.monotonic()
    with ServiceGraph(logs) as graph:
        stack = start_stack(graph, replicas=2, plain=True)
        print(f"The bookstore is up ({time.monotonic() - started:.1f} s); logs in {logs}")
        print(scenario.HEADER)
        results = scenario.run(stack, phase_seconds=args.phase_seconds, rate=args.rate)
    report = scenario.write_report(results, Path(args.report))
    print(f"Report: {report.resolve()} ({time.monotonic() - started:.0f} s in all)")
    return 0


def _chaos(args: argparse.Namespace) -> int:
    if args.service.startswith("http"):
        url = args.service
    else:
        try:
            url = json.loads(STATE_FILE.read_text())[args.service]
        except (FileNotFoundError, KeyError, ValueError):
            print(
                f"no running bookstore with a service {args.service!r} ({STATE_FILE})",
                file=sys.stderr,
            )
            return 2
    answer = inject(
        url, latency=args.latency, error_rate=args.error_rate, route=args.route, kill=args.kill
    )
    print(json.dumps(answer) if answer is not None else f"{args.service} told to exit")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the subcommand and run it."""
    parser = argparse.ArgumentParser(
        prog="python -m microcall.demo.bookstore", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start everything and print the URLs")
    up.add_argument("--replicas", type=int, default=2)
    up.add_argument("--plain", action="store_true", help="also a Marketplace with a plain client")
    run = commands.add_parser("scenario", help="run the scripted fault scenario and exit")
    run.add_argument(
        "--report", default=os.environ.get("BOOKSTORE_REPORT", "bookstore-report.html")
    )
    run.add_argument("--phase-seconds", type=float, default=scenario.DEFAULT_PHASE_SECONDS)
    run.add_argument("--rate", type=float, default=scenario.DEFAULT_RATE, help="pages per second")
    chaos = commands.add_parser("chaos", help="flip a fault on a running bookstore")
    chaos.add_argument("service")
    chaos.add_argument("--latency", type=float, default=0.0)
    chaos.add_argument("--error-rate", type=float, default=0.0)
    chaos.add_argument("--route")
    chaos.add_argument("--kill", action="store_true")
    args = parser.parse_args(argv)
    handlers = {"up": _up, "scenario": _scenario, "chaos": _chaos}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
