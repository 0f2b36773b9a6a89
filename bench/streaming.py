"""Streamed responses: time to first byte, peak RSS and CPU per MiB for a 256 MiB body.

nginx serves a 256 MiB file from a temporary directory (sendfile, on the
server core), so the server is never what is measured. Each measurement is
a fresh client process on the client core (``python -m bench.streaming
--client PEER URL``): it opens its client, fetches a small file once to open
the keep-alive connection, then fetches the big one ``DOWNLOADS`` times and
prints what it saw as JSON:

- ``ttfb_ms``: from the call to the first byte of the body in the caller's
  hand (for a buffered call, the whole body: the response is its first
  byte), the median of the downloads;
- ``total_ms``: from the call to the last byte, the median;
- ``rss_growth_mib``: the process's peak RSS after the first download less
  its peak before it (``ru_maxrss``): what holding the body cost (later
  downloads are left out: the allocator keeps freed memory for reuse, so
  the peak creeps up however little each download holds);
- ``cpu_ms_per_mib``: the process's CPU time (user + system) over the
  downloads ÷ the MiB downloaded (a single download's CPU is a tenth of a
  second, too little to read steadily on a shared machine).

Rows are measured in rounds, every other round in reverse order, and each
ratio is the median of its per-round ratios (the two rows of a ratio ran in
the same round, under the same load).

``python -m bench.streaming [--quick]`` runs this section on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchEnv
from bench._nginx import serve_files
from bench._proc import run_json
from bench._stats import Spread

BODY_MIB = 256
BODY_SIZE = BODY_MIB * 1024 * 1024
DOWNLOADS = 4  # per client process
MIB = 1024 * 1024
# Long enough for the slowest row (the buffered one) on a loaded machine.
BUDGET = 120.0


@dataclass(frozen=True, slots=True)
class Row:
    peer: str
    label: str


ROWS: tuple[Row, ...] = (
    Row("aiohttp-stream", "raw aiohttp: `async for chunk in response.content.iter_any()`"),
    Row("microcall-stream", "microcall `AsyncClient.stream` (H1Transport): `aiter_bytes()`"),
    Row(
        "microcall-aiohttp-stream",
        "microcall `AsyncClient.stream` over `AiohttpTransport`: `aiter_bytes()`",
    ),
    Row("microcall-blocking-stream", "microcall `Client.stream` (blocking): `iter_bytes()`"),
    Row("microcall-buffered", "microcall `AsyncClient.get` (buffered, no size cap)"),
)

# (text, figure, numerator peer, denominator peer, digits shown)
RATIOS: tuple[tuple[str, str, str, str, int], ...] = (
    ("CPU per MiB: `AsyncClient.stream` ÷ raw aiohttp", "cpu_ms_per_mib", "microcall-stream", "aiohttp-stream", 2),
    ("CPU per MiB: `AsyncClient.stream` over aiohttp ÷ raw aiohttp", "cpu_ms_per_mib", "microcall-aiohttp-stream", "aiohttp-stream", 2),
    ("CPU per MiB: `Client.stream` ÷ raw aiohttp", "cpu_ms_per_mib", "microcall-blocking-stream", "aiohttp-stream", 2),
    ("time to first byte: buffered ÷ streamed", "ttfb_ms", "microcall-buffered", "microcall-stream", 0),
    ("RSS growth: buffered ÷ streamed", "rss_growth_mib", "microcall-buffered", "microcall-stream", 0),
)  # fmt: skip

Results = dict[str, list[dict[str, Any]]]


def run(env: BenchEnv) -> str:
    """Measure every row ``env.repeats`` times against one nginx; return the markdown section."""
    results: Results = {row.peer: [] for row in ROWS}
    order = [row.peer for row in ROWS]
    with _serve_file(env) as url:
        for round_number in range(1, env.repeats + 1):
            for peer in order if round_number % 2 else reversed(order):
                result = run_json(env, "bench.streaming", ["--client", peer, url], budget=BUDGET)
                results[peer].append(result)
                print(
                    f"  [{round_number}/{env.repeats}] {peer:<26} ttfb {result['ttfb_ms']:8.1f} ms"
                    f"  total {result['total_ms']:8.1f} ms  rss +{result['rss_growth_mib']:6.1f} MiB"
                    f"  {result['cpu_ms_per_mib']:6.2f} ms CPU/MiB",
                    file=sys.stderr,
                    flush=True,
                )
    return _section(env, results)


@contextlib.contextmanager
def _serve_file(env: BenchEnv) -> Iterator[str]:
    """nginx serving ``/big.bin`` (256 MiB) and ``/small.bin``; yields the base URL."""
    with tempfile.TemporaryDirectory(prefix="microcall-bench-stream-") as directory:
        www = Path(directory) / "www"
        www.mkdir()
        with (www / "big.bin").open("wb") as big:
            block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
            for _ in range(BODY_MIB):
                big.write(block)
        (www / "small.bin").write_bytes(b"s" * 1024)
        with serve_files(env, www) as url:
            yield url


def _section(env: BenchEnv, results: Results) -> str:
    repeats = (
        "one run per row (quick mode: a smoke check, not a measurement)"
        if env.repeats == 1
        else f"{env.repeats} runs per row"
    )
    lines = [
        "## Streamed responses: a 256 MiB body",
        "",
        "nginx serves a 256 MiB file over keep-alive HTTP/1.1 on 127.0.0.1 (sendfile, on the "
        "server core). Each row is a fresh client process on the client core, on asyncio's "
        "loop (the blocking `Client`'s background loop is uvloop where installed): a small "
        f"request opens the connection, then the big one is fetched {DOWNLOADS} times; "
        f"{repeats}, in rounds, every other round in reverse order.",
        "",
        "- **first byte**: from the call to the first byte of the body in the caller's hand "
        "(a buffered call hands over the whole body at once); the median of the downloads.",
        "- **total**: from the call to the last byte; the median of the downloads.",
        "- **RSS growth**: the process's peak RSS after the first download less its peak "
        "before it.",
        "- **CPU ms/MiB**: the process's CPU time (user + system) over the downloads ÷ the "
        "MiB downloaded.",
        "",
        "Each cell: median over the runs (min–max in brackets).",
        "",
        "| client | first byte ms | total ms | RSS growth MiB | CPU ms/MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in ROWS:
        runs = results[row.peer]
        cells = [
            Spread.of([run["ttfb_ms"] for run in runs]).cell(1),
            Spread.of([run["total_ms"] for run in runs]).cell(0),
            Spread.of([run["rss_growth_mib"] for run in runs]).cell(1),
            Spread.of([run["cpu_ms_per_mib"] for run in runs]).cell(2),
        ]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ratios within each round (median of the per-round ratios, lowest and highest in "
        "brackets):",
        "",
        "| ratio | value |",
        "|---|---:|",
    ]
    for text, figure, top, bottom, digits in RATIOS:
        per_round = [
            a[figure] / b[figure]
            for a, b in zip(results[top], results[bottom], strict=True)
            if b[figure]
        ]
        lines.append(f"| {text} | {Spread.of(per_round).cell(digits)} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ the client process


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Stopwatch:
    """The timings of a client's downloads, and the CPU and peak RSS around them all."""

    def __init__(self) -> None:
        self.rss_before = _peak_rss_mib()
        self.cpu_before = _cpu()
        self.ttfb: list[float] = []
        self.totals: list[float] = []
        self._received = 0
        self._started = 0.0
        self._rss_first = 0.0

    def start(self) -> None:
        """A download begins (just before the call)."""
        self._received = 0
        self._started = time.perf_counter()

    def got(self, size: int) -> None:
        if not self._received:
            self.ttfb.append(time.perf_counter() - self._started)
        self._received += size

    def done(self) -> None:
        self.totals.append(time.perf_counter() - self._started)
        if len(self.totals) == 1:
            self._rss_first = _peak_rss_mib()
        if self._received != BODY_SIZE:
            raise RuntimeError(f"received {self._received} bytes, not {BODY_SIZE}")

    def result(self) -> dict[str, Any]:
        cpu = _cpu() - self.cpu_before
        return {
            "ttfb_ms": statistics.median(self.ttfb) * 1000,
            "total_ms": statistics.median(self.totals) * 1000,
            "rss_growth_mib": self._rss_first - self.rss_before,
            "cpu_ms_per_mib": cpu * 1000 / (BODY_MIB * len(self.totals)),
        }


async def _aiohttp_stream(base: str) -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/small.bin") as warm:
            await warm.read()
        watch = Stopwatch()
        for _ in range(DOWNLOADS):
            watch.start()
            async with session.get(f"{base}/big.bin") as response:
                async for chunk in response.content.iter_any():
                    watch.got(len(chunk))
            watch.done()
        return watch.result()


async def _microcall_stream(base: str, transport: Any = None) -> dict[str, Any]:
    import microcall

    options: dict[str, Any] = {"timeout": BUDGET}
    if transport is not None:
        options["transport"] = transport
    async with microcall.AsyncClient(base, **options) as client:
        (await client.get("/small.bin")).raise_for_status()
        watch = Stopwatch()
        for _ in range(DOWNLOADS):
            watch.start()
            async with client.stream("GET", "/big.bin") as response:
                async for chunk in response.aiter_bytes():
                    watch.got(len(chunk))
            watch.done()
        return watch.result()


async def _microcall_aiohttp_stream(base: str) -> dict[str, Any]:
    from microcall.transports.aiohttp import AiohttpTransport

    return await _microcall_stream(base, AiohttpTransport())


async def _microcall_buffered(base: str) -> dict[str, Any]:
    import microcall

    limits = microcall.Limits(max_response_size=None)
    async with microcall.AsyncClient(base, timeout=BUDGET, limits=limits) as client:
        (await client.get("/small.bin")).raise_for_status()
        watch = Stopwatch()
        for _ in range(DOWNLOADS):
            watch.start()
            response = await client.get("/big.bin")
            watch.got(len(response.content))
            watch.done()
            del response
        return watch.result()


def _blocking_stream(base: str) -> dict[str, Any]:
    import microcall

    with microcall.Client(base, timeout=BUDGET) as client:
        client.get("/small.bin").raise_for_status()
        watch = Stopwatch()
        for _ in range(DOWNLOADS):
            watch.start()
            with client.stream("GET", "/big.bin") as response:
                for chunk in response.iter_bytes():
                    watch.got(len(chunk))
            watch.done()
        return watch.result()


ASYNC_PEERS: dict[str, Callable[[str], Coroutine[Any, Any, dict[str, Any]]]] = {
    "aiohttp-stream": _aiohttp_stream,
    "microcall-stream": _microcall_stream,
    "microcall-aiohttp-stream": _microcall_aiohttp_stream,
    "microcall-buffered": _microcall_buffered,
}


def client_main(peer: str, base: str) -> int:
    """The client process: one download by ``peer``; its figures as one JSON line."""
    if peer == "microcall-blocking-stream":
        result = _blocking_stream(base)
    else:
        result = asyncio.run(ASYNC_PEERS[peer](base))
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.streaming")
    parser.add_argument("--quick", action="store_true", help="one round: a smoke check")
    parser.add_argument("--client", nargs=2, metavar=("PEER", "URL"), help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.client:
        return client_main(*arguments.client)
    print(run(BenchEnv.create(quick=arguments.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
