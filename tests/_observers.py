"""An observer for tests: the error each call ended with (None: it answered)."""

from __future__ import annotations

from typing import Any


class CallEnds:
    """Keeps how each call it follows ended; follows no attempt of its own."""

    def __init__(self) -> None:
        self.started = 0
        self.errors: list[BaseException | None] = []

    def call_started(self, request: Any) -> CallEnds:
        self.started += 1
        return self

    def attempt_started(self, *args: Any) -> None:
        return None

    def call_ended(self, response: Any, error: BaseException | None, attempts: Any) -> None:
        self.errors.append(error)
