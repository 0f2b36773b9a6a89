"""What every HTTP transport is given, checked once at construction, and the errors they share."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from yarl import URL

from microcall._limits import Limits
from microcall._request import Request
from microcall.errors import ConfigurationError, ProxyError, ResponseTooLarge
from microcall.transports._proxy import ProxyFailed, ProxySettings, proxy_settings


def checked_settings(
    limits: Limits | None, verify: bool | ssl.SSLContext, follow_redirects: bool
) -> Limits:
    """Refuse settings of the wrong kind now, not at the first call; return the limits to use."""
    if limits is not None and not isinstance(limits, Limits):
        raise ConfigurationError(f"limits must be a microcall.Limits, got {limits!r}")
    if not isinstance(verify, (bool, ssl.SSLContext)):
        raise ConfigurationError(f"verify must be a bool or an ssl.SSLContext, got {verify!r}")
    if not isinstance(follow_redirects, bool):
        raise ConfigurationError(f"follow_redirects must be a bool, got {follow_redirects!r}")
    return limits or Limits()


def too_large(request: Request, cap: int, how: str) -> ResponseTooLarge:
    """The error for a response body past ``Limits.max_response_size``."""
    return ResponseTooLarge(
        f"the response from {request.endpoint} {how} than max_response_size "
        f"({cap} bytes) allows; raise Limits.max_response_size (None: no cap) to accept it",
        request=request,
    )


def redirect_chain(where: str, urls: Sequence[URL]) -> str:
    """What went wrong with a redirect chain that hit the maximum: a loop, or just too long.

    Paths only: a query may carry credentials.
    """
    seen: set[URL] = set()
    for url in urls:
        if url in seen:
            hops = " -> ".join(each.path or "/" for each in urls)
            return f"redirect loop at {where}: {hops} (revisits {url.path or '/'})"
        seen.add(url)
    return f"{where} redirected more than {len(urls)} times; the last was {urls[-1].path}"


def checked_proxy(proxy: object, trust_env: object) -> ProxySettings | None:
    """The proxy settings of a transport's ``proxy=`` and ``trust_env=`` (None: all direct).

    Read once, here: a malformed proxy URL, an unsupported scheme, or such a
    value in the environment (with ``trust_env``) is a ConfigurationError now.
    """
    return proxy_settings(proxy, trust_env)


def proxy_error(request: Request, failure: ProxyFailed) -> ProxyError:
    """The error for a proxy that could not be reached or would not carry the request.

    It names the proxy by ``host:port`` and the target by its endpoint, never
    a credential.
    """
    proxy = failure.proxy
    if failure.status is None:
        what = failure.what
    else:
        answer = f"answered {failure.status} {failure.reason}".strip()
        if failure.status != 407:
            what = f"would not open a tunnel: {answer}"
        elif proxy.authorization:
            what = f"{answer}: it rejected the credentials in the proxy URL"
        else:
            what = (
                f"{answer}: give its credentials in the proxy URL (http://user:password@host:port)"
            )
    return ProxyError(f"proxy {proxy.address} {what} (calling {request.endpoint})", request=request)
