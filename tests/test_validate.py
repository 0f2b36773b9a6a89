"""The configuration checks every module shares."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from microcall import Limits
from microcall._validate import fraction, number, positive_int, whole
from microcall.errors import ConfigurationError
from microcall.policy.backoff import Backoff
from microcall.server.aimd import AIMDLimit
from microcall.server.gradient import GradientLimit
from microcall.server.shedding import PriorityShares


def test_whole_numbers_in_range_pass_through() -> None:
    assert positive_int("burst", 3) == 3
    assert whole("port", 65535, minimum=1, maximum=65535) == 65535
    assert whole("max_body", 0, minimum=0) == 0


@pytest.mark.parametrize("value", [0, -1, True, 1.0, "2", None])
def test_a_count_refuses_what_is_not_an_int_of_at_least_one(value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"burst must be an integer >= 1"):
        positive_int("burst", value)


def test_the_message_names_the_range_and_what_is_wanted() -> None:
    with pytest.raises(ConfigurationError, match=r"port must be a port from 1 to 65535, got 0"):
        whole("port", 0, minimum=1, maximum=65535, what="a port")


def test_numbers_are_finite_and_within_their_bounds() -> None:
    assert number("percent", 5, minimum=0, maximum=100) == 5.0
    assert fraction("max_extra_load", 0.05) == 0.05
    for bad in (float("nan"), float("inf"), 0.0, 1.0, False):
        with pytest.raises(
            ConfigurationError, match=r"max_extra_load must be a fraction > 0\.0 and < 1\.0"
        ):
            fraction("max_extra_load", bad)
    with pytest.raises(ConfigurationError, match=r"ratio must be a finite number <= 1 and > 0"):
        number("ratio", 1.5, above=0, maximum=1)


def test_a_bound_of_none_is_no_bound() -> None:
    assert whole("seed", -7, minimum=None) == -7
    assert whole("offset", -7, minimum=None, maximum=0) == -7
    with pytest.raises(ConfigurationError, match=r"seed must be an int, got True"):
        whole("seed", True, minimum=None, what="an int")
    with pytest.raises(ConfigurationError, match=r"offset must be an integer <= 0, got 1"):
        whole("offset", 1, minimum=None, maximum=0)


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: Limits(max_connections=True), "max_connections"),
        (lambda: Limits(max_connections_per_host=True), "max_connections_per_host"),
        (lambda: Limits(keepalive_expiry=True), "keepalive_expiry"),
        (lambda: GradientLimit(tolerance=True), "tolerance"),
        (lambda: GradientLimit(smoothing=True), "smoothing"),
        (lambda: AIMDLimit(increase=True), "increase"),
        (lambda: AIMDLimit(backoff_ratio=False), "backoff_ratio"),
        (lambda: PriorityShares(normal=True), "the normal share"),
        (lambda: Backoff(multiplier=True), "backoff multiplier"),
    ],
)
def test_a_bool_is_never_taken_for_a_number(make: Callable[[], object], name: str) -> None:
    with pytest.raises(ConfigurationError, match=f"^{name} must be"):
        make()
