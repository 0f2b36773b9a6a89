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
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import json
import resource
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bench._stats import percentile

OK = 200


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
        seconds = self._ended - self._started
        cpu = self._cpu_ended - self._cpu_started
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


async def _drive(window: Window, worker: Callable[[], Coroutine[Any, Any, None]], c: int) -> None:
    tasks = [asyncio.create_task(worker()) for _ in range(c)]
    await window.time_async()
    await asyncio.gather(*tasks)


async def raw_aiohttp(url: str, c: int, window: Window) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while not window.finished:
                began = time.perf_counter()
                try:
                    async with session.get(url) as response:
                        await response.read()
                except Exception as exc:
                    window.failed(exc)
                    continue
                if response.status == OK:
                    window.done(began)
                else:
                    window.failed(response.status)

        await _drive(window, worker, c)


async def aio_request_client(url: str, c: int, window: Window) -> None:
    import aiohttp
    import aio_request

    async with aiohttp.ClientSession() as session:
        client = aio_request.setup(transport=aio_request.AioHttpTransport(session), endpoint=url)

        async def worker() -> None:
            while not window.finished:
                began = time.perf_counter()
                try:
                    async with client.request(
                        aio_request.get(""), deadline=aio_request.Deadline.from_timeout(5)
                    ) as response:
                        await response.read()
                        status = response.status
                except Exception as exc:
                    window.failed(exc)
                    continue
                if status == OK:
                    window.done(began)
                else:
                    window.failed(status)

        await _drive(window, worker, c)


async def microcall_async(url: str, c: int, window: Window) -> None:
    import microcall

    async with microcall.AsyncClient(url) as client:

        async def worker() -> None:
            while not window.finished:
                began = time.perf_counter()
                try:
                    response = await client.get("")
                except Exception as exc:
                    window.failed(exc)
                    continue
                if response.status_code == OK:
                    window.done(began)
                else:
                    window.failed(response.status_code)

        await _drive(window, worker, c)


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
            future.add_done_callback(lambda f, began=began: on_done(began, f))
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

AsyncPeer = Callable[[str, int, Window], Coroutine[Any, Any, None]]
ThreadPeer = Callable[[str, int, Window], None]

ASYNC_PEERS: dict[str, AsyncPeer] = {
    "aiohttp": raw_aiohttp,
    "aio-request": aio_request_client,
    "microcall-async": microcall_async,
}
THREAD_PEERS: dict[str, ThreadPeer] = {
    "requests": requests_session,
    "requests-futures": requests_futures,
    "microcall-client": microcall_client,
    "microcall-futures": microcall_futures,
}
UVLOOP_SUFFIX = "+uvloop"  # "aiohttp+uvloop": the same peer on uvloop instead of asyncio's loop


def measure(peer: str, c: int, url: str, warmup: float, duration: float) -> dict[str, Any]:
    window = Window(warmup, duration)
    name, uvloop_wanted = peer.removesuffix(UVLOOP_SUFFIX), peer.endswith(UVLOOP_SUFFIX)
    if name in ASYNC_PEERS:
        factory = None
        if uvloop_wanted:
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(ASYNC_PEERS[name](url, c, window))
    elif name in THREAD_PEERS and not uvloop_wanted:
        THREAD_PEERS[name](url, c, window)
    else:
        raise SystemExit(f"unknown peer {peer!r}")
    return {"peer": peer, "concurrency": c, **window.result()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._client", description=__doc__)
    parser.add_argument("peer", help=f"one of {', '.join([*ASYNC_PEERS, *THREAD_PEERS])}")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("seconds", type=float, help="length of the timed window")
    parser.add_argument("--url", required=True)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = measure(args.peer, args.concurrency, args.url, args.warmup, args.seconds)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
