"""``Resilience``: the strategies, deadlines and budgets of HTTP calls, for any callable."""

from __future__ import annotations

import functools
import inspect
import random
import re
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, ParamSpec, TypeVar, overload

from microcall._call import CallPolicies
from microcall._call_watch import Watching
from microcall._clock import MONOTONIC, Clock
from microcall._durations import Seconds, to_seconds
from microcall._engine import DEFAULT_DEADLINE_FLOOR
from microcall._fork_lock import ForkSafeLock
from microcall.errors import ConfigurationError, UsageError
from microcall.observe.hooks import Observer
from microcall.policy.budget import RetryBudget, RetryBudgetConfig
from microcall.policy.strategy import SINGLE, Hedged, Retry, Strategy
from microcall.resilience._async import run_async
from microcall.resilience._classify import OutcomeClassifier, RetryOn, classifier_of
from microcall.resilience._driver import CallableRules, Shared, Sleep
from microcall.resilience._sync import run_sync

P = ParamSpec("P")
T = TypeVar("T")

# The clients' default deadline: long enough for any sane call, never infinite.
DEFAULT_TIMEOUT: Final = 10.0

# A name is a label value in metrics and a span name: a short identifier-like
# string, fixed by the code, never by input.
MAX_NAME: Final = 128
_NAME: Final = re.compile(rf"[A-Za-z0-9_.\-]{{1,{MAX_NAME}}}")
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9_.\-]+")
_DEFAULT_BUDGET: Final = RetryBudgetConfig()
# Names made from functions for calls through call()/acall(): bounded by the
# code that calls them, but kept from growing without end all the same.
_MAX_CACHED_NAMES: Final = 1024


class Resilience:
    """How a callable is called: strategy, what is retriable, deadline, budget, observers.

    The same strategies, deadlines and budgets as HTTP calls, for a database
    query, a message publish, any function, blocking or async. Use it as a
    decorator, or call through it::

        orders_db = microcall.Resilience(
            name="orders-db",
            strategy=microcall.retry(3, attempt_timeout=0.2),
            on=ConnectionError,          # what is worth another attempt
            timeout=1.0,                 # the call's deadline, every attempt included
            budget=shared_budget,        # the RetryBudget the HTTP clients use
        )

        @orders_db
        async def find_user(user_id): ...

        rows = orders_db.call(cursor_execute, "SELECT 1")        # blocking
        rows = await orders_db.acall(connection.fetch, "SELECT 1")

    ``strategy``: ``single()`` (default), ``retry(...)`` with jittered
    backoff and an optional ``attempt_timeout``, or ``hedged(...)`` (async
    callables only: concurrent attempts, the losers cancelled).

    ``on``: exception classes (or a predicate on the exception) worth another
    attempt; ``classifier(result, error) -> Verdict`` instead sees returned
    values too. A ``retry()`` strategy needs one of them. An exception that is
    not retriable propagates as itself at once; when retriable failures use
    up the attempts, :class:`~microcall.AttemptsExhausted` is raised from the
    last one (:class:`~microcall.DeadlineExceeded` when the deadline stopped them).

    ``timeout``: the call's total deadline (default 10 s), capped by the
    deadline inherited from the context (a server handler's, an enclosing
    ``microcall.deadline()``): an expired one refuses the call without
    running it. Each attempt runs with its own deadline set in the context,
    so the HTTP and gRPC calls it makes inherit what it has left.

    ``budget``: retries and hedges draw on it. A ``RetryBudget`` shared with
    clients (``AsyncClient(..., budget=the_same)``) makes them draw on one
    budget; a ``RetryBudgetConfig`` (default) gives this object a budget of
    its own; None: no budget.

    ``name``: names the calls in metrics and traces (letters, digits,
    ``_ . -``; default: the function's module and qualified name).
    ``observers``: the client observers (``ClientMetrics``, ``ClientTracing``)
    that hear each call, its attempts and its end (docs/callables.md).

    ``clock`` and ``sleep``: where time comes from and how backoffs wait;
    a test passes a ``FakeClock`` and its ``advance`` and never sleeps.

    Settings are checked here: a bad one raises ``ConfigurationError``.
    One object serves any number of concurrent calls, from any thread.
    """

    __slots__ = ("_name", "_names", "_shared")

    def __init__(
        self,
        *,
        strategy: Strategy = SINGLE,
        on: RetryOn | None = None,
        classifier: OutcomeClassifier | None = None,
        timeout: Seconds = DEFAULT_TIMEOUT,
        budget: RetryBudget | RetryBudgetConfig | None = _DEFAULT_BUDGET,
        name: str | None = None,
        observers: Sequence[Observer] = (),
        clock: Clock = MONOTONIC,
        sleep: Sleep | None = None,
        deadline_floor: Seconds = DEFAULT_DEADLINE_FLOOR,
        rng: random.Random | None = None,
    ) -> None:
        if not callable(getattr(strategy, "plan", None)):
            raise ConfigurationError(
                f"strategy must be single(), retry(...) or hedged(...), got {strategy!r}"
            )
        if isinstance(strategy, Retry) and on is None and classifier is None:
            raise ConfigurationError(
                "retry() with nothing retriable would never retry: say what is worth another "
                "attempt with on= (exception classes or a predicate) or classifier="
            )
        if budget is not None and not isinstance(budget, (RetryBudget, RetryBudgetConfig)):
            raise ConfigurationError(
                f"budget must be a RetryBudget, a RetryBudgetConfig or None, got {budget!r}"
            )
        if name is not None:
            _check_name(name)
        if sleep is not None and not callable(sleep):
            raise ConfigurationError(f"sleep must be a function of seconds, got {sleep!r}")
        if not callable(getattr(clock, "now", None)):
            raise ConfigurationError(f"clock must have a now() method, got {clock!r}")
        observers = tuple(observers)
        for observer in observers:
            if not callable(getattr(observer, "call_started", None)):
                raise ConfigurationError(
                    f"{observer!r} is not a client observer (it has no call_started)"
                )
        floor = to_seconds(deadline_floor, name="deadline_floor", allow_zero=True)
        self._name = name
        self._shared = Shared(
            strategy=strategy,
            rules=CallableRules(classifier_of(on, classifier)),
            timeout=to_seconds(timeout, name="timeout"),
            floor=floor,
            clock=clock,
            policies=CallPolicies(
                budget=RetryBudget(budget) if isinstance(budget, RetryBudgetConfig) else budget,
                floor=floor,
                rng=rng,
            ),
            observers=Watching(observers) if observers else None,
            lock=ForkSafeLock(),
            sleep=sleep,
            lingering=set(),
        )
        self._names: dict[object, str] = {}

    def __repr__(self) -> str:
        if not hasattr(self, "_shared"):
            # Construction raised (a traceback or a debugger shows the object anyway).
            return "Resilience(<not built>)"
        name = "" if self.name is None else f"name={self.name!r}, "
        return f"Resilience({name}strategy={self.strategy!r}, timeout={self.timeout})"

    @property
    def name(self) -> str | None:
        """The name every call through this object carries (None: each function's own)."""
        return self._name

    @property
    def timeout(self) -> float:
        """The calls' total deadline, in seconds (an inherited deadline may shorten it)."""
        return self._shared.timeout

    @property
    def strategy(self) -> Strategy:
        """How a call becomes attempts."""
        return self._shared.strategy

    @property
    def budget(self) -> RetryBudget | None:
        """The retry budget the calls' retries and hedges draw on (None: none)."""
        return self._shared.policies.budget

    # ------------------------------------------------------------ decorator

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate ``fn`` (a function or an ``async def``): every call goes through this policy.

        Checked now, not at the first call: a generator, or a blocking
        function under ``hedged()``, raises ``ConfigurationError``.
        """
        if not callable(fn):
            raise ConfigurationError(f"Resilience decorates a function, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigurationError(
                f"{_qualified(fn)} is a generator: a stream cannot be retried as a whole"
            )
        name = self.name or _name_of(fn)
        shared = self._shared
        if _is_async(fn):

            @functools.wraps(fn)
            async def call_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await run_async(shared, name, fn, args, kwargs)

            return call_async
        self._refuse_hedged(fn)

        @functools.wraps(fn)
        def call_blocking(*args: P.args, **kwargs: P.kwargs) -> Any:
            return run_sync(shared, name, fn, args, kwargs)

        return call_blocking

    # ------------------------------------------------------------ call helpers

    def call(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)``, blocking, under this policy (``acall`` for async functions)."""
        if _is_async(fn):
            raise UsageError(
                f"{_qualified(fn)} is async: await resilience.acall(...) instead of call(...)"
            )
        self._refuse_hedged(fn)
        result: T = run_sync(self._shared, self._name_for(fn), fn, args, kwargs)
        return result

    async def acall(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``await fn(*args, **kwargs)`` under this policy."""
        result: T = await run_async(self._shared, self._name_for(fn), fn, args, kwargs)
        return result

    def _name_for(self, fn: Callable[..., Any]) -> str:
        if self.name is not None:
            return self.name
        names = self._names
        key = getattr(fn, "__func__", fn)  # a bound method: one name for every instance
        try:
            name = names.get(key)
        except TypeError:  # an unhashable callable object
            return _name_of(fn)
        if name is None:
            name = _name_of(fn)
            if len(names) < _MAX_CACHED_NAMES:
                names[key] = name
        return name

    def _refuse_hedged(self, fn: Callable[..., Any]) -> None:
        if isinstance(self._shared.strategy, Hedged):
            raise ConfigurationError(
                f"{_qualified(fn)} is a blocking function: hedged() needs attempts that run side "
                "by side and can be cancelled, which only async functions offer "
                "(use retry() here, or make it async)"
            )


def resilient(
    *,
    strategy: Strategy = SINGLE,
    on: RetryOn | None = None,
    classifier: OutcomeClassifier | None = None,
    timeout: Seconds = DEFAULT_TIMEOUT,
    budget: RetryBudget | RetryBudgetConfig | None = _DEFAULT_BUDGET,
    name: str | None = None,
    observers: Sequence[Observer] = (),
    clock: Clock = MONOTONIC,
    sleep: Sleep | None = None,
    deadline_floor: Seconds = DEFAULT_DEADLINE_FLOOR,
    rng: random.Random | None = None,
) -> Resilience:
    """A decorator: ``@microcall.resilient(strategy=microcall.retry(3), on=OSError)``.

    The same settings as :class:`Resilience` (this makes one per decorated
    function, so each has a budget of its own unless ``budget=`` shares one)::

        @microcall.resilient(strategy=microcall.retry(3), on=ConnectionError, timeout=2.0)
        def publish(message): ...
    """
    return Resilience(
        strategy=strategy,
        on=on,
        classifier=classifier,
        timeout=timeout,
        budget=budget,
        name=name,
        observers=observers,
        clock=clock,
        sleep=sleep,
        deadline_floor=deadline_floor,
        rng=rng,
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    # An object whose __call__ is async.
    return inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"name must be 1 to {MAX_NAME} letters, digits, '_', '.' or '-' (a label for "
            f"metrics and traces, fixed by the code), got {name!r}"
        )


def _qualified(fn: Callable[..., Any]) -> str:
    while isinstance(fn, functools.partial):
        fn = fn.func
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}" if module else qualname


def _name_of(fn: Callable[..., Any]) -> str:
    """A name for ``fn``'s calls: its module and qualified name, made label-safe."""
    name = _NOT_NAME.sub("_", _qualified(fn)) or "callable"
    return name[-MAX_NAME:]
