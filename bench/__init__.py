"""microcall's benchmarks: ``make bench`` (``python -m bench``) writes docs/benchmarks.md.

How a benchmark plugs in
------------------------
A benchmark is a module in this package with one function::

    def run(env: BenchEnv) -> str:
        '''Measure, and return a markdown section (starting with a "## " title).'''

It blocks until it is done (it may call ``asyncio.run`` inside), starts and
stops every server it needs, and returns its section: a short note on what
was measured and how, the table, and any ratios checked against a target
written as ``PASS`` / ``MISS``. Add the module's name to ``BENCHMARKS`` in
bench/__main__.py; the runner calls the modules in that order, writes the
header (command, date, machine, package versions, core pinning) and the
sections one after the other.

``env`` says how long to measure and where to run. Respect ``env.quick``
(short runs for a smoke check) through ``env.repeats``, ``env.warmup`` and
``env.duration``, rather than with numbers of your own.

Measure the client in a fresh process per measurement, pinned away from the
server: start servers with ``env.pin_server(pid)`` and clients with
``bench._proc.run_json(env, module, args, budget=...)``, which runs ``python -m module
args...`` on the client cores and returns the JSON object the program prints
last. ``bench._stats`` summarises repeats (median with min-max spread) and
formats table cells; ``bench._nginx`` serves a fixed small 200 from nginx.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchEnv:
    """How long each benchmark measures and which cores servers and clients run on.

    ``server_cpus`` / ``client_cpus`` are empty on a machine with a single
    core: pinning is then skipped and the header says so.
    """

    quick: bool
    repeats: int
    warmup: float  # seconds run before the timed window opens
    duration: float  # seconds in each timed window
    server_cpus: frozenset[int] = field(default_factory=frozenset)
    client_cpus: frozenset[int] = field(default_factory=frozenset)
    python: str = sys.executable

    @classmethod
    def create(cls, *, quick: bool) -> BenchEnv:
        """The defaults of a full run (3 x 5 s after 1 s of warm-up) or a quick one."""
        cores = sorted(os.sched_getaffinity(0))
        pinned = len(cores) >= 2
        server = frozenset(cores[:1]) if pinned else frozenset()
        client = frozenset(cores[1:2]) if pinned else frozenset()
        repeats, warmup, duration = (1, 0.5, 1.0) if quick else (3, 1.0, 5.0)
        return cls(
            quick=quick,
            repeats=repeats,
            warmup=warmup,
            duration=duration,
            server_cpus=server,
            client_cpus=client,
        )

    def pin_server(self, pid: int) -> None:
        """Pin a server process (nginx, a Python backend) to the server cores."""
        if self.server_cpus:
            os.sched_setaffinity(pid, self.server_cpus)

    def pin_client(self, pid: int) -> None:
        """Pin a client process to the client cores (``run_json`` does it for you)."""
        if self.client_cpus:
            os.sched_setaffinity(pid, self.client_cpus)

    def describe_pinning(self) -> str:
        if not self.server_cpus:
            return "not pinned: this machine has a single core, server and client share it"
        return (
            f"servers on CPU {_cpu_list(self.server_cpus)}, each measured client process on CPU "
            f"{_cpu_list(self.client_cpus)} (os.sched_setaffinity); the orchestrating process "
            "is not pinned and sleeps while a measurement runs"
        )


def _cpu_list(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


__all__ = ["BenchEnv"]
