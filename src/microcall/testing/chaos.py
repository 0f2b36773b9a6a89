"""Fault injection inside a service: the server side of :func:`microcall.testing.services.inject`.

A :class:`Chaos` holds the faults a service should show (added latency, a
share of errors, an exit) and answers the chaos protocol (docs/testing.md)::

    chaos = Chaos()
    chaos.update({"latency": 0.2, "route": "/books"})
    fault = chaos.fault_for("/books/7")        # Fault(latency=0.2, error=False)

Services with several worker processes (gunicorn) pass ``path``: the
settings then live in that JSON file, written atomically by whichever
worker received ``POST /chaos`` and re-read by every worker when it changes,
so one switch reaches them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Chaos", "ChaosSettings", "Fault"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosSettings:
    """The faults a service shows: see the chaos protocol in :mod:`microcall.testing.services`."""

    latency: float = 0.0
    error_rate: float = 0.0
    route: str | None = None
    kill: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.latency <= 60.0:
            raise ValueError(f"latency must be between 0 and 60 s, got {self.latency!r}")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, got {self.error_rate!r}")

    @classmethod
    def from_json(cls, data: Any) -> ChaosSettings:
        """Settings from a decoded JSON object; ValueError on anything malformed."""
        if not isinstance(data, dict):
            raise ValueError("chaos settings must be a JSON object")
        unknown = set(data) - {"latency", "error_rate", "route", "kill"}
        if unknown:
            raise ValueError(f"unknown chaos settings: {sorted(unknown)}")
        route = data.get("route")
        if route is not None and not isinstance(route, str):
            raise ValueError("route must be a string")
        try:
            return cls(
                latency=float(data.get("latency", 0.0)),
                error_rate=float(data.get("error_rate", 0.0)),
                route=route or None,
                kill=bool(data.get("kill", False)),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(str(error)) from None

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one request: wait ``latency`` seconds, then fail if ``error``."""

    latency: float
    error: bool


NO_FAULT = Fault(0.0, False)


class Chaos:
    """The current chaos settings of a service, safe to read from any thread."""

    def __init__(
        self, path: str | os.PathLike[str] | None = None, rng: random.Random | None = None
    ):
        self._path = Path(path) if path is not None else None
        self._settings = ChaosSettings()
        self._stamp: float | None = None
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    @property
    def settings(self) -> ChaosSettings:
        """The settings in force (re-read from the shared file when it changed)."""
        if self._path is not None:
            self._reload()
        return self._settings

    def _reload(self) -> None:
        assert self._path is not None
        try:
            stamp = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            self._settings, self._stamp = ChaosSettings(), None
            return
        if stamp == self._stamp:
            return
        with contextlib.suppress(OSError, ValueError):
            settings = ChaosSettings.from_json(json.loads(self._path.read_text()))
            with self._lock:
                self._settings, self._stamp = settings, stamp

    def update(self, data: Any) -> ChaosSettings:
        """Replace the settings with ``data`` (a decoded JSON object); ValueError if malformed."""
        settings = ChaosSettings.from_json(data)
        with self._lock:
            self._settings = settings
            if self._path is not None:
                temporary = self._path.with_suffix(f".{os.getpid()}.tmp")
                temporary.write_text(json.dumps(settings.to_json()))
                os.replace(temporary, self._path)
        return settings

    def fault_for(self, route: str) -> Fault:
        """The fault for one request to ``route`` (a path or a gRPC method name)."""
        settings = self.settings
        if settings.latency == 0.0 and settings.error_rate == 0.0:
            return NO_FAULT
        if settings.route is not None and not route.startswith(settings.route):
            return NO_FAULT
        error = settings.error_rate > 0.0 and self._rng.random() < settings.error_rate
        return Fault(settings.latency, error)
