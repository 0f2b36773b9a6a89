"""@timed: plain and async functions into a histogram, with the error type when they raise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from microcall.errors import ConfigurationError, UsageError
from microcall.observe import timed
from tests.observe._metrics import value

COUNT = "function_duration_seconds_count"


def test_a_plain_function_is_timed_and_keeps_its_name(registry: CollectorRegistry) -> None:
    @timed(registry=registry)
    def checkout(cart: list[int]) -> int:
        """Add it up."""
        return sum(cart)

    assert checkout([1, 2]) == 3
    assert checkout([]) == 0
    assert checkout.__name__ == "checkout"
    assert checkout.__doc__ == "Add it up."
    name = f"{__name__}.test_a_plain_function_is_timed_and_keeps_its_name.<locals>.checkout"
    assert value(registry, COUNT, function=name, error_type="") == 2


async def test_an_async_function_is_timed_for_as_long_as_it_runs(
    registry: CollectorRegistry,
) -> None:
    @timed("recommend_seconds", registry=registry, description="Time to recommend.")
    async def recommend(user: str) -> list[str]:
        await asyncio.sleep(0.02)
        return [user]

    assert await recommend("ada") == ["ada"]
    labels = {"function": recommend.__module__ + "." + recommend.__qualname__, "error_type": ""}
    assert value(registry, "recommend_seconds_count", **labels) == 1
    assert value(registry, "recommend_seconds_sum", **labels) >= 0.02
    assert value(registry, "recommend_seconds_bucket", le="0.01", **labels) == 0


async def test_a_failure_is_timed_under_its_error_type(registry: CollectorRegistry) -> None:
    @timed(registry=registry)
    def parse(text: str) -> int:
        return int(text)

    @timed(registry=registry)
    async def fetch() -> None:
        raise TimeoutError

    with pytest.raises(ValueError, match="invalid literal"):
        parse("x")
    with pytest.raises(TimeoutError):
        await fetch()
    assert (
        value(registry, COUNT, function=f"{__name__}.{parse.__qualname__}", error_type="ValueError")
        == 1
    )
    assert (
        value(
            registry, COUNT, function=f"{__name__}.{fetch.__qualname__}", error_type="TimeoutError"
        )
        == 1
    )


def test_functions_timed_under_one_name_share_it(registry: CollectorRegistry) -> None:
    @timed("work_seconds", registry=registry)
    def one() -> None:
        pass

    @timed("work_seconds", registry=registry)
    def two() -> None:
        pass

    one()
    two()
    two()
    assert (
        value(
            registry, "work_seconds_count", function=f"{__name__}.{two.__qualname__}", error_type=""
        )
        == 2
    )


def test_your_own_histogram_labelled_or_not(registry: CollectorRegistry) -> None:
    plain = Histogram("render_seconds", "Rendering.", registry=registry)
    by_page = Histogram("page_seconds", "Pages.", ["page"], registry=registry)

    @timed(plain)
    def render() -> str:
        return "<p>"

    @timed(by_page, labels={"page": "home"})
    def home() -> str:
        return "<home>"

    render()
    home()
    assert value(registry, "render_seconds_count") == 1
    assert value(registry, "page_seconds_count", page="home") == 1


def test_what_cannot_be_timed_is_refused(registry: CollectorRegistry) -> None:
    with pytest.raises(UsageError, match="generator"):

        @timed(registry=registry)
        def numbers() -> Iterator[int]:
            yield 1

    with pytest.raises(UsageError, match="generator"):

        @timed(registry=registry)
        async def stream() -> AsyncIterator[int]:
            yield 1

    with pytest.raises(ConfigurationError, match="labels"):
        timed("x_seconds", registry=registry, labels={"a": "b"})
    with pytest.raises(ConfigurationError):
        timed(42)
    Histogram("taken_seconds", "Someone else's.", registry=registry)
    with pytest.raises(ConfigurationError, match="pass the existing Histogram"):
        timed("taken_seconds", registry=registry)
