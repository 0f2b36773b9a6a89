"""Run one measurement in a fresh, pinned client process and read its JSON result."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

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
