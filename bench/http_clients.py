"""The front doors against their peers: requests/s, client CPU per request, p50 / p99.

nginx answers a fixed 3-byte 200 on the server core; every measurement is a
fresh client process (bench/_client.py) on the client core, so one library's
warm caches or leftover threads never help another. The rows are measured in
rounds (each row once per round) so that a slow change in the machine's load
hits every row alike, and every ratio is taken within one run.

``python -m bench.http_clients [--quick]`` runs this section on its own.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import BenchEnv
from bench._client import TLS_PEERS
from bench._nginx import serve_ok, serve_ok_tls
from bench._proc import run_json
from bench._stats import Spread

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None
HAVE_PYREQWEST = importlib.util.find_spec("pyreqwest") is not None
BACKGROUND_LOOP = "uvloop, own thread" if HAVE_UVLOOP else "asyncio, own thread"
# A Client's plain calls run in the calling thread (docs/clients.md, direct calls).
DIRECT = "none (direct calls)"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a client program (bench/_client.py) at one concurrency."""

    peer: str  # the name bench/_client.py knows
    concurrency: int
    label: str
    loop: str
    shape: str  # what the concurrency means for this library


ROWS: tuple[Row, ...] = (
    Row("aiohttp", 1, "aiohttp `ClientSession` (raw)", "asyncio", "1 task"),
    Row("aiohttp", 16, "aiohttp `ClientSession` (raw)", "asyncio", "16 tasks"),
    Row("aiohttp", 64, "aiohttp `ClientSession` (raw)", "asyncio", "64 tasks"),
    *(
        (
            Row("aiohttp+uvloop", 16, "aiohttp `ClientSession` (raw)", "uvloop", "16 tasks"),
            Row("aiohttp+uvloop", 64, "aiohttp `ClientSession` (raw)", "uvloop", "64 tasks"),
        )
        if HAVE_UVLOOP
        else ()
    ),
    # The floor: the least a client can cost (bench/_floor.py), and a client in Rust.
    Row("floor-httptools", 16, "floor: minimal httptools client", "asyncio", "16 tasks"),
    Row("floor-httptools", 64, "floor: minimal httptools client", "asyncio", "64 tasks"),
    *(
        (
            Row(
                "floor-httptools+uvloop",
                16,
                "floor: minimal httptools client",
                "uvloop",
                "16 tasks",
            ),
            Row(
                "floor-httptools+uvloop",
                64,
                "floor: minimal httptools client",
                "uvloop",
                "64 tasks",
            ),
            Row("microcall-async+uvloop", 16, "microcall `AsyncClient`", "uvloop", "16 tasks"),
            Row("microcall-async+uvloop", 64, "microcall `AsyncClient`", "uvloop", "64 tasks"),
        )
        if HAVE_UVLOOP
        else ()
    ),
    *(
        (
            Row("pyreqwest", 16, "pyreqwest `Client` (Rust, hyper)", "asyncio", "16 tasks"),
            Row("pyreqwest", 64, "pyreqwest `Client` (Rust, hyper)", "asyncio", "64 tasks"),
        )
        if HAVE_PYREQWEST
        else ()
    ),
    *(
        (
            Row("pyreqwest+uvloop", 16, "pyreqwest `Client` (Rust, hyper)", "uvloop", "16 tasks"),
            Row("pyreqwest+uvloop", 64, "pyreqwest `Client` (Rust, hyper)", "uvloop", "64 tasks"),
        )
        if HAVE_PYREQWEST and HAVE_UVLOOP
        else ()
    ),
    Row(
        "microcall-aiohttp",
        16,
        "microcall `AsyncClient` over `AiohttpTransport`",
        "asyncio",
        "16 tasks",
    ),
    Row(
        "microcall-aiohttp",
        64,
        "microcall `AsyncClient` over `AiohttpTransport`",
        "asyncio",
        "64 tasks",
    ),
    Row("aio-request", 16, "aio-request", "asyncio", "16 tasks"),
    Row("aio-request", 64, "aio-request", "asyncio", "64 tasks"),
    Row("microcall-async", 1, "microcall `AsyncClient`", "asyncio", "1 task"),
    Row("microcall-async", 16, "microcall `AsyncClient`", "asyncio", "16 tasks"),
    Row("microcall-async", 64, "microcall `AsyncClient`", "asyncio", "64 tasks"),
    Row("httpx", 16, "httpx `AsyncClient` (raw)", "asyncio", "16 tasks"),
    Row(
        "microcall-httpx",
        16,
        "microcall `AsyncClient` over `HttpxTransport`",
        "asyncio",
        "16 tasks",
    ),
    Row(
        "httpx-h2", 16, "httpx `AsyncClient(http2=True)` (raw), HTTP/2 + TLS", "asyncio", "16 tasks"
    ),
    Row(
        "microcall-httpx-h2",
        16,
        "microcall `AsyncClient` over `HttpxTransport`, HTTP/2 + TLS",
        "asyncio",
        "16 tasks",
    ),
    Row("requests", 1, "requests `Session`", "none (blocking)", "1 thread"),
    Row(
        "requests-futures",
        16,
        "requests-futures `FuturesSession`",
        "none (threads)",
        "16 workers, 16 in flight",
    ),
    Row(
        "requests-futures",
        64,
        "requests-futures `FuturesSession`",
        "none (threads)",
        "64 workers, 64 in flight",
    ),
    Row("microcall-client", 1, "microcall `Client`", DIRECT, "1 thread (sequential)"),
    Row("microcall-client", 16, "microcall `Client`", DIRECT, "16 threads, one client"),
    Row("microcall-futures", 16, "microcall `FuturesClient`", BACKGROUND_LOOP, "16 in flight"),
    Row("microcall-futures", 64, "microcall `FuturesClient`", BACKGROUND_LOOP, "64 in flight"),
)

FIGURES = ("rps", "cpu_us_per_request", "p50_ms", "p99_ms")


@dataclass(frozen=True, slots=True)
class Target:
    """A ratio between two rows of the same run, with the bound it must meet (or none)."""

    text: str
    figure: str
    numerator: tuple[str, int]
    denominator: tuple[str, int]
    bound: float | None = None
    at_most: bool = True  # the ratio must stay at or below ``bound`` (else at or above)
    # The bound is judged on the interleaved reading instead (see _interleaved).
    judged_interleaved: bool = False


# The targets of the issue this benchmark answers.
AT_MOST_OVER_AIOHTTP = 0.6  # AsyncClient's CPU per request, relative to raw aiohttp
AT_MOST_OVER_AIOHTTP_UVLOOP = 0.5  # the same, both on uvloop
FUTURES_SPEED_UP = 8.0  # FuturesClient's req/s over requests-futures', 64 in flight
SEQUENTIAL_SPEED_UP = 4.0  # Client's req/s over requests.Session's, one call at a time

TARGETS: tuple[Target, ...] = (
    Target("AsyncClient CPU/request ÷ raw aiohttp, c=16", "cpu_us_per_request", ("microcall-async", 16), ("aiohttp", 16), AT_MOST_OVER_AIOHTTP, judged_interleaved=True),
    Target("AsyncClient CPU/request ÷ raw aiohttp, c=64", "cpu_us_per_request", ("microcall-async", 64), ("aiohttp", 64), AT_MOST_OVER_AIOHTTP, judged_interleaved=True),
    *(
        (
            Target("AsyncClient CPU/request ÷ raw aiohttp, both on uvloop, c=16", "cpu_us_per_request", ("microcall-async+uvloop", 16), ("aiohttp+uvloop", 16), AT_MOST_OVER_AIOHTTP_UVLOOP),
            Target("AsyncClient CPU/request ÷ raw aiohttp, both on uvloop, c=64", "cpu_us_per_request", ("microcall-async+uvloop", 64), ("aiohttp+uvloop", 64), AT_MOST_OVER_AIOHTTP_UVLOOP),
            Target("AsyncClient CPU/request ÷ the floor, both on uvloop, c=64", "cpu_us_per_request", ("microcall-async+uvloop", 64), ("floor-httptools+uvloop", 64)),
        )
        if HAVE_UVLOOP
        else ()
    ),
    Target("AsyncClient CPU/request ÷ the floor, c=64", "cpu_us_per_request", ("microcall-async", 64), ("floor-httptools", 64)),
    Target("AsyncClient over AiohttpTransport CPU/request ÷ raw aiohttp, c=64", "cpu_us_per_request", ("microcall-aiohttp", 64), ("aiohttp", 64)),
    Target("FuturesClient req/s ÷ requests-futures req/s, 64 in flight", "rps", ("microcall-futures", 64), ("requests-futures", 64), FUTURES_SPEED_UP, at_most=False),
    Target("Client (sequential) req/s ÷ requests.Session req/s", "rps", ("microcall-client", 1), ("requests", 1), SEQUENTIAL_SPEED_UP, at_most=False),
    Target("aio-request CPU/request ÷ raw aiohttp, c=16", "cpu_us_per_request", ("aio-request", 16), ("aiohttp", 16)),
    Target("aio-request CPU/request ÷ raw aiohttp, c=64", "cpu_us_per_request", ("aio-request", 64), ("aiohttp", 64)),
    Target("AsyncClient over HttpxTransport CPU/request ÷ raw httpx, c=16", "cpu_us_per_request", ("microcall-httpx", 16), ("httpx", 16)),
    Target("the same over HTTP/2 + TLS, c=16", "cpu_us_per_request", ("microcall-httpx-h2", 16), ("httpx-h2", 16)),
)  # fmt: skip

Results = dict[tuple[str, int], list[dict[str, Any]]]

# The rows a ratio compares are measured back to back, and every other round
# runs in reverse, so a drift in the machine's load hits both sides of a ratio
# alike. (The table keeps the reading order of ROWS.)
MEASURE_ORDER: tuple[tuple[str, int], ...] = (
    ("aiohttp", 16), ("microcall-async", 16), ("aio-request", 16),
    ("aiohttp", 64), ("microcall-async", 64), ("aio-request", 64),
    ("aiohttp+uvloop", 16), ("microcall-async+uvloop", 16), ("floor-httptools+uvloop", 16),
    ("aiohttp+uvloop", 64), ("microcall-async+uvloop", 64), ("floor-httptools+uvloop", 64),
    ("floor-httptools", 16), ("floor-httptools", 64),
    ("microcall-aiohttp", 16), ("microcall-aiohttp", 64),
    ("pyreqwest", 16), ("pyreqwest", 64), ("pyreqwest+uvloop", 16), ("pyreqwest+uvloop", 64),
    ("requests-futures", 64), ("microcall-futures", 64),
    ("requests", 1), ("microcall-client", 1),
    ("aiohttp", 1), ("microcall-async", 1),
    ("requests-futures", 16), ("microcall-futures", 16), ("microcall-client", 16),
    ("httpx", 16), ("microcall-httpx", 16),
    ("httpx-h2", 16), ("microcall-httpx-h2", 16),
)  # fmt: skip


# AsyncClient against raw aiohttp once more, both on one loop in one process,
# alternating every quarter second: the CPU ratio the target is about, with
# the machine's changing load cancelled out.
PAIR = ("aiohttp", "microcall-async")
PAIR_CONCURRENCIES = (16, 64)
SLICE = 0.25

Pairs = dict[int, list[dict[str, dict[str, Any]]]]


def run(env: BenchEnv) -> str:
    """Measure every row ``env.repeats`` times against one nginx; return the markdown section."""
    rows = {(row.peer, row.concurrency): row for row in ROWS}
    order = [key for key in MEASURE_ORDER if key in rows]
    assert sorted(order) == sorted(rows), "every row is measured exactly once per round"
    targets = [t for t in TARGETS if t.numerator in rows and t.denominator in rows]
    assert len(targets) == len(TARGETS), "every ratio's rows are measured"
    results: Results = {key: [] for key in rows}
    pairs: Pairs = {c: [] for c in PAIR_CONCURRENCIES}
    with serve_ok(env) as url, serve_ok_tls(env) as (tls_url, ca):
        for round_number in range(1, env.repeats + 1):
            for key in order if round_number % 2 else reversed(order):
                row = rows[key]
                arguments = [row.peer, str(row.concurrency)]
                if row.peer in TLS_PEERS:
                    result = _client(env, tls_url, [*arguments, "--ca", ca], env.duration)
                else:
                    result = _client(env, url, arguments, env.duration)
                results[key].append(result)
                _progress(round_number, env.repeats, f"{row.peer} c={row.concurrency}", result)
            for c in PAIR_CONCURRENCIES:
                # Each side gets env.duration of slices, as long as a row's window.
                arguments = ["/".join(PAIR), str(c), "--slice", str(SLICE)]
                result = _client(env, url, arguments, 2 * env.duration)
                pairs[c].append(result["interleaved"])
                _progress_pair(round_number, env.repeats, c, result)
    return _section(env, results, pairs)


def _client(env: BenchEnv, url: str, arguments: list[str], seconds: float) -> dict[str, Any]:
    timing = [str(seconds), "--url", url, "--warmup", str(env.warmup)]
    return run_json(env, "bench._client", [*arguments, *timing], budget=env.warmup + seconds)


def _progress(round_number: int, rounds: int, what: str, result: dict[str, Any]) -> None:
    cpu = result["cpu_us_per_request"]
    print(
        f"  [{round_number}/{rounds}] {what:<24} {result['rps']:>8,.0f} req/s  "
        + (f"{cpu:6.1f} µs CPU/req" if cpu is not None else "no requests")
        + (f"  {result['errors']} errors" if result["errors"] else ""),
        file=sys.stderr,
        flush=True,
    )
    if result.get("stuck"):
        print(f"  calls stuck after the window; stacks:\n{result['stuck']}", file=sys.stderr)


def _progress_pair(round_number: int, rounds: int, c: int, result: dict[str, Any]) -> None:
    sides = result["interleaved"]
    costs = "  ".join(
        f"{name} {side['cpu_us_per_request'] or 0:6.1f} µs CPU/req" for name, side in sides.items()
    )
    print(f"  [{round_number}/{rounds}] interleaved c={c:<3}  {costs}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the section


def _section(env: BenchEnv, results: Results, pairs: Pairs) -> str:
    lines = [
        "## HTTP clients: microcall's front doors against their peers",
        "",
        "A fixed 3-byte `200` from nginx over keep-alive HTTP/1.1 on 127.0.0.1, "
        "so that the client's own cost is what is measured. Each row is a fresh client "
        f"process: {env.warmup:g} s of warm-up, then a {env.duration:g} s timed window; "
        f"{_repeats(env)}. The rows are measured in rounds (each row once per round, every "
        "other round in reverse order, the two rows of each ratio back to back), so a change "
        "in the machine's load during the run falls on both sides of a ratio alike.",
        "",
        "- **req/s**: requests completed in the window ÷ its length.",
        "- **CPU µs/req**: the client process's CPU time (user + system, all its threads: "
        "worker pools and background loops count) over the window ÷ requests completed.",
        "- **p50 / p99**: latency of each request from the call to the body in hand, in ms.",
        "",
        "How each client is driven (bench/_client.py):",
        "",
        "- asyncio clients: N tasks, each calling one request after another:",
        "  - raw aiohttp: one default `aiohttp.ClientSession()`; "
        "`async with session.get(url) as r: await r.read()`.",
        "  - aio-request: `aio_request.setup(transport=AioHttpTransport(session), endpoint=url)` "
        "with its defaults (GETs use its sequential strategy; every call here succeeds at the "
        "first attempt); `async with client.request(aio_request.get(''), "
        "deadline=Deadline.from_timeout(5)) as r: await r.read()`.",
        "  - microcall `AsyncClient(url)` with its defaults (the `single()` strategy, a 10 s "
        "deadline): `await client.get('')`, on the benchmark's own loop (asyncio's, as for raw "
        "aiohttp).",
        "  - raw httpx: one default `httpx.AsyncClient()`; `await client.get(url)`. microcall "
        "over httpx: `AsyncClient(url, transport=HttpxTransport())` (HTTP/1.1 here: nginx "
        "speaks it in cleartext).",
        "  - HTTP/2 + TLS: the same answer from a second nginx over HTTP/2 with TLS, its "
        "certificate from a throwaway CA (trustme) that each client is given as its only trust "
        "(`ssl.create_default_context(cafile=...)`), and verifies. Raw: "
        "`httpx.AsyncClient(http2=True, verify=context)` (a first request checks that HTTP/2 "
        "was agreed); microcall: `AsyncClient(url, transport=HttpxTransport(verify=context))`, "
        "HTTP/2 being its default. Each multiplexes its 16 tasks on one connection.",
        "- microcall `Client`: each of these GETs is a plain call, run in the calling thread "
        "on the client's blocking pool (its direct calls, docs/clients.md). "
        f"`FuturesClient` runs its calls on the client's background loop ({BACKGROUND_LOOP}). "
        "Every microcall call sends `X-Request-Timeout` (no priority was chosen, so no "
        "`X-Request-Priority`).",
        "- requests: one `requests.Session`, `session.get(url).content` in a loop.",
        "- futures (requests-futures and `FuturesClient`): a feeder thread keeps N futures "
        "outstanding, starting a new call as each one completes (a semaphore released in the "
        "future's done callback).",
        "",
        "Each cell: median over the repeats (min–max in brackets).",
        "",
        "| client | event loop | concurrency | req/s | CPU µs/req | p50 ms | p99 ms |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for row in ROWS:
        runs = results[(row.peer, row.concurrency)]
        cells = [
            _spread(runs, "rps").cell(0),
            _spread(runs, "cpu_us_per_request").cell(1),
            _spread(runs, "p50_ms").cell(2),
            _spread(runs, "p99_ms").cell(2),
        ]
        lines.append(f"| {row.label} | {row.loop} | {row.shape} | " + " | ".join(cells) + " |")
    lines += ["", *_error_notes(results, pairs), *_ratios(results), "", *_interleaved(env, pairs)]
    return "\n".join(lines)


def _repeats(env: BenchEnv) -> str:
    if env.repeats == 1:
        return "one run per row (quick mode: a smoke check, not a measurement)"
    return f"{env.repeats} runs per row"


def _spread(runs: Sequence[dict[str, Any]], figure: str) -> Spread:
    return Spread.of([run[figure] for run in runs if run[figure] is not None])


def _error_notes(results: Results, pairs: Pairs) -> list[str]:
    notes = []
    for (peer, concurrency), runs in results.items():
        errors = sum(run["errors"] for run in runs)
        if errors:
            first = next(run["first_error"] for run in runs if run["errors"])
            notes.append(
                f"- **{peer} c={concurrency}: {errors} failed requests** (first: `{first}`)"
            )
        stuck = sum(1 for run in runs if run.get("stuck"))
        if stuck:
            notes.append(
                f"- **{peer} c={concurrency}: calls still unfinished long after the window "
                f"closed, in {stuck} run(s)** (their stacks are in the run's output)"
            )
    for c, runs in pairs.items():
        errors = sum(side["errors"] for run in runs for side in run.values())
        if errors:
            notes.append(f"- **interleaved c={c}: {errors} failed requests**")
    return [*notes, ""] if notes else []


def _ratios(results: Results) -> list[str]:
    lines = [
        "Ratios between rows of this run. Both rows of a ratio are measured back to back in "
        "each round, so the figure is the median of the per-round ratios (in brackets the "
        "lowest and highest); it can differ a little from the ratio of the table's medians. "
        "AsyncClient's CPU against raw aiohttp is judged on the interleaved reading below, "
        "not here: two separate processes a few seconds apart differ by more than the 15% "
        "being judged whenever the machine's other work changes in between (these rows have "
        "read anywhere from 1.01 to 1.34 from one run to the next), while two clients taking "
        "turns on one loop share whatever the machine does.",
        "",
        "| ratio | value | target | |",
        "|---|---:|---:|---|",
    ]
    for target in TARGETS:
        top, bottom = results[target.numerator], results[target.denominator]
        per_round = [
            a[target.figure] / b[target.figure]
            for a, b in zip(top, bottom, strict=True)
            if a[target.figure] and b[target.figure]
        ]
        if not per_round:
            lines.append(f"| {target.text} | n/a | {_bound(target)} | no requests completed |")
            continue
        value = Spread.of(per_round)
        verdict = (
            "judged below"
            if target.judged_interleaved
            else _verdict(value.median, target.bound, target.at_most)
        )
        lines.append(f"| {target.text} | {value.cell(2)} | {_bound(target)} | {verdict} |")
    return lines


def _bound(target: Target) -> str:
    if target.bound is None:
        return "(reference)"
    return f"{'≤' if target.at_most else '≥'} {target.bound:g}"


def _verdict(value: float, bound: float | None, at_most: bool) -> str:
    if bound is None:
        return ""
    if value <= bound if at_most else value >= bound:
        return "PASS"
    off = value / bound - 1 if at_most else 1 - value / bound
    return f"MISS ({'over' if at_most else 'short'} by {off:.0%})"


def _interleaved(env: BenchEnv, pairs: Pairs) -> list[str]:
    base, other = PAIR
    lines = [
        "### AsyncClient and raw aiohttp interleaved on one loop",
        "",
        "The same two clients once more, in one process on one asyncio loop, taking turns in "
        f"{SLICE * 1000:g} ms slices ({env.duration:g} s each in all, ABBA order) after "
        f"{env.warmup:g} s of warm-up: any change in the machine's load falls on both alike, "
        "so this is the steadier reading of microcall's own cost per request, and the one "
        "the target is judged on. CPU is the "
        "process's (`time.process_time()`) over each slice, drained to the last response, ÷ "
        f"requests. {_repeats(env).capitalize()}.",
        "",
        "| concurrency | raw aiohttp CPU µs/req | AsyncClient CPU µs/req | ratio | target | |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for c, runs in pairs.items():
        base_costs = [run[base]["cpu_us_per_request"] for run in runs]
        other_costs = [run[other]["cpu_us_per_request"] for run in runs]
        ratios = Spread.of([b / a for a, b in zip(base_costs, other_costs, strict=True) if a and b])
        lines.append(
            f"| {c} tasks | {Spread.of([x for x in base_costs if x]).cell(1)} "
            f"| {Spread.of([x for x in other_costs if x]).cell(1)} | {ratios.cell(2)} "
            f"| ≤ {AT_MOST_OVER_AIOHTTP:g} | {_verdict(ratios.median, AT_MOST_OVER_AIOHTTP, True)} |"
        )
    lines.append("")
    return lines


if __name__ == "__main__":
    from bench._standalone import main

    sys.exit(main(run, "http_clients"))
