"""The configuration checks every module shares."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from microcall import Limits
from microcall._validate import (
    flag,
    fraction,
    instance,
    items,
    number,
    positive_int,
    seconds,
    whole,
)
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


def test_flags_are_bools_and_lists_are_collections() -> None:
    assert flag("strict", False) is False
    with pytest.raises(ConfigurationError, match=r"^strict must be True or False, got 'no'$"):
        flag("strict", "no")  # truthy: it would have turned strict mode on
    assert items("observers", [1, 2]) == (1, 2)
    for bad in (1, "abc", b"abc"):
        with pytest.raises(ConfigurationError, match=r"^observers must be a list"):
            items("observers", bad)  # type: ignore[arg-type]
    instance("ejection", None, (type(None), int), "an int or None")
    with pytest.raises(ConfigurationError, match=r"^ejection must be an int or None, got \{\}$"):
        instance("ejection", {}, (type(None), int), "an int or None")


def test_an_int_too_large_for_a_float_is_refused_and_not_printed() -> None:
    huge = 10**5000  # past the digits repr() will print
    with pytest.raises(ConfigurationError, match=r"^ratio must be .*, got an int of 16610 bits$"):
        number("ratio", huge)
    with pytest.raises(ConfigurationError, match=r"^timeout must be finite, got an int of"):
        seconds(huge, name="timeout")
    with pytest.raises(ConfigurationError, match=r"^max_calls must be an integer >= 1, got -1$"):
        positive_int("max_calls", -1)
