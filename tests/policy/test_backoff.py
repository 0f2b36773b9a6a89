"""Backoff bounds and validation; Retry-After parsing of untrusted header values."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from microcall import Backoff, ConfigurationError
from microcall.policy.backoff import MAX_RETRY_AFTER, parse_retry_after

# ---------------------------------------------------------------- Backoff


def documented_bound(backoff: Backoff, n: int) -> float:
    """min(cap, base * multiplier**n), without overflowing on the way."""
    if backoff.base == 0.0 or backoff.cap == 0.0:
        return 0.0
    if math.log(backoff.base) + n * math.log(backoff.multiplier) >= math.log(backoff.cap):
        return backoff.cap
    return float(backoff.base * backoff.multiplier**n)


def test_defaults() -> None:
    backoff = Backoff()
    assert (backoff.base, backoff.multiplier, backoff.cap, backoff.jitter) == (0.05, 2.0, 2.0, True)


def test_without_jitter_the_delay_is_the_bound() -> None:
    backoff = Backoff(base=0.1, multiplier=3.0, cap=2.0, jitter=False)
    rng = random.Random(0)
    assert [backoff.delay(n, rng) for n in range(5)] == pytest.approx([0.1, 0.3, 0.9, 2.0, 2.0])


@given(
    base=st.floats(0.0, 10.0),
    multiplier=st.floats(1.0, 10.0),
    cap=st.floats(0.0, 100.0),
    n=st.integers(0, 64),
    seed=st.integers(0, 2**32 - 1),
)
def test_jittered_delay_is_within_the_bound(
    base: float, multiplier: float, cap: float, n: int, seed: int
) -> None:
    backoff = Backoff(base=base, multiplier=multiplier, cap=cap)
    delay = backoff.delay(n, random.Random(seed))
    assert 0.0 <= delay <= documented_bound(backoff, n) * (1 + 1e-12)


@given(n=st.integers(0, 64), base=st.floats(0.0, 10.0), multiplier=st.floats(1.0, 10.0))
def test_unjittered_delay_equals_the_bound(n: int, base: float, multiplier: float) -> None:
    backoff = Backoff(base=base, multiplier=multiplier, cap=5.0, jitter=False)
    assert backoff.delay(n, random.Random(0)) == pytest.approx(documented_bound(backoff, n))


@pytest.mark.parametrize("n", [65, 1000, 10**9, 10**18])
def test_huge_retry_numbers_do_not_overflow(n: int) -> None:
    backoff = Backoff(jitter=False)
    assert backoff.delay(n, random.Random(0)) == backoff.cap
    jittered = Backoff()
    assert 0.0 <= jittered.delay(n, random.Random(0)) <= jittered.cap


@given(multiplier=st.floats(1.0, 1e12), n=st.integers(0, 10**6))
@example(multiplier=1e5, n=64)
def test_large_multipliers_do_not_overflow(multiplier: float, n: int) -> None:
    backoff = Backoff(multiplier=multiplier, jitter=False)
    assert 0.0 <= backoff.delay(n, random.Random(0)) <= backoff.cap


def test_slow_growth_still_reaches_the_cap() -> None:
    backoff = Backoff(base=0.05, multiplier=1.01, cap=2.0, jitter=False)
    # 0.05 * 1.01**1000 is about 1000, so the documented bound is the cap.
    assert backoff.delay(1000, random.Random(0)) == 2.0


def test_zero_base_never_waits() -> None:
    backoff = Backoff(base=0.0)
    assert backoff.delay(10, random.Random(0)) == 0.0


def test_timedeltas_are_accepted_and_normalised_to_seconds() -> None:
    backoff = Backoff(base=timedelta(milliseconds=20), cap=timedelta(seconds=1))  # type: ignore[arg-type]
    assert backoff.base == pytest.approx(0.02)
    assert backoff.cap == 1.0
    assert isinstance(backoff.base, float)
    assert isinstance(backoff.cap, float)


@pytest.mark.parametrize(
    "settings",
    [
        {"base": -0.1},
        {"base": math.nan},
        {"base": math.inf},
        {"cap": -1.0},
        {"cap": math.nan},
        {"cap": math.inf},
        {"base": timedelta(seconds=-1)},
        {"multiplier": 0.5},
        {"multiplier": 0.0},
        {"multiplier": -2.0},
        {"multiplier": math.nan},
        {"multiplier": math.inf},
        {"base": "0.1"},
    ],
    ids=repr,
)
def test_bad_settings_raise_configuration_error(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Backoff(**settings)  # type: ignore[arg-type]


def test_a_multiplier_of_one_is_a_constant_backoff() -> None:
    backoff = Backoff(base=0.2, multiplier=1.0, jitter=False)
    assert {backoff.delay(n, random.Random(0)) for n in range(10)} == {0.2}


def test_backoff_is_frozen() -> None:
    backoff = Backoff()
    with pytest.raises(AttributeError):
        backoff.base = 1.0  # type: ignore[misc]


# ---------------------------------------------------------------- Retry-After

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
NOW_EPOCH = NOW.timestamp()


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("007", 7.0), ("99999999", MAX_RETRY_AFTER)],
)
def test_delay_seconds(value: str, expected: float) -> None:
    assert parse_retry_after(value, now_epoch=NOW_EPOCH) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "-5", "+5", "1.5", "1e3", "soon", "٣", "12 34", "0x10", "inf", "nan"],
)
def test_malformed_values_are_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now_epoch=NOW_EPOCH) is None


def test_http_date_in_the_future_is_relative_to_now() -> None:
    value = http_date(NOW + timedelta(seconds=30))
    assert value.endswith("GMT")
    assert parse_retry_after(value, now_epoch=NOW_EPOCH) == pytest.approx(30.0)


def test_http_date_is_measured_from_the_injected_now() -> None:
    value = http_date(NOW + timedelta(seconds=30))
    assert parse_retry_after(value, now_epoch=NOW_EPOCH + 10) == pytest.approx(20.0)


def test_http_date_in_the_past_means_no_wait() -> None:
    value = http_date(NOW - timedelta(minutes=5))
    assert parse_retry_after(value, now_epoch=NOW_EPOCH) == 0.0


def test_http_date_far_in_the_future_is_capped() -> None:
    value = http_date(NOW + timedelta(days=3))
    assert parse_retry_after(value, now_epoch=NOW_EPOCH) == MAX_RETRY_AFTER


def test_obsolete_rfc850_date_is_understood() -> None:
    assert parse_retry_after(
        "Wednesday, 01-May-24 12:00:30 GMT", now_epoch=NOW_EPOCH
    ) == pytest.approx(30.0)


def test_asctime_date_is_understood() -> None:
    assert parse_retry_after("Wed May  1 12:00:30 2024", now_epoch=NOW_EPOCH) == pytest.approx(30.0)


def test_date_without_a_known_zone_is_read_as_gmt() -> None:
    # RFC 9110: every HTTP date is GMT, so "-0000" (zone unknown) means GMT too.
    assert parse_retry_after(
        "Wed, 01 May 2024 12:00:30 -0000", now_epoch=NOW_EPOCH
    ) == pytest.approx(30.0)


def assert_sane(result: float | None) -> None:
    if result is not None:
        assert math.isfinite(result)
        assert 0.0 <= result <= MAX_RETRY_AFTER


@given(value=st.text(), now_epoch=st.floats(-1e10, 1e10))
@example(value="9" * 5000, now_epoch=0.0)
@example(value="Mon, 01 Jan 0001 00:00:00 GMT", now_epoch=0.0)
@example(value="Fri, 31 Dec 9999 23:59:59 +2359", now_epoch=0.0)
@example(value="Fri, 31 Dec 9999 23:59:59 -2359", now_epoch=0.0)
@example(value="Sun, 32 Jan 2024 25:61:61 GMT", now_epoch=0.0)
@example(value="\x00", now_epoch=0.0)
def test_arbitrary_text_never_raises_nor_returns_nonsense(value: str, now_epoch: float) -> None:
    assert_sane(parse_retry_after(value, now_epoch=now_epoch))


date_like = st.builds(
    "{}, {} {} {} {}:{}:{} {}".format,
    st.sampled_from(["Mon", "Tue", "Wed", "Xyz", ""]),
    st.integers(-5, 99),
    st.sampled_from(["Jan", "Feb", "Dec", "Foo", "jan"]),
    st.integers(-10, 100_000),
    st.integers(-1, 99),
    st.integers(-1, 99),
    st.integers(-1, 99),
    st.sampled_from(["GMT", "UTC", "+0000", "-0000", "+9999", "-9999", "EST", "", "Z"]),
)


@given(value=date_like, now_epoch=st.floats(0.0, 4e9))
def test_date_like_text_never_raises_nor_returns_nonsense(value: str, now_epoch: float) -> None:
    assert_sane(parse_retry_after(value, now_epoch=now_epoch))
