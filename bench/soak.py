"""``make soak``: the fault suite's long runs, written up in docs/reliability.md.

The same scenarios as tests/faults/ (tests/faults/scenarios.py), with counts
too large for ``make test``: a soak of many calls with fault injection, a
cancellation storm under asyncio's debug mode, and the misbehaving-server
matrix repeated on both transports. It prints what it sees and writes the
figures; a run that saw anything wrong (a wrong outcome, a crossed body, a
report from the loop) says so in the page and exits with status 1.

    python -m bench.soak                      # the defaults below, ~3 minutes
    python -m bench.soak --calls 2000 --cancellations 500 --rounds 1 --output -
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

from tests.faults.scenarios import (
    KNOWN_FAILURES,
    MATRIX,
    TRANSPORTS,
    Case,
    Resources,
    SoakReport,
    StormReport,
    TransportName,
    check_case,
    everything_reported,
    make_client,
    percentile,
    run_soak,
    run_storm,
    sample,
    wait_until,
)
from tests.faultserver import FaultServer, fault_server

import microcall
from bench._machine import ROOT, core_count, cpu_model, load_average, source_revision

DEFAULT_CALLS = 100_000
DEFAULT_WARMUP = 5_000
DEFAULT_CANCELLATIONS = 10_000
DEFAULT_ROUNDS = 10
OUTPUT = ROOT / "docs" / "reliability.md"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--cancellations", type=int, default=DEFAULT_CANCELLATIONS)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="matrix repetitions")
    parser.add_argument("--output", default=str(OUTPUT), help="where to write; - for stdout")
    args = parser.parse_args()
    command = "python -m bench.soak " + shlex.join(sys.argv[1:])
    page, ok = asyncio.run(_run(args, command.strip()))
    if args.output == "-":
        print(page)
    else:
        Path(args.output).write_text(page, encoding="utf-8")
        print(f"wrote {args.output}")
    return 0 if ok else 1


async def _run(args: argparse.Namespace, command: str) -> tuple[str, bool]:
    began = time.monotonic()
    async with fault_server() as faults:
        print(f"soak: {args.calls} calls after {args.warmup} warm-up calls", flush=True)
        soak = await run_soak(faults, calls=args.calls, warmup=args.warmup)
        print(f"  {soak.seconds:.1f} s, outcomes {dict(soak.outcomes)}", flush=True)
        print(f"cancellation storm: {args.cancellations} calls", flush=True)
        storm, storm_reported, storm_growth, storm_seconds = await _storm(
            faults, args.cancellations
        )
        print(f"  {storm_seconds:.1f} s, {storm.cancelled} cancelled", flush=True)
        print(f"matrix: {args.rounds} rounds on {', '.join(TRANSPORTS)}", flush=True)
        matrix = await _matrix(faults, args.rounds)
    page = _page(
        command=command,
        seconds=time.monotonic() - began,
        soak=soak,
        storm=storm,
        storm_reported=storm_reported,
        storm_growth=storm_growth,
        storm_seconds=storm_seconds,
        matrix=matrix,
    )
    ok = (
        not soak.wrong
        and not soak.crossed
        and not storm.wrong
        and not storm_reported
        and not any(wrong for key, wrong in matrix.wrong.items() if key not in _known(matrix))
    )
    return page, ok


async def _storm(
    faults: FaultServer, calls: int
) -> tuple[StormReport, list[str], dict[str, int], float]:
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    with everything_reported(loop) as reported:
        before = sample(faults)
        limits = microcall.Limits(max_connections=8)
        async with microcall.AsyncClient(limits=limits) as client:
            report = await run_storm(client, faults, calls=calls)
        await wait_until(lambda: faults.open_connections == 0)
        await asyncio.sleep(0.05)
        after = sample(faults)
    return report, reported, before.growth(after), time.monotonic() - began


def _known(matrix: _MatrixResult) -> set[tuple[TransportName, str]]:
    """The matrix cells that fail today for a reason already reported (see the scenarios)."""
    known = set(KNOWN_FAILURES)
    return {
        (transport, case.name)
        for case in MATRIX
        for transport in TRANSPORTS
        if (transport, case.port) in known
    }


class _MatrixResult:
    def __init__(self) -> None:
        self.runs: Counter[tuple[TransportName, str]] = Counter()
        self.wrong: dict[tuple[TransportName, str], list[str]] = {}
        self.overshoots: list[float] = []
        self.before: Resources | None = None
        self.after: Resources | None = None


async def _matrix(faults: FaultServer, rounds: int) -> _MatrixResult:
    result = _MatrixResult()
    result.before = sample(faults)
    for _ in range(rounds):
        for transport in TRANSPORTS:
            async with make_client(transport) as client:
                for case in MATRIX:
                    await _matrix_case(client, faults, transport, case, result)
    await wait_until(lambda: faults.open_connections == 0)
    result.after = sample(faults)
    return result


async def _matrix_case(
    client: microcall.AsyncClient,
    faults: FaultServer,
    transport: TransportName,
    case: Case,
    result: _MatrixResult,
) -> None:
    async def get(url: str, timeout: float) -> microcall.Response:
        return await client.get(url, timeout=timeout)

    began = time.monotonic()
    wrong = await check_case(get, faults.url(case.port), case)
    elapsed = time.monotonic() - began
    key = (transport, case.name)
    result.runs[key] += 1
    result.wrong.setdefault(key, [])
    if wrong is not None:
        result.wrong[key].append(wrong)
    elif case.expected is microcall.DeadlineExceeded:
        result.overshoots.append(elapsed - case.deadline)


# ------------------------------------------------------------ the page

_DECISIONS = (
    "How it is judged, and why:",
    "",
    "- Every figure comes from real sockets on 127.0.0.1: a raw-socket server that",
    "  misbehaves on purpose, one port per misbehaviour. Every answered body is the",
    "  request target, so a body that belongs to another request is caught at once.",
    "- Timing is judged against the deadline plus 2 s in the tests (the machine is",
    "  shared; no test asserts a speed); the overshoot percentiles below are the real",
    "  figures.",
    "- Resources are sampled after a warm-up (pools, thread pools and caches are",
    "  full by then) and at the end. Descriptors are counted net of the connections",
    "  the server still holds open (two descriptors each, both in this process): a",
    "  pooled keep-alive connection is not a leak. `make test` allows FDs +5,",
    "  threads +2, tasks +5 and RSS +20 MiB over 3,000 calls with hundreds of faults,",
    "  so a leak of anything per failed call cannot pass.",
    "- The soak runs on the default transport (aiohttp); httpx, several times",
    "  slower per call on this machine, runs the whole matrix instead.",
)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _overshoot_row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | | | |"
    return (
        f"| {name} | {len(values)} | {_ms(percentile(values, 0.5))} "
        f"| {_ms(percentile(values, 0.99))} | {_ms(max(values))} |"
    )


def _growth_row(name: str, growth: dict[str, int]) -> str:
    return (
        f"| {name} | {growth['fds']:+d} | {growth['threads']:+d} | {growth['tasks']:+d} "
        f"| {growth['rss'] / 2**20:+.1f} MiB |"
    )


def _page(
    *,
    command: str,
    seconds: float,
    soak: SoakReport,
    storm: StormReport,
    storm_reported: list[str],
    storm_growth: dict[str, int],
    storm_seconds: float,
    matrix: _MatrixResult,
) -> str:
    assert soak.before is not None
    assert soak.closed is not None
    assert matrix.before is not None
    assert matrix.after is not None
    loop = type(asyncio.new_event_loop()).__name__
    lines = [
        "# Reliability: the long fault runs",
        "",
        "Generated by `make soak` (bench/soak.py); do not edit by hand. The same",
        "scenarios run in `make test` with small counts (tests/faults/). What each",
        "scenario does and why is described in tests/faults/scenarios.py; the",
        "misbehaving servers are in tests/faultserver.py.",
        "",
        f"- Command: `{command}` ({seconds:.0f} s in all)",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {cpu_model()}, {core_count()} cores, load average {load_average()} at the end",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"event loop: asyncio's default ({loop})",
        f"- microcall at {source_revision()}",
        "",
        *_DECISIONS,
        "",
        "## Soak with fault injection",
        "",
        f"{soak.calls:,} calls ({soak.warmup:,} of them a warm-up before the first sample) "
        f"on one AsyncClient (aiohttp), 32 at a time, in {soak.seconds:.1f} s; strategies "
        + ", ".join(f"{name} {count:,}" for name, count in sorted(soak.by_strategy.items()))
        + ".",
        "",
        "| kind of call | calls |",
        "|---|---|",
        *(f"| {kind} | {count:,} |" for kind, count in soak.by_kind.most_common()),
        "",
        "| outcome | calls |",
        "|---|---|",
        *(f"| {outcome} | {count:,} |" for outcome, count in soak.outcomes.most_common()),
        "",
        f"Calls that ended the wrong way: {len(soak.wrong)}"
        + ("" if not soak.wrong else f" (first: {soak.wrong[0]})")
        + f". Bodies that belonged to another request: {soak.crossed}.",
        "",
        "Resource growth (descriptors net of the connections the server still",
        "holds open, threads, asyncio tasks other than the server's, RSS):",
        "",
        "| interval | FDs | threads | tasks | RSS |",
        "|---|---|---|---|---|",
        _growth_row("soak: after warm-up to end", soak.growth()),
        _growth_row("soak: before the client to after its close", soak.before.growth(soak.closed)),
        _growth_row("storm: before to after", storm_growth),
        _growth_row("matrix: before to after", matrix.before.growth(matrix.after)),
        "",
        "## Deadline overshoot",
        "",
        "Time to outcome minus the deadline, for calls that ended in DeadlineExceeded.",
        "",
        "| where | calls | p50 | p99 | max |",
        "|---|---|---|---|---|",
        _overshoot_row("soak (deadline 100 ms, 32 concurrent)", soak.overshoots),
        _overshoot_row("matrix (deadline 300 ms, one at a time)", matrix.overshoots),
        "",
        "## Cancellation storm",
        "",
        f"{storm.calls:,} calls cancelled at random moments ({len(storm.by_moment)} kinds "
        "of moment: loop turns and delays, from before the request is sent to the "
        f"middle of a hedge) under asyncio debug mode with warnings as errors, in "
        f"{storm_seconds:.1f} s: {storm.cancelled:,} cancelled, "
        + ", ".join(
            f"{count:,} finished first as {what}" for what, count in storm.finished.most_common()
        )
        + ".",
        "",
        f"Reported by the loop or the garbage collector: {len(storm_reported)}"
        + ("" if not storm_reported else f" (first: {storm_reported[0]})")
        + f". Wrong bodies: {len(storm.wrong)}.",
        "",
        "## The misbehaving-server matrix, repeated",
        "",
        "| case | " + " | ".join(TRANSPORTS) + " |",
        "|---|" + "---|" * len(TRANSPORTS),
    ]
    for case in MATRIX:
        expected = case.expected.__name__ if case.expected else "answer"
        cells = []
        for transport in TRANSPORTS:
            runs = matrix.runs[(transport, case.name)]
            wrong = matrix.wrong.get((transport, case.name), [])
            known = " (known defect, see below)" if (transport, case.name) in _known(matrix) else ""
            cells.append(
                f"{runs - len(wrong)}/{runs} right"
                + ("" if not wrong else f"{known or ' (unexpected)'}: {wrong[0][:80]}")
            )
        lines.append(f"| {case.name} → {expected} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Known defects, reported and marked xfail in tests/faults/test_matrix.py:",
        "",
        *(
            f"- {transport}, {port}: {reason}."
            for (transport, port), reason in KNOWN_FAILURES.items()
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
