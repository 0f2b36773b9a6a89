"""Stalls: which timer runs count as the client stalling, and how much of an attempt they cover."""

from __future__ import annotations

import pytest

from microcall.policy.stalls import Stalls


def test_a_timer_run_within_the_threshold_is_no_stall() -> None:
    stalls = Stalls(threshold=0.02)
    stalls.ran(armed=0.990, due=1.000, now=1.015)
    assert stalls.within(0.0, 2.0) == 0.0


def test_a_late_timer_is_a_stall_from_when_it_was_armed_to_when_it_ran() -> None:
    stalls = Stalls(threshold=0.02)
    stalls.ran(armed=0.99, due=1.0, now=1.5)
    assert stalls.within(0.0, 2.0) == pytest.approx(0.51)
    stalls = Stalls(threshold=0.02)
    stalls.ran(armed=1.0, due=1.01, now=1.5)
    assert stalls.within(0.9, 1.6) == pytest.approx(0.5)  # the attempt spans it all
    assert stalls.within(1.2, 1.6) == pytest.approx(0.3)  # began during it
    assert stalls.within(0.9, 1.1) == pytest.approx(0.1)  # ended during it
    assert stalls.within(1.5, 2.0) == 0.0  # began after it
    assert stalls.within(0.1, 0.9) == 0.0  # ended before it


def test_every_stall_inside_an_attempt_counts() -> None:
    stalls = Stalls(threshold=0.02)
    stalls.ran(armed=1.0, due=1.01, now=1.1)
    stalls.ran(armed=2.0, due=2.01, now=2.3)
    stalls.ran(armed=3.0, due=3.01, now=3.05)
    assert stalls.within(0.5, 3.5) == pytest.approx(0.45)
    assert stalls.within(1.5, 2.9) == pytest.approx(0.3)


def test_only_the_newest_spans_are_kept() -> None:
    stalls = Stalls(threshold=0.02, keep=2)
    for second in range(1, 4):
        stalls.ran(armed=float(second), due=second + 0.01, now=second + 0.1)
    assert stalls.within(0.0, 4.0) == pytest.approx(0.2)  # the first one is forgotten
