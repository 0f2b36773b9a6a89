"""Response cache: the hit path's cost, and a cold-cache stampede.

The service (bench/_tail_backend.py, server core) answers every request
after 5 ms with a small body and no caching headers; the clients cache it
with ``CachePolicy(default_ttl=...)``, the policy for such services. A
redis-server (no persistence) runs on the server core too.

Hit path: each row is a fresh client process (client core) making calls one
after another for the timed window, after a warm-up that fills the cache.
It reports the client process's CPU time per call (user + system, all
threads) and the latency of each call; the service counts the requests it
got (1 for a cached row: the first miss).

Stampede: a fresh client process sends 1,000 identical calls at once on a
cold cache (a URL nobody asked for before); the service counts the requests
it got. With single flight it must be 1.

``python -m bench.cache [--quick]`` runs it on its own; ``--measure`` and
``--stampede`` are the client programs it starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from bench import BenchEnv
from bench._proc import run_json
from bench._stats import Spread, percentile
from bench._tail_backend import Backend
from microcall import AsyncClient
from microcall.cache import CachePolicy, MemoryBackend, RedisBackend, ResponseCache
from microcall.demo.backend import LatencyProfile

SERVICE_LATENCY = 0.005
PROFILE = LatencyProfile(fast=(SERVICE_LATENCY, SERVICE_LATENCY), slow=())
STAMPEDE = 1_000
# Longer than any run: every call after the first is a hit.
TTL = 3600.0
REDIS_START_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    label: str


HIT_MODES = (
    Mode("uncached", "no cache: every call goes to the service"),
    Mode("memory", "`MemoryBackend` hit"),
    Mode("redis", "`RedisBackend` hit (Redis on loopback)"),
)
STAMPEDE_MODES = (
    Mode("memory", "`MemoryBackend`, single flight (default)"),
    Mode("redis", "`RedisBackend`, single flight (default)"),
    Mode("memory-no-coalesce", "`MemoryBackend`, `CachePolicy(coalesce=False)`"),
)


# ---------------------------------------------------------------- the orchestrator


def run(env: BenchEnv) -> str:
    """Measure the hit path per mode (``env.repeats`` times) and the stampedes; the section."""
    hits: dict[Mode, list[dict[str, Any]]] = {mode: [] for mode in HIT_MODES}
    stampedes: dict[Mode, list[dict[str, Any]]] = {mode: [] for mode in STAMPEDE_MODES}
    run_ids = iter(range(1, 1_000_000))
    with Backend(env, PROFILE) as service, RedisServer(env) as redis_server:
        for repeat in range(env.repeats):
            for mode in HIT_MODES:
                run_id = next(run_ids)
                arguments = [
                    "--measure", mode.name,
                    "--url", service.url,
                    "--redis-port", str(redis_server.port),
                    "--run", str(run_id),
                    "--warmup", str(env.warmup),
                    "--duration", str(env.duration),
                ]  # fmt: skip
                result = run_json(
                    env, "bench.cache", arguments, budget=env.warmup + env.duration + 10
                )
                result["received"] = service.counts(run_id).received
                hits[mode].append(result)
                print(
                    f"  [{repeat + 1}/{env.repeats}] {mode.name:<9} "
                    f"{result['cpu_us_per_call']:.1f} us CPU per call, "
                    f"p50 {result['p50_ms']:.3f} ms, {result['calls']} calls, "
                    f"{result['received']} requests to the service, "
                    f"{result['backend_errors']} cache backend errors",
                    file=sys.stderr,
                    flush=True,
                )
            for mode in STAMPEDE_MODES:
                run_id = next(run_ids)
                arguments = [
                    "--stampede", mode.name,
                    "--url", service.url,
                    "--redis-port", str(redis_server.port),
                    "--run", str(run_id),
                    "--concurrency", str(STAMPEDE),
                ]  # fmt: skip
                result = run_json(env, "bench.cache", arguments, budget=30)
                result["received"] = service.counts(run_id).received
                stampedes[mode].append(result)
                print(
                    f"  [{repeat + 1}/{env.repeats}] stampede {mode.name:<18} "
                    f"{result['received']} requests for {result['calls']} calls "
                    f"({result['errors']} errors) in {result['seconds'] * 1000:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    return _section(env, hits, stampedes)


def _section(
    env: BenchEnv,
    hits: dict[Mode, list[dict[str, Any]]],
    stampedes: dict[Mode, list[dict[str, Any]]],
) -> str:
    repeats = (
        "one repeat (quick mode: a smoke check)" if env.repeats == 1 else f"{env.repeats} repeats"
    )
    lines = [
        "## Response cache: hit path and stampede",
        "",
        f"The service answers every request after {SERVICE_LATENCY * 1000:g} ms and sends no "
        f"caching headers; clients cache with `CachePolicy(default_ttl={TTL:g})`. Each row is "
        f"a fresh client process (`AsyncClient`, default asyncio loop) calling one URL "
        f"sequentially for {env.duration:g} s after {env.warmup:g} s of warm-up; {repeats}. CPU "
        "is the client process's user + system time over the timed window divided by the calls "
        "made in it. Each cell: median (min–max).",
        "",
        "| client | CPU per call, µs | latency p50, ms | latency p99, ms | calls timed | "
        "requests to the service / calls made (warm-up included) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode in HIT_MODES:
        runs = hits[mode]
        cpu = Spread.of([one["cpu_us_per_call"] for one in runs]).cell(1)
        p50 = Spread.of([one["p50_ms"] for one in runs]).cell(3)
        p99 = Spread.of([one["p99_ms"] for one in runs]).cell(3)
        calls = Spread.of([float(one["calls"]) for one in runs]).cell(0)
        received = " ; ".join(f"{one['received']:,} / {one['all_calls']:,}" for one in runs)
        lines.append(f"| {mode.label} | {cpu} | {p50} | {p99} | {calls} | {received} |")
    uncached = statistics.median(one["cpu_us_per_call"] for one in hits[HIT_MODES[0]])
    lines.append("")
    for mode in HIT_MODES[1:]:
        errors = [one["backend_errors"] for one in hits[mode]]
        if any(errors):
            lines.append(
                f"- {mode.label}: cache backend errors per repeat {errors} (a store slower than "
                "its timeout counts as failing; those calls went to the service uncached)."
            )
    for mode in HIT_MODES[1:]:
        cpu = statistics.median(one["cpu_us_per_call"] for one in hits[mode])
        lines.append(
            f"- {mode.label}: {cpu:.1f} µs of client CPU per call, "
            f"{cpu / uncached:.2f}× an uncached call's {uncached:.1f} µs "
            f"({'PASS' if cpu < uncached else 'MISS'}: a hit must cost less than a call)."
        )
    lines += [
        "",
        f"Stampede: {STAMPEDE:,} identical calls started at once on a cold cache, in a fresh "
        f"client process; the service counts the requests it got; {repeats}.",
        "",
        "| client | requests to the service | calls answered | errors | all answered in, ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode in STAMPEDE_MODES:
        runs = stampedes[mode]
        received = Spread.of([float(one["received"]) for one in runs]).cell(0)
        answered = Spread.of([float(one["calls"] - one["errors"]) for one in runs]).cell(0)
        failed = Spread.of([float(one["errors"]) for one in runs]).cell(0)
        took = Spread.of([one["seconds"] * 1000 for one in runs]).cell(0)
        lines.append(f"| {mode.label} | {received} | {answered} | {failed} | {took} |")
    lines.append("")
    for mode in STAMPEDE_MODES[:2]:
        worst = max(one["received"] for one in stampedes[mode])
        lines.append(
            f"- {mode.label}: at most {worst} request(s) to the service for {STAMPEDE:,} calls "
            f"({'PASS' if worst == 1 else 'MISS'}: must be 1)."
        )
    lines.append("")
    return "\n".join(lines)


class RedisServer:
    """A redis-server on a free loopback port, pinned to the server cores, for one run."""

    def __init__(self, env: BenchEnv) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make bench installs it)")
        with socket.socket() as probe:  # redis has no port 0: take a free one
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self._process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        env.pin_server(self._process.pid)
        give_up = time.monotonic() + REDIS_START_TIMEOUT
        while not _redis_answers(self.port):
            if self._process.poll() is not None or time.monotonic() > give_up:
                self.close()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=REDIS_START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------- the client programs


def _cache(mode: str, redis_port: int, run_id: int) -> ResponseCache | None:
    policy = CachePolicy(default_ttl=TTL, coalesce=not mode.endswith("no-coalesce"))
    if mode == "uncached":
        return None
    if mode.startswith("memory"):
        return ResponseCache(MemoryBackend(), policy)
    if mode == "redis":
        backend = RedisBackend(f"redis://127.0.0.1:{redis_port}/0")
        return ResponseCache(backend, policy, namespace=f"bench{run_id}")
    raise ValueError(f"unknown mode {mode!r}")


async def _measure(
    mode: str, url: str, redis_port: int, run_id: int, warmup: float, duration: float
) -> dict[str, Any]:
    path = f"/run/{run_id}/call/0"
    latencies: list[float] = []
    cache = _cache(mode, redis_port, run_id)
    async with AsyncClient(url, cache=cache) as client:
        warm_until = time.perf_counter() + warmup
        warmup_calls = 0
        while time.perf_counter() < warm_until:
            (await client.get(path)).raise_for_status()
            warmup_calls += 1
        cpu_started = time.process_time()
        started = time.perf_counter()
        ends = started + duration
        now = started
        while now < ends:
            response = await client.get(path)
            after = time.perf_counter()
            latencies.append(after - now)
            now = after
            if response.status_code != 200:
                raise RuntimeError(f"the service answered {response.status_code}")
        cpu = time.process_time() - cpu_started
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "mode": mode,
        "calls": len(latencies),
        "all_calls": warmup_calls + len(latencies),
        "seconds": elapsed,
        "cpu_us_per_call": cpu / len(latencies) * 1e6,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "misses": 0 if cache is None else cache.stats.misses,
        "backend_errors": 0 if cache is None else cache.stats.backend_errors,
    }


async def _stampede(
    mode: str, url: str, redis_port: int, run_id: int, concurrency: int
) -> dict[str, Any]:
    path = f"/run/{run_id}/call/0"
    async with AsyncClient(url, cache=_cache(mode, redis_port, run_id)) as client:
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(client.get(path) for _ in range(concurrency)), return_exceptions=True
        )
        seconds = time.perf_counter() - started
    errors = [
        outcome
        for outcome in outcomes
        if isinstance(outcome, BaseException) or outcome.status_code != 200
    ]
    return {
        "mode": mode,
        "calls": concurrency,
        "errors": len(errors),
        "first_error": repr(errors[0])[:300] if errors else "",
        "seconds": seconds,
    }


def _client_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache")
    parser.add_argument("--measure")
    parser.add_argument("--stampede")
    parser.add_argument("--url", required=True)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--run", type=int, required=True)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=STAMPEDE)
    arguments = parser.parse_args(argv)
    if arguments.measure:
        result = asyncio.run(
            _measure(
                arguments.measure,
                arguments.url,
                arguments.redis_port,
                arguments.run,
                arguments.warmup,
                arguments.duration,
            )
        )
    else:
        result = asyncio.run(
            _stampede(
                arguments.stampede,
                arguments.url,
                arguments.redis_port,
                arguments.run,
                arguments.concurrency,
            )
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    if "--measure" in sys.argv or "--stampede" in sys.argv:
        sys.exit(_client_main(sys.argv[1:]))
    from bench._standalone import main

    sys.exit(main(run, "cache"))
