"""A backend whose latency has a heavy tail: most answers in a few ms, a few very slow.

Each request sleeps for a latency drawn from a :class:`LatencyProfile`, then
answers 200. The draw depends only on the seed, the call number (in the
path, ``/call/{n}``) and how many requests for that call arrived before it,
never on scheduling: every strategy the demo compares meets the same luck
(call 17's first attempt is slow under all of them) and a run with the same
seed repeats. Draws for different calls, or for attempts of one call, are
independent.

The server runs with ``handler_cancellation``: when a caller gives up on an
attempt (a hedge that lost, a retry's timed-out attempt) and closes the
connection, the handler's sleep is cancelled, as real work should be. It
counts the requests it received and the handlers cancelled that way.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from microcall.errors import ConfigurationError, UsageError

# Latencies in seconds as (probability, latency) tiers; the rest of the
# probability is "fast", uniform in FAST. One call in a hundred taking half a
# second is the classic shape of a tail: GC pauses, a cold cache, a slow disk.
FAST = (0.002, 0.004)
SLOW_TIERS = ((0.02, 0.050), (0.01, 0.500))

# In-flight handlers are cancelled on shutdown after this long: the demo's
# callers have gone by then, so there is nothing to wait for.
SHUTDOWN_TIMEOUT = 0.5


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
            raise ConfigurationError(f"slow tier probabilities add up to more than 1: {self.slow!r}")

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


def _is_duration(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


class TailBackend:
    """An aiohttp server on 127.0.0.1 (port chosen by the system) with a heavy-tailed latency.

    ::

        async with TailBackend(LatencyProfile(), seed=1) as backend:
            ...  # GET f"{backend.base_url}/call/0"
        print(backend.received, backend.cancelled)
    """

    def __init__(self, profile: LatencyProfile, *, seed: int) -> None:
        self.profile = profile
        self.seed = seed
        self.received = 0
        self.cancelled = 0
        self._arrivals: dict[int, int] = {}
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._base_url is None:
            raise UsageError("the backend is not running")
        return self._base_url

    def latency(self, call: int, arrival: int) -> float:
        """The latency of the ``arrival``-th request (0-based) for ``call``."""
        # A string seed is hashed with SHA-512: stable across runs and processes.
        return self.profile.draw(random.Random(f"{self.seed}:{call}:{arrival}"))

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/call/{call:\\d+}", self._handle)
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TailBackend:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        call = int(request.match_info["call"])
        arrival = self._arrivals.get(call, 0)
        self._arrivals[call] = arrival + 1
        self.received += 1
        try:
            await asyncio.sleep(self.latency(call, arrival))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return web.Response(text="ok")
