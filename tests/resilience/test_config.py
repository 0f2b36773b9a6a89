"""A Resilience checks its settings when it is built, and a decorator when it is applied."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest

import microcall
from microcall import ConfigurationError, Resilience, UsageError


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"strategy": microcall.retry(3)}, "on="),
        ({"strategy": "retry"}, "strategy must be"),
        ({"on": OSError, "classifier": lambda r, e: microcall.Verdict.ACCEPT}, "not both"),
        ({"on": KeyboardInterrupt}, "Exception subclasses"),
        ({"on": (OSError, "nope")}, "exception classes"),
        ({"on": ()}, "empty"),
        ({"on": 3}, "predicate"),
        ({"classifier": "retry"}, "classifier must be"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"budget": 5}, "budget must be"),
        ({"name": "orders db"}, "name must be"),
        ({"name": ""}, "name must be"),
        ({"name": "x" * 129}, "name must be"),
        ({"sleep": 1.0}, "sleep must be"),
        ({"clock": object()}, "clock must"),
        ({"observers": [object()]}, "not a client observer"),
        ({"deadline_floor": -1}, "deadline_floor"),
    ],
)
def test_bad_settings_are_refused_at_construction(settings: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        Resilience(**settings)


def test_the_decorator_form_checks_the_same_settings() -> None:
    with pytest.raises(ConfigurationError, match="on="):
        microcall.resilient(strategy=microcall.retry(2))


def test_hedging_a_blocking_function_is_refused_when_it_is_decorated() -> None:
    hedging = Resilience(strategy=microcall.hedged(0.01))

    def query() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="only async functions"):
        hedging(query)
    with pytest.raises(ConfigurationError, match="only async functions"):
        hedging.call(query)


def test_generators_cannot_be_decorated() -> None:
    def rows() -> Any:
        yield 1

    async def stream() -> Any:
        yield 1

    for function in (rows, stream):
        with pytest.raises(ConfigurationError, match="generator"):
            Resilience()(function)


def test_call_refuses_an_async_function_and_names_acall() -> None:
    async def query() -> int:
        return 1

    with pytest.raises(UsageError, match="acall"):
        Resilience().call(query)


def test_an_async_sleep_cannot_serve_a_blocking_call() -> None:
    resilience = Resilience(
        strategy=microcall.retry(2, backoff=microcall.Backoff(base=0.001)),
        on=OSError,
        sleep=asyncio.sleep,
    )

    def fails() -> None:
        raise OSError("down")

    with pytest.raises(UsageError, match="blocking sleep"):
        resilience.call(fails)


def test_names_default_to_the_function_and_are_label_safe() -> None:
    recorder_calls: list[str] = []

    class Names:
        def call_started(self, request: microcall.Request) -> None:
            recorder_calls.append(request.route)

    resilience = Resilience(observers=[Names()])

    def lookup() -> int:
        return 1

    resilience.call(lookup)
    resilience.call(lambda: 2)
    resilience.call(functools.partial(lookup))
    assert recorder_calls[0].endswith(
        "test_names_default_to_the_function_and_are_label_safe._locals_.lookup"
    )
    assert recorder_calls[1].endswith("._locals_._lambda_")
    assert recorder_calls[2] == recorder_calls[0]
    assert Resilience(name="orders-db.find_user_v2").name == "orders-db.find_user_v2"


def test_the_decorated_function_keeps_its_name_and_signature_and_stays_async() -> None:
    @microcall.resilient()
    async def find_user(user_id: int) -> dict[str, int]:
        """Find a user."""
        return {"id": user_id}

    @microcall.resilient()
    def publish(message: str) -> str:
        return message

    assert find_user.__name__ == "find_user"
    assert find_user.__doc__ == "Find a user."
    assert asyncio.iscoroutinefunction(find_user)
    assert not asyncio.iscoroutinefunction(publish)
    assert asyncio.run(find_user(7)) == {"id": 7}
    assert publish("hi") == "hi"


def test_the_repr_says_what_it_does() -> None:
    resilience = Resilience(name="orders-db", strategy=microcall.retry(2), on=OSError, timeout=1.5)
    assert repr(resilience).startswith("Resilience(name='orders-db', strategy=Retry(attempts=2")
    assert "timeout=1.5" in repr(resilience)


def test_a_budget_of_its_own_by_default_a_shared_one_on_request_or_none() -> None:
    shared = microcall.RetryBudget()
    assert isinstance(Resilience().budget, microcall.RetryBudget)
    assert Resilience().budget is not Resilience().budget
    assert Resilience(budget=shared).budget is shared
    assert Resilience(budget=None).budget is None


def test_a_resilience_whose_construction_raised_still_has_a_repr() -> None:
    # A traceback or a debugger shows the half-built object: the one in
    # __init__'s frame, its name set, its settings not.
    with pytest.raises(ConfigurationError) as raised:
        Resilience(name="orders-db", timeout=-1)
    (half_built,) = [
        entry.locals["self"]
        for entry in raised.traceback
        if entry.name == "__init__" and isinstance(entry.locals.get("self"), Resilience)
    ]
    assert repr(half_built) == "Resilience(<not built>)"
