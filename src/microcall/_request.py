"""What the engine sends: one immutable request, replayed unchanged by every attempt."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from yarl import URL

# RFC 9110 section 9.2.2: sending these twice has the same effect as once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


@dataclass(slots=True)
class Request:
    """A request as the engine sees it: the body is already encoded, so it can be replayed.

    Treat it as immutable: every attempt of a call sends this same object.
    (Not ``frozen``: a frozen dataclass pays a ``object.__setattr__`` per field
    on construction, and one is built for every call.)

    ``replayable`` says whether sending it more than once is safe: idempotent
    methods are, a POST only when the caller opted in or gave an idempotency key.
    ``path`` is the encoded path and query relative to the client's base URL
    when the call may go to any of its replicas (None for an absolute URL).
    ``route`` names the route for learned hedge delays (a template, never a
    raw path, so the set of routes stays small).
    ``stream`` asks the transport for the response as soon as its head
    arrived, the body left on the connection to be read as it comes
    (``client.stream(...)``; see ``microcall._stream``).
    """

    method: str
    url: URL
    headers: Mapping[str, str]
    body: bytes | None = None
    replayable: bool = True
    path: str | None = None
    route: str = ""
    endpoint: str = ""
    stream: bool = False

    def __post_init__(self) -> None:
        if not self.endpoint:
            # Clients pass it in, computed once per URL they know.
            self.endpoint = endpoint_of(self.url)

    def __repr__(self) -> str:
        # The URL without user-info or query: those may carry credentials.
        return f"<Request {self.method} {self.url.with_user(None).with_query(None)}>"


def endpoint_of(url: URL) -> str:
    """``host:port`` of ``url``: how attempts and errors name a target (never credentials)."""
    return f"{url.host}:{url.port}"
