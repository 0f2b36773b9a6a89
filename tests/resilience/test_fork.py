"""A resilient call in a forked child, while another thread of the parent held the policy's lock."""

from __future__ import annotations

import os
import sys
import threading

import pytest

import microcall
from microcall._fork_lock import ForkSafeLock
from tests.children import wait_for_child

PATIENCE = 10.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_lock_was_held_can_still_call() -> None:
    policy = microcall.Resilience(strategy=microcall.retry(2), on=ConnectionError)
    answer = policy(lambda: 42)
    assert answer() == 42
    lock: ForkSafeLock = policy._shared.lock
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(PATIENCE)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(PATIENCE)
    try:
        pid = os.fork()
        if pid == 0:  # the child: the holding thread did not come along
            code = 1
            try:
                code = 0 if answer() == 42 else 2
            finally:
                sys.stdout.flush()
                os._exit(code)
        status = wait_for_child(
            pid,
            within=PATIENCE,
            hung="the child hung on the lock its parent's thread held at the fork",
        )
    finally:
        release.set()
        holder.join()
    assert os.waitstatus_to_exitcode(status) == 0
