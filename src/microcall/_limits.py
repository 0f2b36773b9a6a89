"""Connection pool limits, shared by the HTTP transports."""

from __future__ import annotations

from dataclasses import dataclass

from microcall.errors import ConfigurationError

# aiohttp's own defaults; httpx and urllib3 are in the same range.
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_KEEPALIVE_EXPIRY = 15.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Connection pool limits.

    ``max_connections`` bounds the connections *in use* at once, over all
    hosts; a call that needs one more waits for one to be released (within
    its deadline). ``max_connections_per_host`` (None: only the total applies)
    does the same per host. Idle keep-alive connections are not counted (as
    in aiohttp's connector): they are kept for reuse and closed after
    ``keepalive_expiry`` seconds.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_host: int | None = None
    keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ConfigurationError(f"max_connections must be >= 1, got {self.max_connections}")
        per_host = self.max_connections_per_host
        if per_host is not None and per_host < 1:
            raise ConfigurationError(f"max_connections_per_host must be >= 1, got {per_host}")
        if not 0 < self.keepalive_expiry < float("inf"):
            raise ConfigurationError(
                f"keepalive_expiry must be a positive number of seconds, got {self.keepalive_expiry}"
            )
