"""Priority of a call, forwarded downstream so loaded servers shed the least important first."""

from __future__ import annotations

import enum

from microcall.errors import ConfigurationError


class Priority(enum.StrEnum):
    """How much a call matters; sent as ``X-Request-Priority``.

    ``LOW`` is refused first when a server sheds load and ``HIGH`` last.
    """

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def parse(cls, value: Priority | str) -> Priority:
        """The priority named by ``value`` (case-insensitive), or ConfigurationError."""
        if isinstance(value, Priority):
            return value
        try:
            return cls(value.strip().lower())
        except (ValueError, AttributeError):
            raise ConfigurationError(
                f"priority must be one of high, normal, low; got {value!r}"
            ) from None
