"""Concurrency limits as pure functions of their samples."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microcall.errors import ConfigurationError
from microcall.server import AIMDLimit, GradientLimit, StaticLimit
from microcall.server.gradient import GradientEstimator
from microcall.server.limits import LimitEstimator


def feed(
    estimator: LimitEstimator,
    samples: int,
    *,
    rtt: float,
    inflight: int | None = None,
    dropped: bool = False,
    start: float = 0.0,
    spacing: float = 0.001,
) -> float:
    now = start
    for _ in range(samples):
        now += spacing
        busy = estimator.limit if inflight is None else inflight
        estimator.on_sample(now=now, rtt=rtt, inflight=busy, dropped=dropped)
    return now


def test_static_limit_never_moves() -> None:
    estimator = StaticLimit(limit=7).start()
    feed(estimator, 100, rtt=5.0, dropped=True)
    assert estimator.limit == 7


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_static_limit_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        StaticLimit(limit=bad)  # type: ignore[arg-type]


def test_aimd_doubles_each_round_until_the_first_overload() -> None:
    estimator = AIMDLimit(initial=10, latency_target=0.1).start()
    feed(estimator, 10, rtt=0.01)  # one round's worth of samples
    assert estimator.limit == 20
    feed(estimator, 20, rtt=0.01)
    assert estimator.limit == 40


def test_aimd_grows_by_about_one_per_round_after_an_overload() -> None:
    estimator = AIMDLimit(initial=11, latency_target=0.1).start()
    estimator.on_sample(now=0.0, rtt=0.5, inflight=11, dropped=False)  # ends slow start
    assert estimator.limit == 9  # 11 * 0.9
    feed(estimator, 10, rtt=0.01, start=1.0)  # one round's worth of samples at ~10
    assert estimator.limit == 10
    feed(estimator, 30, rtt=0.01, start=2.0)
    assert 12 <= estimator.limit <= 14


def test_aimd_does_not_grow_while_mostly_idle() -> None:
    estimator = AIMDLimit(initial=10).start()
    feed(estimator, 1000, rtt=0.01, inflight=2)
    assert estimator.limit == 10


def test_aimd_cuts_once_per_round_trip_on_a_burst_of_slow_samples() -> None:
    estimator = AIMDLimit(initial=100, latency_target=0.1).start()
    # Fifty slow samples inside one round trip (0.2 s): one congestion event.
    feed(estimator, 50, rtt=0.2, spacing=0.001)
    assert estimator.limit == 90
    # Another round trip later, still slow: a second cut.
    feed(estimator, 1, rtt=0.2, start=1.0)
    assert estimator.limit == 81


def test_aimd_backs_off_on_missed_deadlines_without_a_target() -> None:
    estimator = AIMDLimit(initial=50).start()
    now = 0.0
    for _ in range(10):
        now += 1.0
        estimator.on_sample(now=now, rtt=0.05, inflight=50, dropped=True)
    assert estimator.limit == int(50 * 0.9**10)


def test_aimd_respects_its_bounds() -> None:
    low = AIMDLimit(initial=2, minimum=2, maximum=5).start()
    for step in range(100):
        low.on_sample(now=float(step), rtt=1.0, inflight=2, dropped=True)
    assert low.limit == 2
    high = AIMDLimit(initial=2, minimum=2, maximum=5).start()
    feed(high, 1000, rtt=0.001)
    assert high.limit == 5


@pytest.mark.parametrize(
    "settings",
    [
        {"initial": 0},
        {"initial": 5, "minimum": 6},
        {"initial": 5, "maximum": 4},
        {"backoff_ratio": 1.0},
        {"backoff_ratio": 0.0},
        {"increase": 0.0},
        {"latency_target": -1.0},
        {"latency_target": float("nan")},
    ],
)
def test_aimd_validates(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        AIMDLimit(**settings)  # type: ignore[arg-type]


def test_gradient_doubles_each_round_until_latency_first_rises() -> None:
    estimator = GradientLimit(initial=10).start()
    feed(estimator, 10, rtt=0.05)
    assert estimator.limit == 20
    feed(estimator, 20, rtt=0.05)
    assert estimator.limit == 40


def test_gradient_grows_slowly_once_it_has_seen_queueing() -> None:
    estimator = GradientLimit(initial=16).start()
    feed(estimator, 20, rtt=0.05)
    estimator.on_sample(now=1.0, rtt=0.5, inflight=100, dropped=False)  # ends slow start
    before = estimator.limit
    feed(estimator, before, rtt=0.05, start=2.0)  # a round at the baseline again
    assert before < estimator.limit <= before + 2


def test_gradient_shrinks_when_queueing_raises_latency() -> None:
    estimator = GradientLimit(initial=10, maximum=60).start()
    feed(estimator, 100, rtt=0.05)
    assert estimator.limit == 60
    feed(estimator, 500, rtt=0.25)  # five times the unloaded latency
    assert estimator.limit < 30


def simulate(estimator: LimitEstimator, samples: int, service: Callable[[int], float]) -> int:
    """A server that works on 20 requests at once: latency is its service
    time up to 20 in flight and grows with the queue beyond (Little's law).
    All traffic is normal priority, so a probe halves what is in flight."""
    probes = 0
    for step in range(samples):
        inflight = estimator.limit // 2 if estimator.probing else estimator.limit
        rtt = service(step) * max(1.0, inflight / 20)
        was_probing = estimator.probing
        estimator.on_sample(now=step * 0.001, rtt=rtt, inflight=inflight, dropped=False)
        if estimator.probing and not was_probing:
            probes += 1
    return probes


def test_gradient_settles_where_the_queue_is_small() -> None:
    estimator = GradientLimit(initial=5).start()
    simulate(estimator, 4000, lambda step: 0.05)
    assert 20 <= estimator.limit <= 50
    assert estimator.baseline == pytest.approx(0.05)  # type: ignore[attr-defined]


def test_gradient_relearns_a_slower_service_instead_of_starving_it() -> None:
    # After a while every request takes twice as long (a slower dependency):
    # still 20 at once, so the limit should stay where it was.
    estimator = GradientLimit(initial=5).start()
    simulate(estimator, 2000, lambda step: 0.05)
    before = estimator.limit
    probes = simulate(estimator, 3000, lambda step: 0.1)
    assert probes >= 1
    assert estimator.baseline == pytest.approx(0.1)  # type: ignore[attr-defined]
    assert estimator.limit >= before - 2


def test_gradient_probes_when_a_whole_window_stays_far_above_the_baseline() -> None:
    estimator = GradientLimit(initial=40, baseline_window=50).start()
    assert isinstance(estimator, GradientEstimator)
    feed(estimator, 50, rtt=0.01)  # a window at the baseline: no probe
    assert not estimator.probing
    feed(estimator, 50, rtt=0.05, inflight=1)  # a whole window far above it
    assert estimator.probing
    limit = estimator.limit
    # A round at the full limit (the queue drains), then half a round measured.
    feed(
        estimator, math.ceil(estimator.value) + math.ceil(estimator.value / 2), rtt=0.05, inflight=1
    )
    assert not estimator.probing  # the probe found the slower latency is real
    assert estimator.baseline == pytest.approx(0.05)
    assert estimator.limit == limit  # a probe holds traffic back; it does not move the limit


def test_gradient_ignores_idle_samples_and_halves_at_most_on_a_drop() -> None:
    estimator = GradientLimit(initial=40, smoothing=1.0).start()
    feed(estimator, 100, rtt=0.05, inflight=5)
    assert estimator.limit == 40
    estimator.on_sample(now=1.0, rtt=0.05, inflight=40, dropped=True)
    assert estimator.limit >= 20


def test_gradient_baseline_follows_a_lasting_change_within_two_windows() -> None:
    estimator = GradientLimit(initial=10, baseline_window=100).start()
    feed(estimator, 100, rtt=0.01, inflight=1)
    assert estimator.baseline == pytest.approx(0.01)  # type: ignore[attr-defined]
    feed(estimator, 200, rtt=0.05, inflight=1)
    assert estimator.baseline == pytest.approx(0.05)  # type: ignore[attr-defined]


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=10.0),
            st.integers(min_value=0, max_value=2000),
            st.booleans(),
        ),
        max_size=200,
    ),
    st.sampled_from(["aimd", "gradient"]),
)
def test_adaptive_limits_stay_within_bounds_whatever_the_samples(
    samples: list[tuple[float, int, bool]], kind: str
) -> None:
    config = (
        AIMDLimit(initial=10, minimum=3, maximum=40, latency_target=0.5)
        if kind == "aimd"
        else GradientLimit(initial=10, minimum=3, maximum=40)
    )
    estimator = config.start()
    for step, (rtt, inflight, dropped) in enumerate(samples):
        estimator.on_sample(now=float(step), rtt=rtt, inflight=inflight, dropped=dropped)
        assert 3 <= estimator.limit <= 40
