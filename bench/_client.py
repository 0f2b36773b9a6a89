"""One client measurement in its own process: ``python -m bench._client PEER C SECONDS --url URL``.

Runs PEER (a client library used the way its users use it) with C requests
kept in flight against URL: first ``--warmup`` seconds unmeasured (connections
open, caches fill), then a timed window of SECONDS. It prints one JSON object:
requests completed in the window, the window's length, the process CPU time
spent in it (user + system, every thread of the process), and p50 / p99
latency of those requests.

Each request's latency runs from just before the library is asked for the
response to the moment the caller has its body. A request counts in the
window it completes in.

``PEER`` may also name two asyncio peers, ``a/b``: they then take turns on
one loop in slices of ``--slice`` seconds, and the result gives each one's
requests and CPU time over SECONDS in all (see ``_interleave``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import contextlib
import io
import json
import os
import resource
import ssl
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any

from bench._stats import percentile

OK = 200

# A request not finished this long after the window closed is stuck (microcall
# gives up at its 10 s default deadline, aio-request at the 5 s it is given;
# requests has no timeout at all): the process reports what it has and where
# it hangs, and exits.
STRAGGLER_LIMIT = 30.0


class Window:
    """Warm-up, then the timed window; workers report each finished request to it."""

    def __init__(self, warmup: float, duration: float) -> None:
        self.warmup = warmup
        self.duration = duration
        self.measuring = False
        self.finished = False
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""
        self._started = self._ended = 0.0
        self._cpu_started = self._cpu_ended = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None  # set by asyncio peers

    def done(self, began: float) -> None:
        if self.measuring:
            self.latencies.append(time.perf_counter() - began)

    def failed(self, what: object) -> None:
        if self.measuring:
            self.errors += 1
            self.first_error = self.first_error or repr(what)[:300]

    def open(self) -> None:
        self._cpu_started = _process_cpu()
        self._started = time.perf_counter()
        self.measuring = True

    def close(self) -> None:
        self.measuring = False
        self._ended = time.perf_counter()
        self._cpu_ended = _process_cpu()
        self.finished = True

    def time_blocking(self) -> None:
        """Drive the window from a thread that does nothing else."""
        time.sleep(self.warmup)
        self.open()
        time.sleep(self.duration)
        self.close()

    async def time_async(self) -> None:
        """Drive the window from a task on the measured event loop."""
        await asyncio.sleep(self.warmup)
        self.open()
        await asyncio.sleep(self.duration)
        self.close()

    def result(self) -> dict[str, Any]:
        latencies = sorted(self.latencies)
        seconds = self._ended - self._started if self.finished else 0.0
        cpu = self._cpu_ended - self._cpu_started if self.finished else 0.0
        count = len(latencies)
        return {
            "requests": count,
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "rps": count / seconds if seconds > 0 else 0.0,
            "cpu_us_per_request": cpu / count * 1e6 if count else None,
            "p50_ms": percentile(latencies, 0.50) * 1e3 if count else None,
            "p99_ms": percentile(latencies, 0.99) * 1e3 if count else None,
        }


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------ asyncio peers
#
# An asyncio peer opens its client and yields ``call``: one request, read to
# the end, returning the status. Every peer pays the same extra coroutine
# layer for it, and the same peers serve both the plain and interleaved runs.

AsyncCall = Callable[[], Coroutine[Any, Any, int]]
AsyncPeer = Callable[[str], contextlib.AbstractAsyncContextManager[AsyncCall]]


@contextlib.asynccontextmanager
async def raw_aiohttp(url: str) -> AsyncIterator[AsyncCall]:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def call() -> int:
            async with session.get(url) as response:
                await response.read()
                return response.status

        yield call


@contextlib.asynccontextmanager
async def aio_request_client(url: str) -> AsyncIterator[AsyncCall]:
    import aio_request
    import aiohttp

    async with aiohttp.ClientSession() as session:
        client = aio_request.setup(transport=aio_request.AioHttpTransport(session), endpoint=url)

        async def call() -> int:
            async with client.request(
                aio_request.get(""), deadline=aio_request.Deadline.from_timeout(5)
            ) as response:
                await response.read()
                status: int = response.status
                return status

        yield call


@contextlib.asynccontextmanager
async def microcall_async(url: str) -> AsyncIterator[AsyncCall]:
    import microcall

    async with microcall.AsyncClient(url) as client:

        async def call() -> int:
            return (await client.get("")).status_code

        yield call


@contextlib.asynccontextmanager
async def raw_httpx(url: str) -> AsyncIterator[AsyncCall]:
    import httpx

    async with httpx.AsyncClient() as client:

        async def call() -> int:
            response = await client.get(url)
            return response.status_code

        yield call


@contextlib.asynccontextmanager
async def microcall_httpx(url: str) -> AsyncIterator[AsyncCall]:
    import microcall
    from microcall.transports.httpx import HttpxTransport

    async with microcall.AsyncClient(url, transport=HttpxTransport()) as client:

        async def call() -> int:
            return (await client.get("")).status_code

        yield call


def _trusting(ca: str) -> ssl.SSLContext:
    """Verify the server against ``ca`` alone (the benchmark's throwaway CA)."""
    return ssl.create_default_context(cafile=ca)


@contextlib.asynccontextmanager
async def raw_httpx_h2(ca: str, url: str) -> AsyncIterator[AsyncCall]:
    import httpx

    async with httpx.AsyncClient(http2=True, verify=_trusting(ca)) as client:
        first = await client.get(url)
        if first.http_version != "HTTP/2":
            raise SystemExit(f"the server spoke {first.http_version}, not HTTP/2")

        async def call() -> int:
            response = await client.get(url)
            return response.status_code

        yield call


@contextlib.asynccontextmanager
async def microcall_httpx_h2(ca: str, url: str) -> AsyncIterator[AsyncCall]:
    import microcall
    from microcall.transports.httpx import HttpxTransport

    transport = HttpxTransport(verify=_trusting(ca))  # HTTP/2 is its default
    async with microcall.AsyncClient(url, transport=transport) as client:

        async def call() -> int:
            return (await client.get("")).status_code

        yield call


@contextlib.asynccontextmanager
async def floor_httptools(url: str) -> AsyncIterator[AsyncCall]:
    from bench._floor import floor_client

    async with floor_client(url) as call:
        yield call


@contextlib.asynccontextmanager
async def raw_pyreqwest(url: str) -> AsyncIterator[AsyncCall]:
    from pyreqwest.client import ClientBuilder

    async with ClientBuilder().build() as client:

        async def call() -> int:
            response = await client.get(url).build().send()
            await response.bytes()
            status: int = response.status
            return status

        yield call


@contextlib.asynccontextmanager
async def microcall_h1(url: str) -> AsyncIterator[AsyncCall]:
    import microcall
    from microcall.transports.h1 import H1Transport

    async with microcall.AsyncClient(url, transport=H1Transport()) as client:

        async def call() -> int:
            return (await client.get("")).status_code

        yield call


@contextlib.asynccontextmanager
async def microcall_aiohttp(url: str) -> AsyncIterator[AsyncCall]:
    import microcall
    from microcall.transports.aiohttp import AiohttpTransport

    async with microcall.AsyncClient(url, transport=AiohttpTransport()) as client:

        async def call() -> int:
            return (await client.get("")).status_code

        yield call


async def _call_in_loop(call: AsyncCall, window: Window) -> None:
    while not window.finished:
        began = time.perf_counter()
        try:
            status = await call()
        except Exception as exc:
            window.failed(exc)
            continue
        if status == OK:
            window.done(began)
        else:
            window.failed(status)


async def _measure_async(peer: AsyncPeer, url: str, c: int, window: Window) -> None:
    window.loop = asyncio.get_running_loop()
    async with peer(url) as call:
        tasks = [asyncio.create_task(_call_in_loop(call, window)) for _ in range(c)]
        await window.time_async()
        await asyncio.gather(*tasks)


async def _interleave(
    peers: list[AsyncPeer], url: str, c: int, warmup: float, seconds: float, slice_length: float
) -> list[dict[str, Any]]:
    """Alternate the peers in short slices on one loop; CPU and requests summed per peer.

    Slow changes in the machine's load (other work starting and stopping)
    fall on every peer alike, which separate processes minutes apart cannot
    promise. Slices run in ABBA order so a trend within the run cancels too.
    The last peer's result carries its per-round CPU/request ratio to the first.
    """
    async with contextlib.AsyncExitStack() as stack:
        calls = [await stack.enter_async_context(peer(url)) for peer in peers]
        for call in calls:
            await _burst(call, c, warmup / len(calls))
        tallies = [Tally() for _ in calls]
        ratios: list[float] = []
        rounds = max(1, round(seconds / len(calls) / slice_length))
        for number in range(rounds):
            order = list(zip(calls, tallies, strict=True))
            for call, tally in order if number % 2 == 0 else reversed(order):
                tally.add(*await _burst(call, c, slice_length))
            first, last = tallies[0].last_cost, tallies[-1].last_cost
            if first and last:
                ratios.append(last / first)
    results = [tally.result() for tally in tallies]
    results[-1]["round_ratios"] = ratios
    return results


class Tally:
    """Requests, errors and CPU time summed over one peer's slices."""

    def __init__(self) -> None:
        self.requests = self.errors = 0
        self.cpu_seconds = 0.0
        self.last_cost = 0.0  # CPU per request in the latest slice

    def add(self, requests: int, errors: int, cpu_seconds: float) -> None:
        self.requests += requests
        self.errors += errors
        self.cpu_seconds += cpu_seconds
        self.last_cost = cpu_seconds / requests if requests else 0.0

    def result(self) -> dict[str, Any]:
        count = self.requests
        return {
            "requests": count,
            "errors": self.errors,
            "cpu_seconds": self.cpu_seconds,
            "cpu_us_per_request": self.cpu_seconds / count * 1e6 if count else None,
        }


async def _burst(call: AsyncCall, c: int, seconds: float) -> tuple[int, int, float]:
    """``c`` tasks calling for ``seconds``, then drained: (requests, errors, process CPU)."""
    counts = [0, 0]
    stopping = False

    async def worker() -> None:
        while not stopping:
            try:
                status = await call()
            except Exception:
                counts[1] += 1
                continue
            counts[0 if status == OK else 1] += 1

    # process_time: nanosecond resolution, which a slice of a fraction of a second needs.
    cpu_started = time.process_time()
    tasks = [asyncio.create_task(worker()) for _ in range(c)]
    await asyncio.sleep(seconds)
    stopping = True
    await asyncio.gather(*tasks)
    return counts[0], counts[1], time.process_time() - cpu_started


# ------------------------------------------------------------------ thread peers


def _in_threads(window: Window, call: Callable[[], int], c: int) -> None:
    """``c`` threads, each making blocking calls back to back (``call`` returns a status)."""

    def worker() -> None:
        while not window.finished:
            began = time.perf_counter()
            try:
                status = call()
            except Exception as exc:
                window.failed(exc)
                continue
            if status == OK:
                window.done(began)
            else:
                window.failed(status)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(c)]
    for thread in threads:
        thread.start()
    window.time_blocking()
    for thread in threads:
        thread.join()


def _keep_in_flight(
    window: Window, submit: Callable[[], cf.Future[Any]], status_of: Callable[[Any], int], c: int
) -> None:
    """Keep ``c`` futures outstanding: a new call starts as soon as one completes."""
    slots = threading.Semaphore(c)

    def on_done(began: float, future: cf.Future[Any]) -> None:
        try:
            status = status_of(future.result())
        except Exception as exc:
            window.failed(exc)
        else:
            if status == OK:
                window.done(began)
            else:
                window.failed(status)
        finally:
            slots.release()

    def feeder() -> None:
        while not window.finished:
            slots.acquire()
            began = time.perf_counter()
            future = submit()
            future.add_done_callback(partial(on_done, began))
        for _ in range(c):  # let the last calls finish before the client closes
            slots.acquire()

    thread = threading.Thread(target=feeder, daemon=True)
    thread.start()
    window.time_blocking()
    thread.join()


def requests_session(url: str, c: int, window: Window) -> None:
    import requests

    with requests.Session() as session:

        def call() -> int:
            response = session.get(url)
            response.content  # noqa: B018 - read the body, as a caller would
            return response.status_code

        _in_threads(window, call, c)


def requests_futures(url: str, c: int, window: Window) -> None:
    from requests_futures.sessions import FuturesSession

    with FuturesSession(max_workers=c) as session:
        _keep_in_flight(window, lambda: session.get(url), lambda r: r.status_code, c)


def microcall_client(url: str, c: int, window: Window) -> None:
    import microcall

    with microcall.Client(url) as client:
        _in_threads(window, lambda: client.get("").status_code, c)


def microcall_futures(url: str, c: int, window: Window) -> None:
    import microcall

    with microcall.FuturesClient(url) as client:
        _keep_in_flight(window, lambda: client.get(""), lambda r: r.status_code, c)


# ------------------------------------------------------------------ entry point

ThreadPeer = Callable[[str, int, Window], None]

ASYNC_PEERS: dict[str, AsyncPeer] = {
    "aiohttp": raw_aiohttp,
    "aio-request": aio_request_client,
    "microcall-async": microcall_async,
    "httpx": raw_httpx,
    "microcall-httpx": microcall_httpx,
    "floor-httptools": floor_httptools,
    "pyreqwest": raw_pyreqwest,
    "microcall-h1": microcall_h1,
    "microcall-aiohttp": microcall_aiohttp,
}
# Peers that speak HTTP/2 over TLS: they take the CA to verify the server against
# (--ca), then the URL.
TLS_PEERS: dict[str, Callable[[str, str], contextlib.AbstractAsyncContextManager[AsyncCall]]] = {
    "httpx-h2": raw_httpx_h2,
    "microcall-httpx-h2": microcall_httpx_h2,
}
THREAD_PEERS: dict[str, ThreadPeer] = {
    "requests": requests_session,
    "requests-futures": requests_futures,
    "microcall-client": microcall_client,
    "microcall-futures": microcall_futures,
}
UVLOOP_SUFFIX = "+uvloop"  # "aiohttp+uvloop": the same peer on uvloop instead of asyncio's loop


INTERLEAVE = "/"  # "aiohttp/microcall-async": both asyncio peers, alternating in one process


def measure(
    peer: str, c: int, window: Window, url: str, slice_length: float, ca: str | None = None
) -> dict[str, Any]:
    """Run ``peer`` (or interleave the peers it names) and return what to report."""
    if INTERLEAVE in peer:
        names = peer.split(INTERLEAVE)
        unknown = [name for name in names if name not in ASYNC_PEERS]
        if unknown:
            raise SystemExit(f"only asyncio peers interleave, not {', '.join(unknown)}")
        with asyncio.Runner() as runner:
            window.loop = runner.get_loop()
            peers = [ASYNC_PEERS[name] for name in names]
            results = runner.run(
                _interleave(peers, url, c, window.warmup, window.duration, slice_length)
            )
        return {"interleaved": dict(zip(names, results, strict=True))}
    name, uvloop_wanted = peer.removesuffix(UVLOOP_SUFFIX), peer.endswith(UVLOOP_SUFFIX)
    if name in TLS_PEERS and not uvloop_wanted:
        if ca is None:
            raise SystemExit(f"{peer} speaks TLS: give the CA to trust with --ca")
        with asyncio.Runner() as runner:
            runner.run(_measure_async(partial(TLS_PEERS[name], ca), url, c, window))
    elif name in ASYNC_PEERS:
        factory = None
        if uvloop_wanted:
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_measure_async(ASYNC_PEERS[name], url, c, window))
    elif name in THREAD_PEERS and not uvloop_wanted:
        THREAD_PEERS[name](url, c, window)
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    return window.result()


def _watchdog(window: Window, report: dict[str, Any], finished: threading.Event) -> None:
    if finished.wait(window.warmup + window.duration + STRAGGLER_LIMIT):
        return
    print(json.dumps({**report, **window.result(), "stuck": _stacks(window)}), flush=True)
    os._exit(0)  # a stuck call may block the client's own close: do not wait for it


def _stacks(window: Window) -> str:
    """Where a stuck process is: its event loop's tasks (if any) and every thread."""
    parts = []
    loop = window.loop
    if loop is not None and loop.is_running():

        async def task_stacks() -> str:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.print_stack(limit=12, file=out)
            return out.getvalue()

        try:
            parts.append(asyncio.run_coroutine_threadsafe(task_stacks(), loop).result(timeout=2))
        except Exception as exc:
            parts.append(f"(no task stacks: {exc!r})")
    for ident, frame in sys._current_frames().items():
        if ident != threading.get_ident():
            parts.append(f"thread {ident}:\n" + "".join(traceback.format_stack(frame, limit=15)))
    return "\n".join(parts)[-8000:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._client", description=__doc__)
    parser.add_argument(
        "peer",
        help=f"one of {', '.join([*ASYNC_PEERS, *TLS_PEERS, *THREAD_PEERS])}; 'a{INTERLEAVE}b' interleaves "
        f"two asyncio peers; a '{UVLOOP_SUFFIX}' suffix runs an asyncio peer on uvloop",
    )
    parser.add_argument("concurrency", type=int)
    parser.add_argument("seconds", type=float, help="length of the timed window")
    parser.add_argument("--url", required=True)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--ca", help="PEM file of the CA to trust (the HTTP/2 peers, over TLS)")
    parser.add_argument(
        "--slice", type=float, default=0.25, help="slice length when interleaving peers (a/b)"
    )
    args = parser.parse_args(argv)
    window = Window(args.warmup, args.seconds)
    report = {"peer": args.peer, "concurrency": args.concurrency}
    finished = threading.Event()
    threading.Thread(target=_watchdog, args=(window, report, finished), daemon=True).start()
    result = measure(args.peer, args.concurrency, window, args.url, args.slice, args.ca)
    finished.set()
    print(json.dumps({**report, **result}), flush=True)


if __name__ == "__main__":
    main()
