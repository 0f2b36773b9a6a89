"""The response a call returns: status, headers, body, and the attempts behind it."""

from __future__ import annotations

import enum
import json as _json
import sys
from collections.abc import Callable, Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any, TypeVar, overload

from multidict import CIMultiDict, CIMultiDictProxy, MultiDictProxy
from yarl import URL

from microcall._attempt import Attempt
from microcall._request import Request
from microcall._typed import adapter_for
from microcall.errors import HTTPStatusError, ResponseValidationError, UsageError

T = TypeVar("T")

# How many of pydantic's error details go into the message (all are kept on
# the exception).
SHOWN_ERRORS = 3


class CacheStatus(enum.StrEnum):
    """How a client's response cache answered a call (``response.cache_status``)."""

    HIT = "hit"  # a fresh stored response; nothing was sent
    REVALIDATED = "revalidated"  # a stored response the service confirmed unchanged (304)
    STALE = "stale"  # a stored response past its freshness, because the service failed
    MISS = "miss"  # the service's response (stored when it may be)
    COALESCED = "coalesced"  # the response of an identical call in flight at the same time


_FROM_STORE = frozenset({CacheStatus.HIT, CacheStatus.REVALIDATED, CacheStatus.STALE})


class Response:
    """An HTTP response, fully read.

    ``elapsed`` covers the whole logical call (every attempt and wait), and
    ``attempts`` lists each attempt made, the winning one included.

    With a response cache, ``cache_status`` says how the cache answered (None:
    the call was not cacheable, or the client has no cache). An answer from
    the cache never counts as an attempt: a hit has no attempts and an
    ``elapsed`` of 0. ``parsed`` holds the body validated into the call's
    ``response_model``, when it had one.
    """

    # "__dict__" keeps requests' habit working: a hook may attach its own
    # attributes (``response.data = response.json()``).
    __slots__ = (
        "__dict__",
        "_headers",
        "attempts",
        "cache_status",
        "content",
        "elapsed",
        "parsed",
        "reason",
        "request",
        "status_code",
        "url",
    )

    def __init__(
        self,
        *,
        status_code: int,
        headers: Mapping[str, str] | HeaderLines,
        content: bytes,
        url: URL,
        request: Request,
        reason: str = "",
    ) -> None:
        self.status_code = status_code
        self._headers: Mapping[str, str] | HeaderLines = headers
        self.content = content
        self.url = url
        self.request = request
        self.reason = reason
        self.elapsed = 0.0
        self.attempts: tuple[Attempt, ...] = ()
        self.cache_status: CacheStatus | None = None
        self.parsed: Any = None

    @property
    def headers(self) -> Mapping[str, str]:
        """The response's headers (a case-insensitive ``CIMultiDictProxy`` from every transport)."""
        headers = self._headers
        if isinstance(headers, HeaderLines):  # as they came: split now that they are read
            headers = self._headers = headers.parsed()
        return headers

    @headers.setter
    def headers(self, headers: Mapping[str, str]) -> None:
        self._headers = headers

    @property
    def ok(self) -> bool:
        """True for a status below 400."""
        return self.status_code < 400

    @property
    def from_cache(self) -> bool:
        """True when the body came from the client's cache (a hit, a revalidated or a stale entry)."""
        return self.cache_status in _FROM_STORE

    @property
    def cookies(self) -> dict[str, str]:
        """``{name: value}`` of the cookies this response sets (its ``Set-Cookie`` headers).

        As the server sent them, whether or not a client's jar keeps them (a
        client has no jar unless made with ``cookies=``); a cookie the server
        deletes shows with the value it sent, usually empty. Attributes
        (``Path``, ``Expires``...) are in the headers themselves.
        """
        found: dict[str, str] = {}
        for line in set_cookie_values(self.headers):
            parsed: SimpleCookie = SimpleCookie()
            try:
                parsed.load(line)
            except CookieError:
                continue  # a malformed Set-Cookie from the network: not a cookie
            for name, morsel in parsed.items():
                found[name] = morsel.value
        return found

    @property
    def encoding(self) -> str:
        """The charset named by Content-Type, or utf-8."""
        content_type = self.headers.get("Content-Type", "")
        for part in content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"').strip()
        return "utf-8"

    @property
    def text(self) -> str:
        """The body decoded with :attr:`encoding` (undecodable bytes replaced)."""
        try:
            return self.content.decode(self.encoding, errors="replace")
        except LookupError:  # an unknown charset name from the network
            return self.content.decode("utf-8", errors="replace")

    @overload
    def json(self, *, model: type[T]) -> T: ...

    @overload
    def json(self, *, model: Any) -> Any: ...

    @overload
    def json(self, **kwargs: Any) -> Any: ...

    def json(self, *, model: Any = None, **kwargs: Any) -> Any:
        """The body parsed as JSON (``json.loads`` keyword arguments pass through).

        With ``model`` (a pydantic model, or any type pydantic validates:
        ``list[Book]``, ``dict[str, Book]``...) the body is validated into it;
        a body that does not fit raises :class:`ResponseValidationError`,
        carrying the body and pydantic's details. pydantic is needed only then.
        """
        if model is not None:
            if kwargs:
                raise UsageError("json(model=...) takes no json.loads arguments")
            return validate(self, model)
        return _json.loads(self.content, **kwargs)

    def raise_for_status(self) -> Response:
        """Raise HTTPStatusError for a 4xx or 5xx status; return self otherwise."""
        if self.status_code >= 400:
            kind = "client error" if self.status_code < 500 else "server error"
            raise HTTPStatusError(
                f"{self.status_code} {self.reason} ({kind}) for {self.request!r}".replace(
                    "  ", " "
                ),
                response=self,
            )
        return self

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"

    def __getstate__(self) -> dict[str, Any]:
        # Pickled for a process pool's response hooks (FuturesClient's
        # executor=). The read-only header views transports hand over do
        # not pickle: their items do, and come back as such a view.
        state = dict(self.__dict__)
        for name in _FIELDS:
            state[name] = getattr(self, name)
        if isinstance(self.headers, MultiDictProxy | CIMultiDictProxy):
            state["headers"] = _HeaderItems(self.headers.items())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        headers = state.get("headers")
        if isinstance(headers, _HeaderItems):
            state["headers"] = CIMultiDictProxy(CIMultiDict(headers))
        for name, value in state.items():
            setattr(self, name, value)


_FIELDS = tuple(
    name.removeprefix("_") for name in Response.__slots__ if name != "__dict__"
)  # "_headers" is pickled through its property, split


def split_header_lines(lines: str) -> list[tuple[str, str]]:
    """``[(name, value), ...]`` from header lines joined by CRLF, as an HTTP/1.1 parser accepted them.

    Only for lines a strict parser (llhttp) has already held to the grammar:
    CRLF line ends, no folded lines, no space before the colon. Values lose
    their surrounding spaces and tabs, as RFC 9110 says they are not part of them.

    >>> split_header_lines("Content-Type: text/plain\\r\\nX-A:b ")
    [('Content-Type', 'text/plain'), ('X-A', 'b')]
    """
    if not lines:
        return []
    headers = []
    for line in lines.split("\r\n"):  # a plain loop: cheaper than a comprehension here
        name, _, value = line.partition(":")
        headers.append((name, value.strip(" \t")))
    return headers


class HeaderLines:
    """A response's header lines as they came, parsed when the response's ``headers`` is first read.

    Most answers are read for their status and body alone; splitting every
    head into a multidict up front cost a few percent of a call's CPU.
    """

    __slots__ = ("_lines",)

    def __init__(self, lines: str) -> None:
        self._lines = lines

    def parsed(self) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(CIMultiDict(split_header_lines(self._lines)))


class _HeaderItems(list[tuple[str, str]]):
    """A read-only header view's items, as pickled."""


def set_cookie_values(headers: Mapping[str, str]) -> list[str]:
    """Every ``Set-Cookie`` value of a response's headers, in order."""
    getall: Callable[[str, list[str]], list[str]] | None = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall("Set-Cookie", []))
    return [value for name, value in headers.items() if name.lower() == "set-cookie"]


def validate(response: Response, model: Any) -> Any:
    """``response``'s JSON body validated into ``model``; ResponseValidationError if it does not fit."""
    adapter = adapter_for(model)
    pydantic = sys.modules["pydantic"]
    try:
        return adapter.validate_json(response.content)
    except pydantic.ValidationError as exc:
        details = exc.errors(include_url=False)
        raise ResponseValidationError(
            _message(response, model, details), response=response, model=model, errors=details
        ) from exc


def _message(response: Response, model: Any, details: list[Any]) -> str:
    name = getattr(model, "__name__", None) or repr(model)
    if hasattr(model, "__args__"):  # list[Book] and friends: their repr says it best
        name = repr(model)
    shown = "; ".join(
        f"{'.'.join(str(part) for part in detail['loc']) or '(body)'}: {detail['msg']}"
        for detail in details[:SHOWN_ERRORS]
    )
    more = f" (and {len(details) - SHOWN_ERRORS} more)" if len(details) > SHOWN_ERRORS else ""
    count = f"{len(details)} error{'s' if len(details) != 1 else ''}"
    return (
        f"{response.status_code} response body for {response.request!r} does not fit {name}: "
        f"{count}: {shown}{more}"
    )
