"""CPU-heavy response hooks on threads or processes: ``python -m bench.hook_executor``.

A ``FuturesClient`` fetches a 300 KB JSON document (2,000 records) from nginx
and runs a CPU-bound response hook on each response: parse it, check and
total every record in Python (five passes), and digest a canonical dump,
about 16 ms of CPU per response. The hook runs on ``executor=``: a
``ThreadPoolExecutor`` of 1 or 2 threads, or a ``ProcessPoolExecutor`` of 1 or
2 processes. Reported: responses per second through the hook, the median of
``env.repeats`` rounds (the four rows once per round, so a change in the
machine's load hits them alike) with the range.

The hook holds the GIL almost all the time, so a second thread adds
nothing; a second process adds a core. What a process pool costs instead is
the trip: the response (body included) is pickled to the worker and back.

Nothing is pinned: the processes need both cores, and nginx sending a
static file (sendfile) takes little of them. ``run(env)`` returns the
markdown section; the ``measure`` subcommand is the client process it starts.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import BenchEnv
from bench._nginx import _free_port, _nginx
from bench._proc import run_json
from bench._stats import Spread

RECORDS = 2_000
PASSES = 5  # how many times the hook walks the records: sets its CPU cost
ROWS: tuple[tuple[str, int], ...] = (
    ("threads", 1),
    ("threads", 2),
    ("processes", 1),
    ("processes", 2),
)
# Calls kept in flight: enough that the hook pool never waits for the network.
IN_FLIGHT_PER_WORKER = 3
SCALING_TARGET = 1.5  # 2 processes over 1, on 2 cores


def document() -> bytes:
    """The JSON body nginx serves: 2,000 book records, about 300 KB."""
    books = [
        {
            "id": n,
            "title": f"Book number {n}",
            "author": f"Author {n % 97}",
            "price": round(n * 0.37, 2),
            "tags": ["fiction", "mystery", "classic"][: n % 3 + 1],
            "stock": {"warehouse": n % 5, "count": n % 41},
        }
        for n in range(RECORDS)
    ]
    return json.dumps(books).encode()


def digest_books(response: Any) -> None:
    """The CPU-bound response hook: module-level, so a process pool can run it."""
    books = json.loads(response.content)
    total = 0.0
    tags: dict[str, int] = {}
    for _ in range(PASSES):
        for book in books:
            if not isinstance(book["id"], int) or not book["title"]:
                raise ValueError(f"bad record {book!r}")
            total += book["price"] * book["stock"]["count"]
            for tag in book["tags"]:
                tags[tag] = tags.get(tag, 0) + 1
    response.summary = {
        "books": len(books),
        "value": round(total, 2),
        "tags": tags,
        "sha256": hashlib.sha256(json.dumps(books, sort_keys=True).encode()).hexdigest(),
    }


@contextlib.contextmanager
def serve_books(env: BenchEnv) -> Iterator[str]:
    """nginx serving ``document()`` as a static file; yields its URL."""
    with tempfile.TemporaryDirectory(prefix="microcall-bench-hooks-") as directory:
        Path(directory, "books.json").write_bytes(document())
        port = _free_port()
        # _nginx's server block takes our listen line; an exact-match location
        # after it serves the file (and wins over the fixed "location /").
        listen = (
            f"listen 127.0.0.1:{port}; "
            f"location = /books.json {{ root {directory}; default_type application/json; }}"
        )
        with _nginx(env, directory, port, listen):
            yield f"http://127.0.0.1:{port}/books.json"


def run(env: BenchEnv) -> str:
    """Measure every row ``env.repeats`` times; return the markdown section."""
    # Neither side pinned: a process pool needs both cores.
    free = dataclasses.replace(env, server_cpus=frozenset(), client_cpus=frozenset())
    results: dict[tuple[str, int], list[float]] = {row: [] for row in ROWS}
    cores: dict[tuple[str, int], list[float]] = {row: [] for row in ROWS}
    with serve_books(free) as url:
        for round_number in range(1, env.repeats + 1):
            for kind, workers in ROWS:
                arguments = [
                    "measure",
                    "--url",
                    url,
                    "--executor",
                    kind,
                    "--workers",
                    str(workers),
                    "--warmup",
                    str(env.warmup),
                    "--seconds",
                    str(env.duration),
                ]
                result = run_json(
                    free, "bench.hook_executor", arguments, budget=env.warmup + env.duration + 10
                )
                results[(kind, workers)].append(result["responses_per_s"])
                cores[(kind, workers)].append(result["cores"])
                print(
                    f"[hook_executor] round {round_number}/{env.repeats} {kind} x{workers}: "
                    f"{result['responses_per_s']:.1f} responses/s, {result['cores']:.2f} cores",
                    file=sys.stderr,
                    flush=True,
                )
    return _section(env, results, cores)


def _section(
    env: BenchEnv,
    results: dict[tuple[str, int], list[float]],
    cores: dict[tuple[str, int], list[float]],
) -> str:
    spreads = {row: Spread.of(values) for row, values in results.items()}
    used = {row: Spread.of(values) for row, values in cores.items()}
    lines = [
        "## Response hooks on threads or processes (`FuturesClient(executor=...)`)",
        "",
        f"A CPU-bound response hook (parse a {len(document()) // 1000} KB JSON body, check and "
        f"total its {RECORDS:,} records in Python {PASSES} times, digest a canonical dump) on "
        "each response from nginx; responses per second through the hook, median of "
        f"{env.repeats} round(s) (range), and the CPU the client process and its pool used "
        "in the window, in cores (median). Client and nginx not pinned (the pool needs both "
        "cores).",
        "",
        "| executor | 1 worker | 2 workers | 2 ÷ 1 | cores used (1 / 2 workers) |",
        "|---|---|---|---|---|",
    ]
    for kind, label in (
        ("threads", "`ThreadPoolExecutor`"),
        ("processes", "`ProcessPoolExecutor`"),
    ):
        one, two = spreads[(kind, 1)], spreads[(kind, 2)]
        ratio = two.median / one.median
        cells = f"{used[(kind, 1)].median:.2f} / {used[(kind, 2)].median:.2f}"
        lines.append(f"| {label} | {one.cell(1)} | {two.cell(1)} | {ratio:.2f}x | {cells} |")
    scaling = spreads[("processes", 2)].median / spreads[("processes", 1)].median
    verdict = "PASS" if scaling >= SCALING_TARGET else "MISS"
    lines += [
        "",
        f"Two processes over one: {scaling:.2f}x (target {SCALING_TARGET:g}x on two cores: "
        f"{verdict}).",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------ the client process


def measure(url: str, kind: str, workers: int, warmup: float, seconds: float) -> dict[str, Any]:
    """Keep calls in flight for ``warmup + seconds``; count the hooked responses in the window.

    Also reported: the CPU this process and its pool's processes used in the
    window, in cores (CPU seconds per second), which shows how much of the
    machine the run actually got.
    """
    import microcall
    from bench.hook_executor import digest_books as hook  # by its module's name, not __main__'s

    executor: cf.Executor = (
        cf.ThreadPoolExecutor(workers) if kind == "threads" else cf.ProcessPoolExecutor(workers)
    )
    with executor:
        # Start every worker before the clock runs (a process pool spawns lazily).
        list(executor.map(time.sleep, [0.05] * workers))
        in_flight = IN_FLIGHT_PER_WORKER * workers
        with microcall.FuturesClient(
            executor=executor, hooks={"response": hook}, timeout=30
        ) as client:
            pending = {client.get(url) for _ in range(in_flight)}
            opens = time.monotonic() + warmup
            window: list[tuple[float, float]] = []  # (time, CPU seconds) at its start and end
            counted = 0
            while len(window) < 2:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    assert future.result().summary["books"] == RECORDS
                now = time.monotonic()
                if window:
                    counted += len(done)
                if (not window and now >= opens) or (window and now >= window[0][0] + seconds):
                    window.append((now, _cpu_seconds()))
                pending |= {client.get(url) for _ in done}
            cf.wait(pending)
    (started, cpu_started), (ended, cpu_ended) = window
    elapsed = ended - started
    return {
        "responses_per_s": counted / elapsed,
        "cores": (cpu_ended - cpu_started) / elapsed,
        "executor": kind,
        "workers": workers,
    }


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and every process it started, so far."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for process in (me, *me.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hook_executor")
    commands = parser.add_subparsers(dest="command")
    one = commands.add_parser("measure", help="one client process (run() starts these)")
    one.add_argument("--url", required=True)
    one.add_argument("--executor", choices=["threads", "processes"], required=True)
    one.add_argument("--workers", type=int, required=True)
    one.add_argument("--warmup", type=float, default=1.0)
    one.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="short runs, one repeat")
    arguments = parser.parse_args(argv)
    if arguments.command == "measure":
        result = measure(
            arguments.url,
            arguments.executor,
            arguments.workers,
            arguments.warmup,
            arguments.seconds,
        )
        print(json.dumps(result), flush=True)
        return 0
    print(run(BenchEnv.create(quick=arguments.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
