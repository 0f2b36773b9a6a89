"""Instructions a unit of work costs, counted by valgrind's callgrind: a reading the machine's load cannot move.

CPU time on a shared machine moves with its neighbours' work; the number of
instructions a process executes does not (system calls aside, which
callgrind does not count: the kernel's share of a network call is left
out). A unit's count is the difference between a run that does ``units``
of them and one that does none, divided by ``units``: start-up, imports and
warm-up cancel out. Runs are slow (callgrind executes some fifty times
slower), so they are for counts, never for timing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


class CountFailed(RuntimeError):
    """valgrind is missing, or a counted run failed."""


def valgrind() -> str:
    found = shutil.which("valgrind")
    if found is None:
        raise CountFailed("valgrind is not installed (Debian: apt-get install valgrind)")
    return found


def collected(command: list[str], *, cwd: str | None = None) -> int:
    """The instructions ``command`` executed, start to end, in user space."""
    done = subprocess.run(
        [valgrind(), "--tool=callgrind", "--callgrind-out-file=/dev/null", *command],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise CountFailed(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-2000:]}"
        )
    return int(found.group(1))


def per_unit(
    command_for: Callable[[int], list[str]], units: int, *, cwd: str | None = None
) -> float:
    """Instructions per unit: a run of ``units`` less a run of none, over ``units``."""
    return (collected(command_for(units), cwd=cwd) - collected(command_for(0), cwd=cwd)) / units
