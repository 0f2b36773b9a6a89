"""Doubles for resilient-callable tests: a flaky function and an observer that records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from yarl import URL

from microcall import Attempt, AttemptKind, Request, Response


class Flaky:
    """A function that raises ``errors`` in turn, then returns ``value``; counts its calls."""

    def __init__(self, *errors: Exception, value: Any = "done") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


@dataclass
class Recorded:
    request: Request
    attempts_started: list[tuple[int, AttemptKind, URL]] = field(default_factory=list)
    attempts_ended: list[Attempt] = field(default_factory=list)
    ended: tuple[Response | None, BaseException | None, Sequence[Attempt]] | None = None


class Recorder:
    """A client observer that keeps what it was told, call by call."""

    def __init__(self) -> None:
        self.calls: list[Recorded] = []

    def call_started(self, request: Request) -> _Scope:
        recorded = Recorded(request)
        self.calls.append(recorded)
        return _Scope(recorded)


class _Scope:
    def __init__(self, recorded: Recorded) -> None:
        self._recorded = recorded

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> _AttemptScope:
        self._recorded.attempts_started.append((index, kind, url))
        return _AttemptScope(self._recorded)

    def call_ended(
        self, response: Response | None, error: BaseException | None, attempts: Sequence[Attempt]
    ) -> None:
        self._recorded.ended = (response, error, tuple(attempts))


class _AttemptScope:
    def __init__(self, recorded: Recorded) -> None:
        self._recorded = recorded

    def attempt_ended(self, attempt: Attempt) -> None:
        self._recorded.attempts_ended.append(attempt)
