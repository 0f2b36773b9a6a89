"""Tail latency under a heavy-tailed backend: single attempt, hedging and retries compared.

The backend (bench/_tail_backend.py, its own process on the server core)
answers each request after a latency drawn independently: 97% take 2-4 ms,
2% take 50 ms, 1% take 500 ms. Every row is a fresh client process on the
client core (bench/_load.py) making the same calls: call ``n``'s first
attempt meets the same latency under every row of a repeat, and each repeat
draws new calls.

Two ways of offering load, both reported:

* open loop: a fixed timetable of 800 requests/s, sent whether or not
  earlier calls have finished (every row faces the same offered load; a
  call's latency runs from the moment it was due);
* closed loop: 16 workers, each sending its next call when the previous one
  finished (a strategy that cuts latency raises its own load here, which is
  where fixed-delay hedging can feed on itself).

Extra load and new connections are counted by the server, over the measured
calls only (their own run id): extra load is requests received per call
minus one; a new connection is one whose first request was a measured call
(a connection opened during the warm-up and reused is not new).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import BenchEnv
from bench._proc import run_json
from bench._stats import Spread
from bench._tail_backend import Backend
from microcall.demo.backend import LatencyProfile

RATE = 800.0
CONCURRENCY = 16
# The figures are per 4,000 requests; a full run measures exactly that.
PER = 4000
SEED = 1
# Each repeat's calls are numbered from here on, so each meets new luck.
CALLS_PER_REPEAT = 1_000_000
# aio-request cannot learn its delay; it gets the single attempt's p95 of the
# same repeat and loop, the fixed delay a careful user would pick.
AIO_DELAY_PERCENTILE = "p95_ms"
MODES = ("open", "closed")


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    client: str
    strategy: str


SINGLE = Row("single", "single attempt (microcall `single()`)", "microcall", "single")
AIO = Row(
    "aio",
    "aio-request `parallel_strategy(attempts_count=2, constant_delays(single p95))`",
    "aio-parallel",
    "single",
)
HEDGED = Row("hedged", "microcall `hedged()` (learned, max_extra_load=0.05)", "microcall", "hedged")
RETRY = Row("retry", "microcall `retry(3, attempt_timeout=0.01)`", "microcall", "retry-timeout")
ROWS = (SINGLE, AIO, HEDGED, RETRY)

Results = dict[tuple[str, str], list[dict[str, Any]]]


def run(env: BenchEnv) -> str:
    """Measure every row in both loops ``env.repeats`` times; return the markdown section."""
    requests = round(RATE * env.duration)
    warmup = round(RATE * env.warmup)
    results: Results = {(mode, row.key): [] for mode in MODES for row in ROWS}
    delays: dict[str, list[float]] = {mode: [] for mode in MODES}
    run_ids = iter(range(1, 1_000_000, 2))
    with Backend(env, LatencyProfile(), seed=SEED) as backend:
        for repeat in range(env.repeats):
            for mode in MODES:
                # The single attempt goes first: its p95 is aio-request's delay.
                # The others swap order every repeat, so a drift in the
                # machine's load does not always fall on the same row.
                others = [AIO, HEDGED, RETRY]
                order = [SINGLE, *(others if repeat % 2 == 0 else reversed(others))]
                delay = 0.0
                for row in order:
                    measurement = Measurement(
                        row=row,
                        mode=mode,
                        run_id=next(run_ids),
                        first_call=repeat * CALLS_PER_REPEAT,
                        warmup=warmup,
                        requests=requests,
                        delay=delay,
                    )
                    result = measurement.take(env, backend)
                    results[(mode, row.key)].append(result)
                    if row is SINGLE:
                        delay = _or_inf(result[AIO_DELAY_PERCENTILE]) / 1e3
                        delays[mode].append(delay)
                    _progress(repeat, env.repeats, mode, row, result)
    return _section(env, results, delays, requests, warmup)


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """One row in one loop: a client process against the backend, and the server's counts."""

    row: Row
    mode: str
    run_id: int  # the warm-up's run; the measured calls are run_id + 1
    first_call: int
    warmup: int
    requests: int
    delay: float  # aio-request's fixed delay

    def take(self, env: BenchEnv, backend: Backend) -> dict[str, Any]:
        arguments = [
            "--url", backend.url,
            "--client", self.row.client,
            "--strategy", self.row.strategy,
            "--mode", self.mode,
            "--rate", str(RATE),
            "--concurrency", str(CONCURRENCY),
            "--warmup", str(self.warmup),
            "--requests", str(self.requests),
            "--warmup-run", str(self.run_id),
            "--run", str(self.run_id + 1),
            "--first-call", str(self.first_call),
            "--delay", f"{self.delay:.6f}",
        ]  # fmt: skip
        budget = (self.warmup + self.requests) / RATE * 4 + 10
        waited = backend.waited()
        result = run_json(env, "bench._load", arguments, budget=budget)
        result["server_wait_share"] = _share(waited, backend.waited(), result["process_seconds"])
        counts = backend.counts(self.run_id + 1)
        calls = result["calls"]
        result["extra_load"] = counts.received / calls - 1 if calls else None
        result["new_connections"] = counts.connections * PER / calls if calls else None
        result["server_cancelled"] = counts.cancelled
        return result


def _share(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None or seconds <= 0:
        return None
    return (after - before) / seconds


def _progress(repeat: int, repeats: int, mode: str, row: Row, result: dict[str, Any]) -> None:
    def ms(figure: str) -> str:
        value = result[figure]
        return "    n/a" if value is None else f"{value:7.1f}"

    print(
        f"  [{repeat + 1}/{repeats}] {mode:<6} {row.key:<7} p50 {ms('p50_ms')}  "
        f"p99 {ms('p99_ms')}  p99.9 {ms('p999_ms')} ms  "
        f"extra {result['extra_load']:6.1%}  new conns {result['new_connections']:6.0f}  "
        f"failed {result['failures']} {result['failure_kinds'] or ''}  "
        f"sent {result['sent']}  lag p99 {ms('lag_p99_ms')} ms  "
        f"CPU {ms('cpu_us_per_call')} µs/call  waited for CPU: client "
        f"{_percent(result['cpu_wait_share'])}, server {_percent(result['server_wait_share'])}",
        file=sys.stderr,
        flush=True,
    )


# ------------------------------------------------------------------ the section


def _spread(runs: Sequence[dict[str, Any]], figure: str, scale: float = 1.0) -> Spread:
    return Spread.of([run[figure] * scale for run in runs if run[figure] is not None])


def _section(
    env: BenchEnv,
    results: Results,
    delays: dict[str, list[float]],
    requests: int,
    warmup: int,
) -> str:
    repeats = (
        "one repeat (quick mode: a smoke check, not a measurement)"
        if env.repeats == 1
        else f"{env.repeats} repeats"
    )
    lines = [
        "## Tail latency: hedging and retries against a heavy-tailed backend",
        "",
        f"The backend draws each request's latency independently: "
        f"{LatencyProfile().describe()}. It runs in its own process on the server core; each "
        f"row is a fresh client process on the client core, {warmup:,} warm-up calls (they "
        f"open connections and fill the learned hedge delay) then {requests:,} measured calls; "
        f"{repeats}, each drawing new calls; every row of a repeat meets the same first-attempt "
        "latencies. Every call has a 5 s deadline.",
        "",
        f"- **Open loop**: {RATE:,.0f} calls/s on a fixed timetable, sent whether or not earlier "
        "calls finished; latency runs from the moment a call was due, so a client that falls "
        "behind pays for it.",
        f"- **Closed loop**: {CONCURRENCY} workers, each starting its next call when the "
        "previous one finished.",
        "- **extra load**: requests the server received for the measured calls, per call, "
        "minus one (hedges and retries).",
        f"- **new conns / {PER:,}**: connections the server saw opened for measured calls, per "
        f"{PER:,} calls. An HTTP/1.1 attempt cancelled mid-response must close its connection.",
        "- **CPU µs/call**: the client process's CPU time over the measured window ÷ calls.",
        "- **waited for CPU**: how long the client's event loop (over the measured window) and "
        "the server's (over the whole client run) stood runnable without a CPU, as a share of "
        "the time: other work on the machine taking their cores. A repeat where this is large "
        "measured the machine's contention as much as the strategy.",
        "- aio-request's fixed delay is the single attempt's p95 of the same repeat and loop: "
        + ", ".join(
            f"{mode} loop {Spread.of([d * 1e3 for d in delays[mode]]).cell(1)} ms" for mode in MODES
        )
        + ".",
        "",
        "Each cell: median over the repeats (min–max in brackets; the max is the worst repeat).",
    ]
    for mode in MODES:
        lines += [
            "",
            f"### {'Open loop, 800 calls/s' if mode == 'open' else 'Closed loop, 16 workers'}",
            "",
            f"| strategy | p50 ms | p99 ms | p99.9 ms | extra load % | new conns / {PER:,} "
            "| failed calls | CPU µs/call | waited for CPU %, client / server |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in ROWS:
            runs = results[(mode, row.key)]
            cells = [
                _spread(runs, "p50_ms").cell(1),
                _spread(runs, "p99_ms").cell(1),
                _spread(runs, "p999_ms").cell(1),
                _spread(runs, "extra_load", 100).cell(1),
                _spread(runs, "new_connections").cell(0),
                _spread(runs, "failures").cell(0),
                _spread(runs, "cpu_us_per_call").cell(0),
                _spread(runs, "cpu_wait_share", 100).cell(0)
                + " / "
                + _spread(runs, "server_wait_share", 100).cell(0),
            ]
            lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += ["", *_targets(results), ""]
    notes = _notes(results)
    if notes:
        lines += [*notes, ""]
    return "\n".join(lines)


def _targets(results: Results) -> list[str]:
    lines = [
        "| target | measured | |",
        "|---|---|---|",
    ]
    for figure, name in (("p99_ms", "p99"), ("p999_ms", "p99.9")):
        ours = [_or_inf(run[figure]) for run in results[("open", "hedged")]]
        theirs = [_or_inf(run[figure]) for run in results[("open", "aio")]]
        wins = sum(a <= b for a, b in zip(ours, theirs, strict=True))
        median_ok = Spread.of(ours).median <= Spread.of(theirs).median
        lines.append(
            f"| open loop: learned hedging {name} ≤ aio-request's | "
            f"{Spread.of(ours).median:.1f} vs {Spread.of(theirs).median:.1f} ms (medians); "
            f"at or below in {wins} of {len(ours)} repeats | {_verdict(median_ok)} |"
        )
    for mode in MODES:
        loads = [run["extra_load"] for run in results[(mode, "hedged")]]
        worst = max(loads)
        lines.append(
            f"| {mode} loop: learned hedging extra load ≤ 5% in every repeat | worst "
            f"{worst:.1%} ({', '.join(f'{load:.1%}' for load in loads)}) | "
            f"{_verdict(worst <= 0.05)} |"
        )
    for mode in MODES:
        hedged = _spread(results[(mode, "hedged")], "new_connections")
        aio = _spread(results[(mode, "aio")], "new_connections")
        lines.append(
            f"| {mode} loop: learned hedging opens fewer new connections than aio-request | "
            f"{hedged.median:.0f} vs {aio.median:.0f} per {PER:,} (medians) | "
            f"{_verdict(hedged.median < aio.median)} |"
        )
    return lines


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"


def _or_inf(value: float | None) -> float:
    """A percentile of no completed call: as bad as it gets."""
    return math.inf if value is None else value


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def _notes(results: Results) -> list[str]:
    notes = []
    for (mode, key), runs in results.items():
        failed = sum(run["failures"] for run in runs)
        if failed:
            first = next(run["first_error"] for run in runs if run["failures"])
            notes.append(f"- {mode} loop, {key}: {failed} failed calls (first: `{first}`)")
        refused: dict[str, int] = {}
        for run in runs:
            for reason, count in run["refused"].items():
                refused[reason] = refused.get(reason, 0) + count
        if refused:
            said = ", ".join(f"{count} × {reason}" for reason, count in sorted(refused.items()))
            notes.append(f"- {mode} loop, {key}: extra attempts refused: {said}")
        sent = [run["sent"] for run in runs if run["sent"]]
        if any(kinds.get("hedge") or kinds.get("retry") for kinds in sent):
            said = "; ".join(
                f"{kinds.get('hedge', 0)} hedges + {kinds.get('retry', 0)} retries"
                for kinds in sent
            )
            notes.append(f"- {mode} loop, {key}: extra attempts sent, per repeat: {said}")
        kinds_failed: dict[str, int] = {}
        for run in runs:
            for kind, count in run["failure_kinds"].items():
                kinds_failed[kind] = kinds_failed.get(kind, 0) + count
        if kinds_failed:
            said = ", ".join(f"{count} × {kind}" for kind, count in sorted(kinds_failed.items()))
            notes.append(f"- {mode} loop, {key}: failures by kind: {said}")
        lags = [run["lag_p99_ms"] for run in runs if run["lag_p99_ms"] is not None]
        if lags and max(lags) > 5:
            notes.append(
                f"- {mode} loop, {key}: the client sent late (p99 lag up to {max(lags):.1f} ms): "
                "it could not keep the timetable, and its latencies include that"
            )
    return notes


if __name__ == "__main__":
    from bench._standalone import main

    sys.exit(main(run, "tail"))
