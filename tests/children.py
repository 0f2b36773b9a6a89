"""Waiting for a forked child in a test: its exit status, or a clear failure if it hangs."""

from __future__ import annotations

import os
import signal
import time


def wait_for_child(
    pid: int, *, within: float, hung: str = "the forked child did not finish"
) -> int:
    """The child's wait status once it exits; killed, and ``AssertionError(hung)``, after ``within`` s."""
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(hung)
