"""What the engine sends: one immutable request, replayed unchanged by every attempt."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from yarl import URL

if TYPE_CHECKING:
    from microcall._body import Body

# RFC 9110 section 9.2.2: sending these twice has the same effect as once.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class RedirectCookies(Protocol):
    """A call's cookies across the redirects its transport follows (a client's jar behind it).

    A transport that follows a redirect hands over the cookies set by the
    answer it leaves (``keep``), then sends the next hop with the Cookie
    header ``header_for`` gives (none when it gives None) in place of the one
    it had.
    """

    def keep(self, url: URL, set_cookies: Sequence[str]) -> None:
        """Keep the ``Set-Cookie`` values of the redirect that ``url`` answered with."""

    def header_for(self, url: URL) -> str | None:
        """The Cookie header of the next hop, to ``url``."""


@dataclass(slots=True)
class Request:
    """A request as the engine sees it: its body is encoded bytes, or a Body read as it is sent.

    Treat it as immutable: every attempt of a call sends this same object.
    (Not ``frozen``: a frozen dataclass pays a ``object.__setattr__`` per field
    on construction, and one is built for every call.)

    ``body`` is bytes (held, so every attempt sends them again), a
    ``microcall._body.Body`` (a file, an iterator or a multipart form, read
    while it is sent; ``Body.replayable`` says whether it can be read again),
    or None.
    ``replayable`` says whether sending it more than once is safe: idempotent
    methods are, a POST only when the caller opted in or gave an idempotency key.
    (A body read once still goes once: the engine refuses its retries and hedges.)
    ``path`` is the encoded path and query relative to the client's base URL
    when the call may go to any of its replicas (None for an absolute URL).
    ``route`` names the route for learned hedge delays (a template, never a
    raw path, so the set of routes stays small).
    ``stream`` asks the transport for the response as soon as its head
    arrived, the body left on the connection to be read as it comes
    (``client.stream(...)``; see ``microcall._stream``).
    ``redirect_cookies``, set when the client keeps a jar or the call brings
    cookies, is how a transport carries them across the redirects it follows.
    """

    method: str
    url: URL
    headers: Mapping[str, str]
    body: bytes | Body | None = None
    replayable: bool = True
    path: str | None = None
    route: str = ""
    endpoint: str = ""
    stream: bool = False
    redirect_cookies: RedirectCookies | None = None

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
