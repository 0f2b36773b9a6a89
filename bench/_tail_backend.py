"""A backend with a chosen latency profile that counts what reached it, run per process.

``python -m bench._tail_backend --seed S [--profile JSON] [--status CODE]``
serves ``/run/{run}/call/{call}`` on 127.0.0.1 (a free port) and prints its
base URL on the first line. Each request sleeps for a latency drawn from the
profile (:class:`microcall.demo.backend.LatencyProfile`: by default 97% 2-4 ms,
2% 50 ms, 1% 500 ms), then answers ``CODE`` (200 by default). As in the demo's
backend, the draw depends only on the seed, the call number and how many
requests for that call arrived before (:func:`microcall.demo.backend.latency`):
every strategy compared meets the same luck for call ``n``'s first attempt,
and each further attempt draws independently.

Per ``run`` the server counts, on its own side of the wire:

* ``received``: requests (a hedge or a retry is one more);
* ``connections``: connections whose first request belonged to the run,
  told apart by the transport object (a client port reused later is a new
  connection); a connection opened in a warm-up run and reused in the
  measured run is not new there;
* ``cancelled``: handlers stopped because their client closed the connection
  (``handler_cancellation``: a cancelled hedge or a timed-out attempt);
* ``in_flight``: handlers still running.

Control is over stdin and stdout, never HTTP, so the control channel adds no
connection or request to what is counted: a line ``stats RUN`` is answered
with one JSON line, as is ``wait`` (how long the server's event loop has
waited for a CPU while runnable: other work on the server core shows up
there); the end of stdin stops the server. :class:`Backend` is
the orchestrator's handle: it starts the process pinned to the server cores,
reads the statistics once the run's handlers have settled, and stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from bench import BenchEnv
from bench._load import run_queue_wait
from bench._proc import ServerProcess, answer_commands
from microcall.demo.backend import LatencyProfile, latency


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCounts:
    """What the server saw of one run."""

    received: int
    connections: int
    cancelled: int
    in_flight: int


class _Run:
    __slots__ = ("arrivals", "cancelled", "connections", "in_flight", "received")

    def __init__(self) -> None:
        self.arrivals: dict[int, int] = {}
        self.received = 0
        self.connections = 0
        self.cancelled = 0
        self.in_flight = 0

    def counts(self) -> dict[str, int]:
        return {
            "received": self.received,
            "connections": self.connections,
            "cancelled": self.cancelled,
            "in_flight": self.in_flight,
        }


def make_app(
    profile: LatencyProfile, *, seed: int, status: int, runs: dict[int, _Run]
) -> web.Application:
    """The backend's application, counting into ``runs``."""
    # Client port -> the transport last seen on it. Holding the transport
    # (rather than its id) means a port reused by a later connection is
    # recognised as new.
    transports: dict[int, object] = {}

    async def call(request: web.Request) -> web.Response:
        number = int(request.match_info["call"])
        run = runs.setdefault(int(request.match_info["run"]), _Run())
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        port = peer[1] if peer else -1
        if transports.get(port) is not transport:
            transports[port] = transport
            run.connections += 1
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
        return web.Response(status=status, text="ok" if status < 400 else "failing")

    app = web.Application()
    app.router.add_get(r"/run/{run:\d+}/call/{call:\d+}", call)
    return app


async def serve(profile: LatencyProfile, *, seed: int, status: int) -> None:
    """Serve until stdin ends; answer ``stats RUN`` lines on stdout."""
    runs: dict[int, _Run] = {}
    runner = web.AppRunner(
        make_app(profile, seed=seed, status=status, runs=runs),
        handler_cancellation=True,
        access_log=None,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        host, port = runner.addresses[0][:2]
        print(f"http://{host}:{port}", flush=True)
        await answer_commands(
            {
                "stats": lambda run: (runs.get(int(run)) or _Run()).counts(),
                "wait": lambda _: {"wait": run_queue_wait()},
            }
        )
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._tail_backend")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=LatencyProfile.from_json, default=LatencyProfile())
    parser.add_argument("--status", type=int, default=200)
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator stops us
    with asyncio.Runner(loop_factory=_fast_loop()) as runner:
        runner.run(serve(arguments.profile, seed=arguments.seed, status=arguments.status))
    return 0


def _fast_loop() -> type[asyncio.AbstractEventLoop] | None:
    # The server should add as little of its own latency as it can: the
    # profile's sleeps are what is measured.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - depends on the platform
        return None
    loop: type[asyncio.AbstractEventLoop] = uvloop.Loop
    return loop


# ---------------------------------------------------------------- the orchestrator's handle


class Backend(ServerProcess):
    """One backend process, pinned to the server cores; a context manager.

    ::

        with Backend(env, LatencyProfile(), seed=1) as backend:
            ...  # clients call backend.url + "/run/7/call/0"
            counts = backend.counts(run=7)
    """

    def __init__(
        self, env: BenchEnv, profile: LatencyProfile, *, seed: int = 1, status: int = 200
    ) -> None:
        command = [env.python, "-m", "bench._tail_backend", "--seed", str(seed)]
        command += ["--profile", profile.to_json(), "--status", str(status)]
        super().__init__(env, command, address_prefix="http://")
        self.url = self.address

    def counts(self, run: int) -> RunCounts:
        """The run's counts once none of its handlers is still running."""
        data = self.settled_stats(run)
        return RunCounts(
            received=data["received"],
            connections=data["connections"],
            cancelled=data["cancelled"],
            in_flight=data["in_flight"],
        )

    def waited(self) -> float | None:
        """Seconds the server's event loop has waited for a CPU while runnable, if known."""
        wait: float | None = self.command("wait")["wait"]
        return wait


if __name__ == "__main__":
    sys.exit(main())
