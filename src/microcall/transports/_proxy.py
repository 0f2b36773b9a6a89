"""Forward proxies: which one a request goes through, from settings checked once at construction.

Theory of operation. A client's ``proxy=`` (one URL) and ``trust_env=``
(read the proxy variables of the environment) become one ``ProxySettings``
when the transport is built: a proxy for ``http://`` targets, one for
``https://`` targets, and the ``NO_PROXY`` list. The environment is read
then, not per request, so every call of a client is routed alike and a
malformed variable is a ``ConfigurationError`` at construction rather than
a failure mid-call. Per request, ``ProxySettings.proxy_for(url)`` answers
which proxy (or none), remembering the answer per target origin: a client
talks to few of them.

The environment is read the way urllib reads it
(``urllib.request.getproxies_environment``): ``http_proxy``,
``https_proxy``, ``all_proxy``, ``no_proxy``, lower case winning over upper
case, and ``HTTP_PROXY`` ignored in a CGI script (httpoxy). ``ALL_PROXY``
stands in for a scheme with no variable of its own, as in requests and
httpx. A value without a scheme (``proxy:3128``) means ``http://``, as in
requests and httpx. ``NO_PROXY`` matching is urllib's
(``proxy_bypass_environment``): ``*``, or comma-separated host names that
match themselves and their subdomains (``example.com`` and
``.example.com`` alike), optionally with ``:port``; address ranges (CIDR)
are not understood.

Only ``http://`` proxies are spoken (plain HTTP forwarded in absolute form,
HTTPS tunnelled with ``CONNECT``). A proxy's user-info becomes a Basic
``Proxy-Authorization`` header, sent to the proxy only; the proxy is named
in messages and reprs by ``host:port``, never with its credentials.
"""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

# Not in typeshed, but urllib's own NO_PROXY rule since Python 2, and what
# requests calls too.
from urllib.request import proxy_bypass_environment  # type: ignore[attr-defined]

from yarl import URL

from microcall.errors import ConfigurationError

# The schemes of proxies microcall speaks to. An https:// proxy (TLS to the
# proxy itself) and SOCKS are refused rather than sent around.
PROXY_SCHEMES = frozenset({"http"})
DEFAULT_PROXY_PORT = 80  # as urllib3 and httpx: an http:// URL's own default

# Targets whose route is remembered; past this the memory starts over
# (a client that calls an unbounded set of hosts still costs a bounded dict).
_REMEMBERED = 1024


@dataclass(frozen=True, slots=True)
class Proxy:
    """One forward proxy: its URL without user-info, and the header its user-info makes.

    ``authorization`` is the ``Proxy-Authorization`` value (Basic), or None;
    it is left out of ``repr`` and of every message.
    """

    url: URL
    authorization: str | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """The proxy's host name or address."""
        return self.url.host or ""

    @property
    def port(self) -> int:
        """The proxy's port."""
        return self.url.port or DEFAULT_PROXY_PORT

    @property
    def address(self) -> str:
        """``host:port``: how messages name the proxy (never with credentials)."""
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        auth = ", with credentials" if self.authorization else ""
        return f"Proxy({self.url}{auth})"


class ProxyFailed(Exception):
    """A proxy could not be reached, or answered ``status`` instead of carrying the request.

    Raised inside a transport, and made a ``ProxyError`` by its ``map_error``
    (``_settings.proxy_error``). ``what`` never holds a credential.
    """

    def __init__(
        self, proxy: Proxy, what: str = "", *, status: int | None = None, reason: str = ""
    ) -> None:
        super().__init__(what or f"{status} {reason}")
        self.proxy = proxy
        self.what = what
        self.status = status
        self.reason = reason


def parse_proxy(value: object, *, source: str = "proxy") -> Proxy:
    """The ``Proxy`` a URL names, or ConfigurationError saying why it cannot be used.

    ``source`` names where the value came from, for the message. A message
    never repeats the value's user-info.
    """
    if isinstance(value, str):
        text = value.strip()
        if "://" not in text:
            text = "http://" + text
        try:
            url = URL(text)
        except (ValueError, TypeError) as error:
            raise ConfigurationError(f"{source} is not a URL") from error
    elif isinstance(value, URL):
        url = value
    else:
        raise ConfigurationError(
            f"{source} must be a URL (str or yarl.URL) such as http://proxy:3128, "
            f"got {type(value).__name__}"
        )
    shown = url.with_user(None) if url.is_absolute() else url
    if url.scheme not in PROXY_SCHEMES:
        raise ConfigurationError(
            f"{source} {shown} has scheme {url.scheme or 'none'!r}: only http:// proxies "
            "are supported (HTTPS targets go through them with CONNECT)"
        )
    try:
        port = url.port
    except ValueError as error:  # yarl checks the port lazily
        raise ConfigurationError(f"{source} {shown.host} has an invalid port") from error
    if not url.host or port == 0:
        raise ConfigurationError(f"{source} {shown} names no host and port")
    if url.path not in ("", "/") or url.query_string or url.fragment:
        raise ConfigurationError(f"{source} {shown} must be scheme://host:port, with no path")
    authorization = None
    if url.user is not None:
        # RFC 7617: user-id ":" password, base64; UTF-8 as httpx and curl send it.
        pair = f"{url.user}:{url.password or ''}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Proxy(URL.build(scheme="http", host=url.host, port=port), authorization)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxySettings:
    """Where requests go: a proxy for ``http://`` targets, one for ``https://``, and who bypasses.

    ``no_proxy`` is a ``NO_PROXY`` value (None: no target bypasses the proxy).
    Built by :func:`proxy_settings`; ``proxy_for`` is asked per request.
    """

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: str | None = None
    _routes: dict[tuple[str, str, int], Proxy | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    def proxy_for(self, url: URL) -> Proxy | None:
        """The proxy a request to ``url`` goes through, or None to go direct."""
        return self.proxy_for_origin(url.scheme, url.host or "", url.port or 0)

    def proxy_for_origin(self, scheme: str, host: str, port: int) -> Proxy | None:
        """``proxy_for`` of a target given by parts (``port`` explicit, never None)."""
        key = (scheme, host, port)
        routes = self._routes
        try:
            return routes[key]
        except KeyError:
            pass
        chosen = self._choose(key)
        if len(routes) >= _REMEMBERED:
            routes.clear()
        routes[key] = chosen
        return chosen

    def _choose(self, key: tuple[str, str, int]) -> Proxy | None:
        scheme, host, port = key
        proxy = self.http if scheme == "http" else self.https if scheme == "https" else None
        if proxy is None or self.no_proxy is None:
            return proxy
        # urllib's own rules; "host:port" lets an entry name a port.
        bypass = proxy_bypass_environment(f"{host}:{port}", {"no": self.no_proxy})
        return None if bypass else proxy


def proxy_settings(proxy: object, trust_env: object) -> ProxySettings | None:
    """The proxy settings of ``proxy=`` and ``trust_env=``, or None when no request is proxied.

    ``proxy`` given: every request goes through it, except (with
    ``trust_env``) the targets ``NO_PROXY`` names. ``trust_env`` alone: the
    environment's variables decide. The environment is read now.
    """
    if not isinstance(trust_env, bool):
        raise ConfigurationError(f"trust_env must be a bool, got {trust_env!r}")
    explicit = None if proxy is None else parse_proxy(proxy)
    if not trust_env:
        return None if explicit is None else ProxySettings(http=explicit, https=explicit)
    found = urllib.request.getproxies_environment()
    http: Proxy | None
    https: Proxy | None
    if explicit is not None:
        http = https = explicit
    else:
        every = _from_env(found, "all")
        http = _from_env(found, "http") or every
        https = _from_env(found, "https") or every
    if http is None and https is None:
        return None
    return ProxySettings(http=http, https=https, no_proxy=found.get("no"))


def _from_env(found: Mapping[str, str], scheme: str) -> Proxy | None:
    value = found.get(scheme)
    if value is None:
        return None
    source = f"trust_env: the environment's {scheme}_proxy (or {scheme.upper()}_PROXY)"
    return parse_proxy(value, source=source)
