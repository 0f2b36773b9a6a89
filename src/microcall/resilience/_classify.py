"""What an attempt of a callable produced, and what it means: answer, retry, or stop.

An attempt either returns a value or raises an exception (only an
``Exception``: a ``CancelledError``, ``KeyboardInterrupt`` or ``SystemExit``
is never an outcome, it ends the call as itself). A classifier turns the
outcome into the same :class:`~microcall.policy.classify.Verdict` HTTP
outcomes get::

    ACCEPT  an answer: the call returns it
    RETRY   a failure another attempt may fix (a result: returned when attempts run out)
    STOP    a failure no attempt will fix: an exception propagates as itself

``on=`` is the short form (stamina's): the exception classes, or a predicate
on the exception, that are worth another attempt; everything else raised
stops the call and every value returned is an answer. ``classifier=`` is the
full form, which sees returned values too (tenacity's ``retry_if_result``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from microcall.errors import ConfigurationError
from microcall.policy.classify import Verdict

ExceptionTypes: TypeAlias = type[Exception] | tuple[type[Exception], ...]
RetryOn: TypeAlias = ExceptionTypes | Callable[[Exception], bool]
"""``on=``: exception classes worth another attempt, or a predicate on the exception."""

OutcomeClassifier: TypeAlias = Callable[[Any, Exception | None], Verdict]
"""``classifier(result, error) -> Verdict``: ``(value, None)`` after a return, ``(None, exc)`` after a raise."""


@dataclass(frozen=True, slots=True)
class Returned:
    """An attempt that returned ``value``."""

    value: Any


@dataclass(frozen=True, slots=True)
class Raised:
    """An attempt that raised ``error``."""

    error: Exception


Outcome = Returned | Raised


def _answers_only(result: Any, error: Exception | None) -> Verdict:
    # Nothing is retriable: a value is the answer, an exception propagates.
    return Verdict.STOP if error is not None else Verdict.ACCEPT


def classifier_of(on: RetryOn | None, classifier: OutcomeClassifier | None) -> OutcomeClassifier:
    """The classifier ``on=`` or ``classifier=`` describe (neither: nothing is retriable)."""
    if on is not None and classifier is not None:
        raise ConfigurationError("give on= or classifier=, not both")
    if classifier is not None:
        if not callable(classifier):
            raise ConfigurationError(
                f"classifier must be a function (result, error) -> Verdict, got {classifier!r}"
            )
        return classifier
    if on is None:
        return _answers_only
    types = _exception_types(on)
    if types is not None:

        def retry_on_types(result: Any, error: Exception | None) -> Verdict:
            if error is None:
                return Verdict.ACCEPT
            return Verdict.RETRY if isinstance(error, types) else Verdict.STOP

        return retry_on_types
    if not callable(on):
        raise ConfigurationError(
            f"on must be an exception class, a tuple of them, or a predicate, got {on!r}"
        )
    predicate = on

    def retry_when(result: Any, error: Exception | None) -> Verdict:
        if error is None:
            return Verdict.ACCEPT
        return Verdict.RETRY if predicate(error) else Verdict.STOP

    return retry_when


def _exception_types(on: object) -> tuple[type[Exception], ...] | None:
    """``on`` as a tuple of exception classes; None when it is not classes (a predicate)."""
    members = on if isinstance(on, tuple) else (on,)
    if not all(isinstance(member, type) for member in members):
        if isinstance(on, tuple):
            raise ConfigurationError(f"on= as a tuple must hold exception classes, got {on!r}")
        return None
    for member in members:
        assert isinstance(member, type)
        if not issubclass(member, Exception):
            # BaseException's other children (CancelledError, KeyboardInterrupt,
            # SystemExit) stop work on purpose: retrying them would undo that.
            raise ConfigurationError(
                f"on= may name only Exception subclasses, got {member.__name__}"
            )
    if not members:
        raise ConfigurationError("on= is an empty tuple: name the exceptions worth retrying")
    return members
