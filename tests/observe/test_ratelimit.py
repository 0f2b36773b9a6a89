"""LogLimiter on a fake clock: bursts, refills, suppressed counts, the total cap, forgetting keys."""

from __future__ import annotations

import pytest

from microcall.errors import ConfigurationError
from microcall.observe import LogLimitConfig, LogLimiter
from microcall.testing import FakeClock


def written(limiter: LogLimiter, key: str, clock: FakeClock, times: int) -> list[int | None]:
    return [limiter.allow(key, clock.now()) for _ in range(times)]


def test_a_burst_then_silence_until_a_token_returns() -> None:
    clock = FakeClock()
    limiter = LogLimiter(LogLimitConfig(burst=3, every=10, total_burst=100))
    assert written(limiter, "shed", clock, 5) == [0, 0, 0, None, None]
    clock.advance(9.9)
    assert limiter.allow("shed", clock.now()) is None
    clock.advance(0.1)
    assert limiter.allow("shed", clock.now()) == 3  # and it says how many it held back
    assert limiter.allow("shed", clock.now()) is None


def test_a_quiet_key_refills_to_its_burst_and_no_further() -> None:
    clock = FakeClock()
    limiter = LogLimiter(LogLimitConfig(burst=2, every=1, total_burst=100))
    written(limiter, "k", clock, 2)
    clock.advance(3600)
    assert written(limiter, "k", clock, 3) == [0, 0, None]


def test_keys_have_buckets_of_their_own() -> None:
    clock = FakeClock()
    limiter = LogLimiter(LogLimitConfig(burst=1, every=60, total_burst=100))
    assert limiter.allow(("breaker", "a:1"), clock.now()) == 0
    assert limiter.allow(("breaker", "a:1"), clock.now()) is None
    assert limiter.allow(("breaker", "b:1"), clock.now()) == 0


def test_the_total_caps_many_keys_together() -> None:
    clock = FakeClock()
    limiter = LogLimiter(LogLimitConfig(burst=5, every=1, total_burst=4, total_every=10))
    outcomes = [limiter.allow(f"endpoint-{n}", clock.now()) for n in range(100)]
    assert sum(outcome is not None for outcome in outcomes) == 4
    clock.advance(10)
    assert limiter.allow("endpoint-50", clock.now()) == 1  # its one suppressed line is reported


def test_an_outage_writes_a_bounded_number_of_lines() -> None:
    """A hundred events a second for ten minutes: a few lines a minute, not sixty thousand."""
    clock = FakeClock()
    limiter = LogLimiter()  # the defaults
    lines = 0
    for _ in range(60_000):
        clock.advance(0.01)
        if limiter.allow(("shed", "low"), clock.now()) is not None:
            lines += 1
    assert lines <= 5 + 600 / 30 + 1


def test_keys_beyond_the_limit_are_forgotten_oldest_first() -> None:
    clock = FakeClock()
    limiter = LogLimiter(LogLimitConfig(burst=1, every=60, total_burst=1000, max_keys=2))
    for key in ("a", "b", "c"):
        assert limiter.allow(key, clock.now()) == 0
    assert limiter.allow("c", clock.now()) is None  # remembered: still empty
    assert limiter.allow("a", clock.now()) == 0  # forgotten: starts full again


@pytest.mark.parametrize(
    "settings",
    [{"burst": 0}, {"total_burst": -1}, {"max_keys": 1.5}, {"every": 0}, {"total_every": -1}],
)
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        LogLimitConfig(**settings)  # type: ignore[arg-type]
