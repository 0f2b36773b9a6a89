"""Connection pool limits, shared by the HTTP transports."""

from __future__ import annotations

from dataclasses import dataclass

from microcall._validate import number, positive_int, whole

# aiohttp's own default; httpx and urllib3 are in the same range.
DEFAULT_MAX_CONNECTIONS = 100

# An idle pooled connection is not reused after this many seconds. Servers
# close idle keep-alive connections on their own schedule: gunicorn after 2 s,
# uvicorn and Node after 5 s, nginx after 75 s. A client that keeps one longer
# than the server does races the server's close with its next request. 4 s
# stays under uvicorn's and Node's 5 s with a second of margin (the choice
# Node's agentkeepalive makes, for the same reason); gunicorn's 2 s, load
# balancers tuned shorter, and a close that crosses the next request in
# flight are covered by the resend of a request that failed on a reused
# connection before any response byte arrived (docs/resilience.md).
DEFAULT_KEEPALIVE_EXPIRY = 4.0

# The largest response body a call buffers. Bodies are held in memory whole
# (Response.content), so the cap is what one call may cost in memory: 64 MiB
# is far above what a service API answers (JSON pages, protobufs) and low
# enough that a runaway or hostile body fails the call instead of the
# process (a 256 MiB body costs ~360 MB of RSS buffered). A service that
# really returns more sets its own cap, or None.
DEFAULT_MAX_RESPONSE_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Connection pool and response limits.

    ``max_connections`` bounds the connections *in use* at once, over all
    hosts; a call that needs one more waits for one to be released (within
    its deadline). ``max_connections_per_host`` (None: only the total applies)
    does the same per host. Idle keep-alive connections are not counted (as
    in aiohttp's connector): they are kept for reuse, and one idle longer than
    ``keepalive_expiry`` seconds is closed rather than reused.
    ``max_response_size`` is the largest response body, in bytes, a call
    reads (after decompression); past it the call fails with
    ``ResponseTooLarge`` and nothing more is read. None: no cap.
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_host: int | None = None
    keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY
    max_response_size: int | None = DEFAULT_MAX_RESPONSE_SIZE

    def __post_init__(self) -> None:
        positive_int("max_connections", self.max_connections)
        per_host = self.max_connections_per_host
        if per_host is not None:
            positive_int("max_connections_per_host", per_host, what="None or an integer")
        number(
            "keepalive_expiry", self.keepalive_expiry, above=0, what="a finite number of seconds"
        )
        cap = self.max_response_size
        if cap is not None:
            whole("max_response_size", cap, minimum=0, what="None or a number of bytes")
