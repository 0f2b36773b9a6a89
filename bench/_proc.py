"""Run one measurement in a fresh, pinned client process and read its JSON result."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bench import BenchEnv

# A measurement that has not finished well after its own timing is stuck
# (a server that stopped answering, a deadlock): fail loudly rather than hang.
# A client program should report its own stragglers before this.
GRACE = 90.0

# The repository root: ``python -m bench...`` must find this package from there.
ROOT = Path(__file__).resolve().parent.parent


class MeasurementFailed(RuntimeError):
    """A client process exited with an error or printed no JSON result."""


def run_json(env: BenchEnv, module: str, args: list[str], *, budget: float) -> dict[str, Any]:
    """Run ``python -m module *args`` on the client cores; return the last JSON line it printed.

    ``budget`` is how long the measurement should take (warm-up plus timed
    window); the process gets that plus a grace period before it is killed.
    """
    command = [env.python, "-m", module, *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    env.pin_client(process.pid)  # before it has finished importing, long before it measures
    try:
        stdout, stderr = process.communicate(timeout=budget + GRACE)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        process.communicate()
        raise MeasurementFailed(f"{' '.join(command)} did not finish in time") from exc
    if process.returncode != 0:
        raise MeasurementFailed(
            f"{' '.join(command)} exited with {process.returncode}:\n{stderr[-2000:]}"
        )
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise MeasurementFailed(f"{' '.join(command)} printed no result:\n{stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# Python and a server library start well within this even on a loaded machine.
START_TIMEOUT = 30.0
# After a client process exits, the kernel closes its sockets and the server
# cancels their handlers within milliseconds; this only bounds a stuck run.
SETTLE_TIMEOUT = 5.0
SETTLE_POLL = 0.02


async def answer_commands(commands: Mapping[str, Callable[[str], Any]]) -> None:
    """A served process's side of :class:`ServerProcess`, until stdin ends.

    Each line on stdin is ``COMMAND ARGUMENT``; a known command's answer goes
    back as one JSON line on stdout.
    """
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        command, _, argument = line.strip().partition(" ")
        answer = commands.get(command)
        if answer is not None:
            print(json.dumps(answer(argument)), flush=True)


class ServerProcess:
    """A benchmark server in its own process on the server cores, driven over stdin/stdout.

    The server prints its address as its first line, then answers each
    command line with one JSON line (``stats RUN`` gives a run's counts,
    ``in_flight`` among them); it exits when its stdin closes. A context manager.
    """

    def __init__(self, env: BenchEnv, command: list[str], *, address_prefix: str) -> None:
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        env.pin_server(self._process.pid)
        self.address = self._read_line()
        if not self.address.startswith(address_prefix):
            self.close()
            raise RuntimeError(f"{' '.join(command[:4])} did not start: {self.address!r}")

    def _read_line(self) -> str:
        assert self._process.stdout is not None
        return self._process.stdout.readline().strip()

    def command(self, line: str) -> dict[str, Any]:
        """Send one command line; its JSON answer."""
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        answer: dict[str, Any] = json.loads(self._read_line())
        return answer

    def settled_stats(self, run: int) -> dict[str, Any]:
        """A run's counts once none of its handlers is still running (or SETTLE_TIMEOUT passed)."""
        give_up = time.monotonic() + SETTLE_TIMEOUT
        while True:
            counts = self.command(f"stats {run}")
            if counts["in_flight"] == 0 or time.monotonic() > give_up:
                return counts
            time.sleep(SETTLE_POLL)

    def close(self) -> None:
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()
        try:
            process.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
