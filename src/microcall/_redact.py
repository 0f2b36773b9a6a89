"""What observability may say about a URL: never its user-info or its query string.

Credentials travel in user-info (``http://user:secret@host/``), in query
strings (``?api_key=...``) and in headers. Spans, metrics and log lines get
the scheme, host, port and path at most; header values are never recorded at
all, so there is no header list to keep up to date.

It is the core's, not ``observe``'s: the endpoint records' log lines
(``_group``) need it as much as metrics and spans do.
"""

from __future__ import annotations

from collections.abc import Mapping

from yarl import URL

# A path is kept on spans for debugging, but not without bound: a hostile
# client can send kilobytes of it.
MAX_PATH = 256


def safe_url(url: URL) -> str:
    """``scheme://host:port/path``: no user-info, query or fragment."""
    path = url.raw_path
    if len(path) > MAX_PATH:
        path = path[:MAX_PATH]
    host = url.raw_host or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"{url.scheme}://{host}:{url.port}{path}"


def shown_url(url: str | URL) -> str:
    """A URL as an error message may show it, however malformed: no user-info, query or fragment.

    Cut as browsers and ``urllib.parse`` cut, without parsing (the URL may be
    the one that failed to parse): the authority ends at the first ``/``,
    ``?`` or ``#``, and its user-info at its last ``@``.
    """
    text = str(url)
    cut = len(text)
    for mark in "?#":
        at = text.find(mark)
        if at != -1:
            cut = min(cut, at)
    shown = without_user_info(text[:cut])
    scheme, separator, rest = shown.partition("://")
    if not separator:
        return shown[:MAX_PATH]
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority}{slash}{path[:MAX_PATH]}"


# Header names whose values are credentials, and words that make one.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_WORDS = ("token", "secret", "password", "api-key", "apikey", "session")


def shown_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` as a person may be shown them: a credential's value hidden, its scheme kept.

    ``Authorization: Bearer abc`` shows as ``Bearer <hidden>``; a cookie, an
    API key or a token (by its header's name) as ``<hidden>``.
    """
    shown = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _SECRET_HEADERS or any(word in lowered for word in _SECRET_WORDS):
            scheme, _, rest = value.partition(" ")
            value = (
                f"{scheme} <hidden>" if rest and lowered.endswith("authorization") else "<hidden>"
            )
        shown[name] = value
    return shown


def without_user_info(url: str) -> str:
    """``url`` without the user-info a person typed in it (its query is theirs to see)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    # The authority ends at the first "/", "?" or "#", its user-info at its last "@".
    end = min((at for at in map(rest.find, "/?#") if at != -1), default=len(rest))
    return f"{scheme}://{rest[:end].rpartition('@')[2]}{rest[end:]}"


def safe_path(path: str) -> str:
    """A request path without its query string, at most MAX_PATH characters."""
    path = path.partition("?")[0]
    return path if len(path) <= MAX_PATH else path[:MAX_PATH]


def host_port(address: str) -> tuple[str, str]:
    """``("host", "port")`` from an endpoint as microcall names it: a base URL or ``host:port``.

    Whatever the form, user-info, path and query are dropped.
    """
    if "://" in address:
        parsed = URL(address)
        return parsed.host or "", "" if parsed.port is None else str(parsed.port)
    host, _, port = address.rpartition(":")
    if not host:  # no port at all
        return port, ""
    return host.strip("[]"), port


def safe_endpoint(address: str) -> str:
    """An endpoint as ``host:port`` for a log line: never user-info, path or query."""
    host, port = host_port(address)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port else host
