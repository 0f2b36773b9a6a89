"""A backend whose latency has a heavy tail: most answers in a few ms, a few very slow.

The backend is its own process (``python -m microcall.demo.backend``), as a
real one would be: sharing the caller's event loop, its request handling
would queue behind the caller's and inflate every latency the demo measures.
:class:`BackendProcess` starts it, learns its address from the first line it
prints, and stops it by closing its stdin (so it also ends if the caller dies).

Each request to ``/run/{run}/call/{call}`` sleeps for a latency drawn from a
:class:`LatencyProfile`, then answers 200. The draw depends only on the seed,
the call number and how many requests for that call arrived before it, never
on scheduling: every strategy the demo compares (each a separate ``run``)
meets the same luck, call 17's first attempt is slow under all of them, and a
run with the same seed repeats. Draws for different calls, or for attempts of
one call, are independent.

The server runs with ``handler_cancellation``: when a caller gives up on an
attempt (a hedge that lost, a retry's timed-out attempt) and closes the
connection, the handler's sleep is cancelled, as real work should be.
``/stats/{run}`` reports, per run, the requests received, the handlers
cancelled that way and the handlers still running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

import microcall
from microcall.errors import ConfigurationError, UsageError

# Latencies in seconds as (probability, latency) tiers; the rest of the
# probability is "fast", uniform in FAST. One call in a hundred taking half a
# second is the classic shape of a tail: GC pauses, a cold cache, a slow disk.
FAST = (0.002, 0.004)
SLOW_TIERS = ((0.02, 0.050), (0.01, 0.500))

# Starting Python and importing aiohttp takes well under this even on a busy machine.
START_TIMEOUT = 30.0
# How long to wait for handlers of a finished run to end (cancelled losers
# are torn down within milliseconds of their caller closing the connection).
SETTLE_TIMEOUT = 2.0
SETTLE_POLL = 0.005
# The backend answers its statistics at once; anything slower means it is gone.
CONTROL_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyProfile:
    """How long the backend takes: ``fast`` (uniform range) except for the ``slow`` tiers.

    ``slow`` holds ``(probability, seconds)`` pairs; by default 2% of
    requests take 50 ms and 1% take 500 ms, the other 97% 2-4 ms.
    """

    fast: tuple[float, float] = FAST
    slow: tuple[tuple[float, float], ...] = SLOW_TIERS

    def __post_init__(self) -> None:
        low, high = self.fast
        if not (_is_duration(low) and _is_duration(high) and low <= high):
            raise ConfigurationError(
                f"fast must be a (low, high) range of seconds, got {self.fast!r}"
            )
        for probability, seconds in self.slow:
            if not (0.0 <= probability <= 1.0 and _is_duration(seconds)):
                raise ConfigurationError(
                    f"slow tiers must be (probability, seconds) pairs, got {(probability, seconds)!r}"
                )
        if sum(probability for probability, _ in self.slow) > 1.0:
            raise ConfigurationError(
                f"slow tier probabilities add up to more than 1: {self.slow!r}"
            )

    def draw(self, rng: random.Random) -> float:
        """One latency in seconds."""
        roll = rng.random()
        for probability, seconds in self.slow:
            if roll < probability:
                return seconds
            roll -= probability
        return rng.uniform(*self.fast)

    def describe(self) -> str:
        """``"97% 2-4 ms, 2% 50 ms, 1% 500 ms"``."""
        fast_share = 1.0 - sum(probability for probability, _ in self.slow)
        low, high = (seconds * 1000 for seconds in self.fast)
        parts = [f"{fast_share:.0%} {low:g}-{high:g} ms"]
        parts += [f"{probability:.0%} {seconds * 1000:g} ms" for probability, seconds in self.slow]
        return ", ".join(parts)

    def to_json(self) -> str:
        return json.dumps({"fast": self.fast, "slow": self.slow})

    @classmethod
    def from_json(cls, text: str) -> LatencyProfile:
        data = json.loads(text)
        low, high = data["fast"]
        return cls(fast=(low, high), slow=tuple((p, s) for p, s in data["slow"]))


def _is_duration(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def latency(profile: LatencyProfile, seed: int, call: int, arrival: int) -> float:
    """The latency of the ``arrival``-th request (0-based) for ``call``."""
    # A string seed is hashed with SHA-512: the same draws in every process and run.
    return profile.draw(random.Random(f"{seed}:{call}:{arrival}"))


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStats:
    """What the backend saw of one run: requests received, handlers cancelled and still running."""

    received: int
    cancelled: int
    in_flight: int


# ---------------------------------------------------------------- the server


class _Run:
    __slots__ = ("arrivals", "cancelled", "in_flight", "received")

    def __init__(self) -> None:
        self.arrivals: dict[int, int] = {}
        self.received = 0
        self.cancelled = 0
        self.in_flight = 0


def make_app(profile: LatencyProfile, *, seed: int) -> web.Application:
    """The backend's aiohttp application."""
    runs: dict[int, _Run] = {}

    async def call(request: web.Request) -> web.Response:
        number = int(request.match_info["call"])
        run = runs.setdefault(int(request.match_info["run"]), _Run())
        arrival = run.arrivals.get(number, 0)
        run.arrivals[number] = arrival + 1
        run.received += 1
        run.in_flight += 1
        try:
            await asyncio.sleep(latency(profile, seed, number, arrival))
        except asyncio.CancelledError:
            run.cancelled += 1
            raise
        finally:
            run.in_flight -= 1
        return web.Response(text="ok")

    async def stats(request: web.Request) -> web.Response:
        run = runs.get(int(request.match_info["run"])) or _Run()
        return web.json_response(
            {"received": run.received, "cancelled": run.cancelled, "in_flight": run.in_flight}
        )

    app = web.Application()
    app.router.add_get(r"/run/{run:\d+}/call/{call:\d+}", call)
    app.router.add_get(r"/stats/{run:\d+}", stats)
    return app


async def serve(profile: LatencyProfile, *, seed: int) -> None:
    """Serve on 127.0.0.1 (a free port), print the base URL, and stop at the end of stdin."""
    runner = web.AppRunner(make_app(profile, seed=seed), handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        print(f"http://{host}:{port}", flush=True)
        # The parent closes our stdin to stop us, or dies and the pipe closes.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m microcall.demo.backend``."""
    parser = argparse.ArgumentParser(prog="python -m microcall.demo.backend")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--profile", type=LatencyProfile.from_json, default=LatencyProfile())
    arguments = parser.parse_args(argv)
    # Our parent decides when we stop (by closing stdin): a Ctrl-C reaches the
    # whole process group, and the parent handles it for both of us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=_fast_loop()) as runner:
        runner.run(serve(arguments.profile, seed=arguments.seed))
    return 0


def _fast_loop() -> type[asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - depends on the platform
        return None
    return uvloop.Loop


# ---------------------------------------------------------------- the caller's handle


class BackendProcess:
    """Starts the backend in its own process and reads its per-run statistics.

    ::

        async with BackendProcess(LatencyProfile(), seed=1) as backend:
            ...  # GET backend.base_url + backend.call_path(run=0, call=17)
            stats = await backend.settled_stats(run=0)
    """

    def __init__(self, profile: LatencyProfile, *, seed: int) -> None:
        self.profile = profile
        self.seed = seed
        self._process: asyncio.subprocess.Process | None = None
        self._base_url: str | None = None
        self._control: microcall.AsyncClient | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._base_url is None:
            raise UsageError("the backend is not running")
        return self._base_url

    def call_path(self, *, run: int, call: int) -> str:
        """The path of ``call`` in ``run``, relative to :attr:`base_url`."""
        return f"/run/{run}/call/{call}"

    async def start(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "microcall.demo.backend",
            "--seed",
            str(self.seed),
            "--profile",
            self.profile.to_json(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._process = process
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise UsageError("the demo backend did not start") from None
        if not line.startswith(b"http://"):
            await self.stop()
            raise UsageError("the demo backend failed to start (see the error above)")
        self._base_url = line.decode().strip()
        self._control = microcall.AsyncClient(self._base_url, timeout=CONTROL_TIMEOUT)

    async def settled_stats(self, *, run: int) -> RunStats:
        """The statistics of ``run`` once none of its handlers is still running."""
        if self._control is None:
            raise UsageError("the backend is not running")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETTLE_TIMEOUT
        while True:
            data = (await self._control.get(f"/stats/{run}")).raise_for_status().json()
            stats = RunStats(
                received=data["received"], cancelled=data["cancelled"], in_flight=data["in_flight"]
            )
            if stats.in_flight == 0 or loop.time() > give_up:
                return stats
            await asyncio.sleep(SETTLE_POLL)

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.aclose()
            self._control = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), START_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def __aenter__(self) -> BackendProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


if __name__ == "__main__":
    sys.exit(main())
