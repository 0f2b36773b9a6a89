"""``@timed``: how long a function takes, plain or async, as a Prometheus histogram.

::

    from microcall.observe import timed

    @timed()                                  # function_duration_seconds{function="shop.checkout"}
    def checkout(cart): ...

    @timed("recommendation_seconds", description="Time to build recommendations.")
    async def recommend(user_id): ...

    @timed(my_histogram)                      # any Histogram (or a labelled child) of yours
    def render(page): ...

With a name (or none), the histogram has two labels: ``function`` (the
function's module and qualified name) and ``error_type`` (the class of the
exception it raised, empty when it returned), and OpenTelemetry's duration
buckets. It is registered when the decorator is applied, in ``registry``
(the global one by default), and shared by every function timed under the
same name in that registry. A histogram you pass is observed as it is, or
through ``labels=``; its series are yours to keep bounded.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar, cast

from microcall.errors import ConfigurationError, UsageError
from microcall.observe._buckets import DURATION_BUCKETS

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_NAME: Final = "function_duration_seconds"
_LABELS: Final = ("function", "error_type")

# Histograms made by @timed, per registry and name: two functions timed under
# one name share it instead of failing to register it twice.
_made: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def timed(
    metric: Any = None,
    *,
    registry: Any = None,
    description: str | None = None,
    labels: Mapping[str, str] | None = None,
    buckets: Sequence[float] = DURATION_BUCKETS,
) -> Callable[[F], F]:
    """Time every call of the decorated function (or coroutine function) into a histogram.

    ``metric``: a histogram name (default ``function_duration_seconds``) or
    a ``prometheus_client.Histogram`` of your own. ``registry``,
    ``description`` and ``buckets`` apply to a histogram made here;
    ``labels`` to one you pass.
    """
    if metric is None or isinstance(metric, str):
        if labels is not None:
            raise ConfigurationError(
                "labels= applies to a Histogram you pass; a named one is labelled "
                "with the function and the error type"
            )
        histogram = _histogram(metric or DEFAULT_NAME, registry, description, tuple(buckets))
        named = True
    elif callable(getattr(metric, "observe", None)) or callable(getattr(metric, "labels", None)):
        histogram = metric if labels is None else metric.labels(**labels)
        named = False
    else:
        raise ConfigurationError(f"timed() takes a histogram name or Histogram, got {metric!r}")

    def decorate(function: F) -> F:
        if inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function):
            raise UsageError(
                f"@timed cannot time generator {function.__qualname__}: its work happens "
                "while it is iterated, not when it is called"
            )
        record = _recorder(histogram, named, f"{function.__module__}.{function.__qualname__}")
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    result = await function(*args, **kwargs)
                except BaseException as exc:
                    record(time.perf_counter() - start, exc)
                    raise
                record(time.perf_counter() - start, None)
                return result

            return cast(F, run_async)

        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = function(*args, **kwargs)
            except BaseException as exc:
                record(time.perf_counter() - start, exc)
                raise
            record(time.perf_counter() - start, None)
            return result

        return cast(F, run)

    return decorate


def _histogram(
    name: str, registry: Any, description: str | None, buckets: tuple[float, ...]
) -> Any:
    from prometheus_client import REGISTRY, Histogram

    registry = REGISTRY if registry is None else registry
    with _lock:
        made = _made.setdefault(registry, {})
        histogram = made.get(name)
        if histogram is None:
            try:
                histogram = Histogram(
                    name,
                    description or "Duration of calls to timed functions.",
                    _LABELS,
                    registry=registry,
                    buckets=buckets,
                )
            except ValueError as exc:  # already registered by someone else
                raise ConfigurationError(
                    f"{exc}: pass the existing Histogram to timed() instead of its name"
                ) from exc
            made[name] = histogram
    return histogram


def _recorder(
    histogram: Any, named: bool, function: str
) -> Callable[[float, BaseException | None], None]:
    if not named:

        def observe(seconds: float, error: BaseException | None) -> None:
            histogram.observe(seconds)

        return observe

    succeeded = histogram.labels(function, "")
    failed: dict[type[BaseException], Any] = {}

    def observe_labelled(seconds: float, error: BaseException | None) -> None:
        if error is None:
            succeeded.observe(seconds)
            return
        child = failed.get(type(error))
        if child is None:
            child = failed[type(error)] = histogram.labels(function, type(error).__name__)
        child.observe(seconds)

    return observe_labelled
