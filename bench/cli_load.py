"""``microcall load`` as a load generator: what rate it reaches, at what CPU, and whether it tells the truth.

Two measurements.

1. Against nginx (a fixed small 200 on the server core), each generator
   asked for the same rates in its own process on the client core:
   ``microcall load`` (open loop, one process) and locust (headless,
   ``FastHttpUser`` with ``constant_throughput`` pacing, the way locust
   aims at a rate). The achieved rate is what each sent per second of its
   run; the CPU per call is the process's user + system time (from
   ``wait4``) over the calls it made, start-up included for both. wrk2
   and vegeta are the usual open-loop references, but Debian has no
   package of either (``apt-cache policy wrk2 vegeta``), so they are
   left out rather than built from source.

2. Against a heavy-tailed backend (97% 2-4 ms, 2% 50 ms, 1% 500 ms, the
   demo's profile), at a rate far below its capacity: the percentiles
   ``microcall load`` reports against the server's own record of the same
   calls (each handler's time from entry to return, kept exactly). The
   latency from each call's send should differ from the server's by the
   loopback round trip and the client's own work (under a couple of ms on
   a quiet machine) plus the sketch's 1% accuracy; the headline latency,
   from when each call was due, adds the generator's lag, shown apart.

``python -m bench.cli_load [--quick]`` runs it alone; ``python -m bench.cli_load
serve`` is the backend of part 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchEnv
from bench._machine import ROOT
from bench._nginx import serve_ok
from bench._proc import ServerProcess, answer_commands
from bench._stats import Spread, percentile

RATES = (1000.0, 3000.0, 6000.0)
QUICK_RATES = (500.0, 2000.0)
# Locust's users each pace themselves at rate / USERS calls a second.
LOCUST_USERS = 50
TAIL_RATE = 100.0
TAIL_DURATION = 30.0
QUICK_TAIL_DURATION = 4.0
QUANTILES = (0.5, 0.9, 0.99, 0.999)
# Agreement asked of part 2: the loopback round trip and the client's work
# (well under 2 ms on a quiet machine) plus the sketch's 1% accuracy.
AGREEMENT_ABSOLUTE = 0.002
AGREEMENT_RELATIVE = 0.011
GRACE = 60.0

LOCUSTFILE = """\
from locust import FastHttpUser, constant_throughput, task


class Caller(FastHttpUser):
    wait_time = constant_throughput({per_user})

    @task
    def call(self):
        self.client.get("/")
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Measured:
    """One generator's run: calls made, over how long, and the CPU it took."""

    calls: int
    seconds: float
    cpu: float
    p99: float | None = None

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_call_us(self) -> float:
        return self.cpu / self.calls * 1e6 if self.calls else math.nan


def _run_timed(env: BenchEnv, command: list[str], budget: float) -> tuple[str, float]:
    """Run ``command`` on the client cores; its stdout and the CPU seconds it used."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    env.pin_client(process.pid)
    try:
        stdout, stderr = process.communicate(timeout=budget + GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise RuntimeError(f"{' '.join(command[:4])} did not finish in time") from None
    # The child is reaped by communicate(); its rusage is in our children's totals.
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} exited {process.returncode}: {stderr[-800:]}")
    return stdout, _cpu_of_last_child()


_children_cpu = 0.0


def _cpu_of_last_child() -> float:
    """CPU seconds of the child reaped since the last call (children run one at a time here)."""
    global _children_cpu
    usage = os.times()
    total = usage.children_user + usage.children_system
    used, _children_cpu = total - _children_cpu, total
    return used


def measure_microcall(env: BenchEnv, url: str, rate: float) -> Measured:
    command = [env.python, "-m", "microcall", "load", url, "--rate", f"{rate:g}"]
    command += ["--duration", f"{env.duration:g}", "--json", "--quiet", "--connections", "50"]
    stdout, cpu = _run_timed(env, command, env.duration)
    (result,) = json.loads(stdout)["runs"]
    seconds = max(result["seconds"], env.duration)
    return Measured(calls=result["calls"], seconds=seconds, cpu=cpu, p99=result["latency"]["p99"])


def measure_locust(env: BenchEnv, url: str, rate: float) -> Measured | None:
    locust = Path(sys.executable).with_name("locust")
    if not locust.exists():
        return None
    with tempfile.TemporaryDirectory(prefix="microcall-bench-locust-") as directory:
        locustfile = Path(directory) / "locustfile.py"
        locustfile.write_text(LOCUSTFILE.format(per_user=rate / LOCUST_USERS))
        command = [str(locust), "-f", str(locustfile), "--headless", "--json", "--skip-log"]
        command += ["-u", str(LOCUST_USERS), "-r", str(LOCUST_USERS)]
        command += ["-t", f"{max(1, round(env.duration))}s", "--host", url.rstrip("/")]
        command += ["--loglevel", "ERROR"]
        stdout, cpu = _run_timed(env, command, env.duration + 10)
    (stats,) = json.loads(stdout)
    # Response times come as a histogram of whole milliseconds.
    times = sorted(float(ms) for ms, count in stats["response_times"].items() for _ in range(count))
    seconds = stats["last_request_timestamp"] - stats["start_time"]
    return Measured(
        calls=stats["num_requests"],
        seconds=max(seconds, 1e-9),
        cpu=cpu,
        p99=percentile(times, 0.99) / 1000 if times else None,
    )


def _generators_section(env: BenchEnv) -> list[str]:
    rates = QUICK_RATES if env.quick else RATES
    lines = [
        "| asked/s | microcall load: achieved/s | CPU µs/call | p99 ms | locust: achieved/s | CPU µs/call | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with serve_ok(env) as url:
        for rate in rates:
            ours = [measure_microcall(env, url, rate) for _ in range(env.repeats)]
            theirs = [measure_locust(env, url, rate) for _ in range(env.repeats)]
            cells = [f"{rate:,.0f}", *_cells(ours)]
            found = [m for m in theirs if m is not None]
            cells += _cells(found) if found else ["not installed"] * 3
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _cells(runs: Sequence[Measured]) -> list[str]:
    p99s = [m.p99 * 1000 for m in runs if m.p99 is not None]
    return [
        Spread.of([m.rate for m in runs]).cell(),
        Spread.of([m.cpu_per_call_us for m in runs]).cell(),
        Spread.of(p99s).cell(1) if p99s else "n/a",
    ]


# ---------------------------------------------------------------- part 2: the truth of the tail


def _serve() -> int:
    """The heavy-tailed backend, keeping each handler's own duration."""
    from aiohttp import web

    from microcall.demo.backend import LatencyProfile

    profile = LatencyProfile()
    rng = random.Random(1)
    durations: list[float] = []

    async def call(request: web.Request) -> web.Response:
        entered = time.perf_counter()
        await asyncio.sleep(profile.draw(rng))
        durations.append(time.perf_counter() - entered)
        return web.Response(text="ok")

    def stats(_: str) -> dict[str, Any]:
        ordered = sorted(durations)
        return {
            "calls": len(ordered),
            "in_flight": 0,
            **{str(q): percentile(ordered, q) if ordered else None for q in QUANTILES},
        }

    def reset(_: str) -> dict[str, Any]:
        durations.clear()
        return {"in_flight": 0}

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/call", call)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
            host, port = runner.addresses[0][:2]
            print(f"http://{host}:{port}", flush=True)
            await answer_commands({"stats": stats, "reset": reset})
        finally:
            await runner.cleanup()

    from microcall.cli.load._generator import fast_loop

    # uvloop, as the generator has: the server's own work outside its
    # handlers (parsing, writing) is what its record leaves out.
    with asyncio.Runner(loop_factory=fast_loop()) as runner:
        runner.run(main())
    return 0


def _tail_section(env: BenchEnv) -> list[str]:
    duration = QUICK_TAIL_DURATION if env.quick else TAIL_DURATION
    command = [env.python, "-m", "bench.cli_load", "serve"]
    with contextlib.closing(ServerProcess(env, command, address_prefix="http://")) as backend:
        url = backend.address + "/call"
        stdout, _cpu = _run_timed(
            env,
            [
                env.python,
                "-m",
                "microcall",
                "load",
                url,
                "--rate",
                f"{TAIL_RATE:g}",
                "--duration",
                f"{duration:g}",
                "--json",
                "--quiet",
            ],
            duration,
        )
        server = backend.command("stats x")
    (result,) = json.loads(stdout)["runs"]
    reported, from_send = result["latency"], result["latency_from_send"]
    lines = [
        f"{result['calls']:,} calls at {TAIL_RATE:g}/s for {duration:g} s; the server recorded "
        f"{server['calls']:,}.",
        "",
        "| percentile | server's record, ms | reported from the send, ms | difference | agree "
        "| reported from when due, ms |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for q in QUANTILES:
        key = f"p{q * 100:g}"
        theirs = server[str(q)]
        difference = from_send[key] - theirs
        allowed = AGREEMENT_ABSOLUTE + AGREEMENT_RELATIVE * theirs
        verdict = "PASS" if abs(difference) <= allowed else "MISS"
        lines.append(
            f"| {key} | {theirs * 1000:.2f} | {from_send[key] * 1000:.2f} | "
            f"{difference * 1000:+.2f} | {verdict} (±{allowed * 1000:.1f}) | "
            f"{reported[key] * 1000:.2f} |"
        )
    lag = result["generator_lag"]
    lines += [
        "",
        f"The generator's own lag: p50 {lag['p50'] * 1000:.2f} ms, p99 {lag['p99'] * 1000:.2f} ms, "
        f"max {lag['max'] * 1000:.1f} ms. The headline latency (from when due) includes it; "
        "when the two columns differ, the generator fell behind and says so.",
    ]
    return lines


def run(env: BenchEnv) -> str:
    """Both parts, as a markdown section."""
    lines = [
        "## The `microcall load` generator",
        "",
        "Against nginx on the server core, each generator in its own process on the client "
        "core, asked for the same rate. Achieved: calls sent per second of the run. CPU: the "
        "process's user + system time over its calls, start-up included. wrk2 and vegeta "
        "have no Debian package, so they are not in the table.",
        "",
        *_generators_section(env),
        "",
        "### Does it tell the truth about the tail?",
        "",
        "A heavy-tailed backend (97% 2-4 ms, 2% 50 ms, 1% 500 ms) keeps each handler's own "
        "duration; `microcall load` reports latency from when each call was due.",
        "",
        *_tail_section(env),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        sys.exit(_serve())
    from bench._standalone import main

    sys.exit(main(run, "cli_load"))
