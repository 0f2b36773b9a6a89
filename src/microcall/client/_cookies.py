"""A client's cookie jar: opt-in, one per client, matched by the standard library's CookieJar.

Services rarely keep sessions with each other, so a client keeps no cookies
unless asked (``cookies=``). When asked, the matching of domain, path,
``Secure`` and expiry is ``http.cookiejar``'s (what requests and httpx use),
not ours: this module only translates between it and microcall's requests.

``cookies=`` takes:

* ``True``: an empty jar of the client's own;
* a mapping ``{name: value}``: a jar of the client's own holding these
  cookies, for its base URL's host (every path); a client without a base
  URL refuses it, since there would be no host to keep them to;
* an ``http.cookiejar.CookieJar`` (a ``MozillaCookieJar`` to persist it, say):
  used as it is, and shared with whoever else holds it, which is then the
  caller's choice.

Two clients given the same mapping each get a jar of their own: they never
see each other's cookies. The jar this module makes keeps host-only cookies
(those set without a ``Domain`` attribute) to their exact host, as RFC 6265
says (``DomainStrictNonDomain``; the standard library's default would also
send them to subdomains).

Which URL a cookie belongs to. The Cookie header is chosen before the
balancer picks a replica, so it is matched against the URL the call names
(its base URL's host); cookies a replica sets are kept for that same name,
whichever replica answered. Redirects a transport follows are followed
with the jar (:class:`HopCookies`): each hop's cookies are kept for the
URL it answered from, and each next hop gets the jar's cookies for its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

from yarl import URL

from microcall.errors import ConfigurationError, MicrocallError

CookiesOption = bool | Mapping[str, str] | CookieJar | None
"""``cookies=``: True (an empty jar), initial cookies, a CookieJar, or None / False (no jar)."""

# RFC 6265 4.1.1: a cookie's name is a token; its value is cookie-octets
# (visible ASCII but for DQUOTE, comma, semicolon and backslash).
_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")


def new_jar() -> CookieJar:
    """An empty jar keeping host-only cookies to their exact host (RFC 6265 5.3 step 6)."""
    policy = DefaultCookiePolicy(strict_ns_domain=DefaultCookiePolicy.DomainStrictNonDomain)
    return CookieJar(policy)


def make_jar(value: Any, base: URL | None) -> CookieJar | None:
    """The jar a client keeps for ``cookies=value`` (None: no jar, the default)."""
    if value is None or value is False:
        return None
    if value is True:
        return new_jar()
    if isinstance(value, CookieJar):
        return value
    if isinstance(value, Mapping):
        if base is None:
            raise ConfigurationError(
                "cookies={...} needs a base_url, the host to keep them to; "
                "pass cookies=True (an empty jar) or an http.cookiejar.CookieJar instead"
            )
        jar = new_jar()
        pairs = checked_pairs(value, ConfigurationError)
        # Through the jar's own path for Set-Cookie, so they are scoped as
        # the base URL's host would have scoped them.
        _extract(jar, [f"{name}={text}; Path=/" for name, text in pairs], base)
        return jar
    raise ConfigurationError(
        "cookies= takes True, a mapping of names to values or an http.cookiejar.CookieJar, "
        f"got {type(value).__name__}"
    )


def checked_pairs(given: Any, error: type[MicrocallError]) -> list[tuple[str, str]]:
    """``{name: value}`` as pairs a Cookie header can carry (never echoing a value)."""
    if not isinstance(given, Mapping):
        raise error(f"cookies= takes a mapping of names to values, got {type(given).__name__}")
    pairs = []
    for name, value in given.items():
        if not (isinstance(name, str) and _NAME.fullmatch(name)):
            raise error(f"cookie name {name!r} is not a token (RFC 6265 4.1.1)")
        if not (isinstance(value, str) and _VALUE.fullmatch(value)):
            # The value may be a session id: named, never shown.
            raise error(
                f"cookie {name}: its value must be a str of visible ASCII without spaces, "
                "quotes, commas, semicolons or backslashes (RFC 6265 4.1.1; the value is not shown)"
            )
        pairs.append((name, value))
    return pairs


def cookie_header(jar: CookieJar | None, url: URL, extra: list[tuple[str, str]]) -> str | None:
    """The Cookie header for a request to ``url``: the jar's cookies, then the call's own.

    A call's own cookies win over the jar's of the same name.
    """
    sent: list[str] = []
    if jar is not None:
        adapter = _JarRequest(url)
        jar.add_cookie_header(adapter)  # type: ignore[arg-type]  # urllib's interface, no more
        if adapter.cookie:
            overridden = {name for name, _ in extra}
            sent = [
                part
                for part in adapter.cookie.split("; ")
                if part.partition("=")[0] not in overridden
            ]
    sent.extend(f"{name}={value}" for name, value in extra)
    return "; ".join(sent) if sent else None


class HopCookies:
    """One call's cookies on each hop of its redirects (``Request.redirect_cookies``).

    What a hop's answer sets goes into the jar, and each next hop carries the
    jar's cookies for its own URL, as a browser's request would; the call's
    own ``cookies=`` go only to hops on the service the call named. A URL of
    that service (the name the call used, or one of its replicas) is matched,
    and its cookies kept, under the name: the next call's Cookie header is
    matched against it, whichever replica answered. The final answer's
    cookies are kept the same way (``keep`` with the response's URL).
    """

    __slots__ = ("_extra", "_jar", "_named", "_same_service")

    def __init__(
        self,
        jar: CookieJar | None,
        named: URL,
        extra: list[tuple[str, str]],
        same_service: Callable[[URL], bool],
    ) -> None:
        self._jar = jar
        self._named = named
        self._extra = extra
        self._same_service = same_service

    def _as_named(self, url: URL) -> URL | None:
        """``url`` under the name the call used, when it is that service's; else None."""
        if not self._same_service(url):
            return None
        return self._named.with_path(url.raw_path, encoded=True)

    def keep(self, url: URL, set_cookies: Sequence[str]) -> None:
        if self._jar is not None and set_cookies:
            _extract(self._jar, set_cookies, self._as_named(url) or url)

    def header_for(self, url: URL) -> str | None:
        named = self._as_named(url)
        if named is None:  # another service: the jar's cookies for it, never the call's own
            return cookie_header(self._jar, url, [])
        return cookie_header(self._jar, named, self._extra)


def _extract(jar: CookieJar, set_cookies: Sequence[str], url: URL) -> None:
    # The adapters have what http.cookiejar reads of urllib's classes, no more.
    response: Any = _JarResponse(set_cookies)
    request: Any = _JarRequest(url)
    jar.extract_cookies(response, request)


class _JarRequest:
    """What ``http.cookiejar`` reads of a request: ``urllib.request.Request``'s interface."""

    def __init__(self, url: URL) -> None:
        self._url = url
        self.cookie: str | None = None
        self.type = url.scheme
        self.host = url.host_port_subcomponent or ""
        self.origin_req_host = url.host or ""
        self.unverifiable = False  # the caller asked for this URL: never a third party

    def get_full_url(self) -> str:
        return str(self._url)

    def has_header(self, name: str) -> bool:
        return name.lower() == "cookie" and self.cookie is not None

    def get_header(self, name: str, default: str | None = None) -> str | None:
        return self.host if name.lower() == "host" else default

    def add_unredirected_header(self, name: str, value: str) -> None:
        if name.lower() == "cookie":
            self.cookie = value


class _JarResponse:
    """What ``http.cookiejar`` reads of a response: ``info().get_all(name)``."""

    def __init__(self, set_cookies: Iterable[str]) -> None:
        self._set_cookies = list(set_cookies)

    def info(self) -> _JarResponse:
        return self

    def get_all(self, name: str, default: list[str]) -> list[str]:
        if name.lower() == "set-cookie":
            return self._set_cookies or default
        return default
