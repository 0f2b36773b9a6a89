"""Is this request something HTTP can carry? Answered before anything is sent.

A request the wire cannot carry as given must never reach a transport: a
library underneath would raise its own TypeError or UnicodeEncodeError, send
something else than was asked (yarl silently drops a lone surrogate or a
CR/LF from a URL), or send bytes a server reads differently than the client
meant (a header smuggled in through a CR/LF, two framings of one body). Each
function here looks at values, does no I/O, and either returns them in the
form the wire takes or raises a ``UsageError`` (or the error class the caller
names: a client's own headers are configuration) naming the problem.

The rules, and where they come from:

* A method and a header name are RFC 9110 tokens (section 5.6.2).
* A header value is a ``str`` of visible ASCII, spaces and tabs (RFC 9110
  section 5.5 allows other octets only as obsolete text with no charset, and
  the transports disagree on how to encode them: aiohttp writes UTF-8, httpx
  refuses). CR, LF and NUL are what a smuggled header needs; they are refused
  like every other control character. Nothing is converted: an ``int``, a
  ``float`` or ``bytes`` is refused rather than guessed at (``1.0`` or ``1``?
  which charset?).
* A body's framing is the transport's: bytes, and a file whose size is
  known, go with their ``Content-Length``; a body read from an iterator goes
  chunked unless the caller gives its ``Content-Length``. A caller's
  ``Transfer-Encoding`` would contradict that framing, and a caller's
  ``Content-Length`` must be the body's length where it is known.
* A URL is an absolute ``http``/``https`` URL with a host; a URL, a query
  parameter or a form field given as text holds no control character and no
  lone surrogate (neither can be written as UTF-8).
* Query parameters and form fields are ``str``, ``int``, ``float``, ``bool``
  or ``None`` (dropped), or a list or tuple of those.
* gRPC metadata follows grpc's own rules (see ``checked_metadata``).

Cost: a call given nothing but a URL runs none of this: its request is built
and checked once per method and URL, then reused. A call with options pays a
frozenset lookup for its method, two C string checks on its URL and, for
headers of its own, a few C-level operations whatever their number (see
``check_headers``): about 0.3-0.6 µs with three headers, on a call whose
building costs 4-6 µs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from yarl import URL

from microcall._body import Body
from microcall._redact import shown_url
from microcall.errors import ConfigurationError, MicrocallError, UsageError

# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 section 5.5, restricted to ASCII (see above): field-vchar, SP, HTAB.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
# What text given for a URL, a parameter or a form field must not hold.
_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# "scheme://" followed by an empty host (user-info aside): RFC 9110 section 4.2.1
# forbids it, and yarl would resolve it against the base URL instead.
_EMPTY_HOST = re.compile(r"[^:/?#]*://(?:[^/?#@]*@)?(?:[:/?#]|$)")
# gRPC's metadata rules (doc/PROTOCOL-HTTP2.md): Header-Name and ASCII-Value.
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_METADATA_VALUE = re.compile(r"[\x20-\x7e]*")
_METADATA_BYTES = re.compile(rb"[\x20-\x7e]*")

# Header names seen to be tokens (see check_headers). Only ever grows by names
# a program really sends; the bound keeps one that makes names per call from
# growing it for ever.
MAX_KNOWN_NAMES = 1024
_token_names: set[str] = set()

# The headers that frame a body (lower-case): the body and the transport decide them.
FRAMING_HEADERS = frozenset({"transfer-encoding", "content-length"})
_SCHEMES = frozenset({"http", "https"})

# Methods that are tokens: a request with one of them skips the method check.
COMMON_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE", "POST", "PATCH"})

QUERY_TYPES = (str, int, float)  # bool is an int


def check_method(method: str) -> None:
    """Refuse a method that is not an RFC 9110 token (an empty one included)."""
    if not isinstance(method, str) or not _TOKEN.fullmatch(method):
        raise UsageError(
            f"an HTTP method is a token (letters, digits, !#$%&'*+-.^_`|~), got {method!r}"
        )


def check_url_text(url: str) -> None:
    """Refuse a URL string with a control character or a lone surrogate.

    yarl would silently drop them (a CR/LF, a tab, a surrogate) and send
    another URL than the one given.
    """
    if "://" in url and _EMPTY_HOST.match(url):
        raise UsageError(f"URL {shown_url(url)!r} has no host")
    if url.isascii() and url.isprintable():
        return
    found = _NOT_TEXT.search(url)
    if found is not None:
        # Shown without its query or user-info, which may hold credentials.
        raise UsageError(
            f"URL {shown_url(url)!r} holds {_describe(found.group())} at position "
            f"{found.start()} of the URL as given; percent-encode it"
        )


def absolute_url(name: str, value: object) -> URL:
    """A URL a client is built with (its base URL), checked as a call's is; ConfigurationError if bad."""
    if not isinstance(value, (str, URL)):
        raise ConfigurationError(f"{name} must be a str or a yarl.URL, not {type(value).__name__}")
    if isinstance(value, str):
        try:
            check_url_text(value)
        except UsageError as error:
            raise ConfigurationError(f"{name}: {error}") from None
    try:
        url = URL(value)
        url.port  # noqa: B018 (yarl checks the port's range only when asked for it)
    except ValueError as error:
        raise ConfigurationError(f"{name} {shown_url(value)!r} is not a URL: {error}") from None
    if not url.absolute or url.scheme not in _SCHEMES or not url.raw_host:
        raise ConfigurationError(
            f"{name} must be an absolute http(s) URL with a host, got {shown_url(value)!r}"
        )
    return url


def check_call(method: str, url: object) -> None:
    """A call's method and URL, as given, before anything is built from them."""
    if method not in COMMON_METHODS:
        check_method(method)
    if isinstance(url, str):
        check_url_text(url)
    elif not isinstance(url, URL):
        raise UsageError(f"a URL is a str or a yarl.URL, not {type(url).__name__}")


def check_target(target: URL) -> None:
    """Refuse a resolved URL that is not absolute http(s) with a host."""
    if target.scheme not in _SCHEMES or not target.raw_host:
        raise UsageError(
            f"cannot send to {shown_url(target)!r}: an absolute http(s) URL with a host is needed"
        )


def check_headers(headers: Mapping[Any, Any], error: type[MicrocallError] = UsageError) -> None:
    """Refuse (with ``error``, naming the problem) a header HTTP cannot carry as given.

    This runs for every call given headers of its own, so its common case is
    four C-level operations whatever the number of headers: every name is
    one seen to be a token before (services send a small set of names), and
    all values joined are printable ASCII. Only otherwise are the headers
    looked at one by one, with the regexes.
    """
    known = _token_names
    try:
        joined = "".join(headers.values())
    except TypeError:  # a value that is not a str: found below
        pass
    else:
        if known.issuperset(headers) and joined.isascii() and joined.isprintable():
            return
    for name, value in headers.items():
        if name not in known:
            if not isinstance(name, str):
                raise error(f"a header name is a str, got {type(name).__name__} {name!r}")
            if not _TOKEN.fullmatch(name):
                raise error(
                    f"header name {name!r} is not a token "
                    "(letters, digits, !#$%&'*+-.^_`|~; RFC 9110 5.6.2)"
                )
            if len(known) >= MAX_KNOWN_NAMES:
                known.clear()
            known.add(name)
        if not (
            isinstance(value, str)
            and ((value.isascii() and value.isprintable()) or _FIELD_VALUE.fullmatch(value))
        ):
            _refuse_value(name, value, error)


def _refuse_value(name: str, value: Any, error: type[MicrocallError]) -> None:
    if not isinstance(value, str):
        # The value itself is never repeated: it may be a credential (Authorization, a token).
        raise error(
            f"header {name}: a header value is a str, got {type(value).__name__}"
            " (convert it yourself: microcall does not guess a number's or bytes' form)"
        )
    bad = next(char for char in value if not _FIELD_VALUE.fullmatch(char))
    raise error(
        f"header {name}: its value holds {_describe(bad)}; header values are visible "
        "ASCII, spaces and tabs (RFC 9110 5.5; percent- or base64-encode other text)"
    )


def check_framing(name: str, value: str, body: bytes | Body | None) -> int | None:
    """Refuse a call's Transfer-Encoding, or a Content-Length that is not its body's length.

    ``name`` is one of FRAMING_HEADERS, lower-case. A streamed body of unknown
    length takes the caller's Content-Length: it is returned, to become the
    body's (None otherwise).
    """
    if name == "transfer-encoding":
        raise UsageError(
            f"Transfer-Encoding: {value} contradicts how the body is sent: microcall frames "
            "every body itself (Content-Length when its length is known, chunked otherwise); "
            "leave the header out"
        )
    if not (value.isascii() and value.isdigit()):
        raise UsageError(f"Content-Length: {value} is not a length in bytes")
    declared = int(value)
    if isinstance(body, Body):
        if body.length is None:
            return declared
        length = body.length
    else:
        length = len(body) if body is not None else 0
    if declared != length:
        raise UsageError(
            f"Content-Length: {value} contradicts the body's {length} bytes; "
            "leave the header out, it is computed"
        )
    return None


def refuse_client_framing(name: str, error: type[MicrocallError]) -> None:
    """A client's own headers cannot frame a body: no one value fits every call's."""
    raise error(f"{name} cannot be a client-wide header: it frames one body, and is computed")


def check_query_name(name: Any, what: str) -> None:
    """Refuse a query parameter's or form field's name that is not UTF-8 text.

    ``what`` names the option (``params`` or ``data``) in the error.
    """
    if not isinstance(name, str):
        raise UsageError(f"{what} names are str, got {type(name).__name__} {name!r}")
    if not name.isascii() and _SURROGATE.search(name):
        raise UsageError(f"{what} name {name!r} holds a lone surrogate, which UTF-8 cannot carry")


def query_text(name: str, value: Any, what: str) -> str | None:
    """The text of one query parameter's or form field's value (None: leave the field out)."""
    if value is None:  # as in requests: a None value drops the field
        return None
    if isinstance(value, str):
        if not value.isascii() and _SURROGATE.search(value):
            raise UsageError(
                f"{what}[{name!r}] = {value!r} holds a lone surrogate, which UTF-8 cannot carry"
            )
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, QUERY_TYPES):
        return str(value)
    raise UsageError(
        f"{what}[{name!r}] is a {type(value).__name__}; values are str, int, float, bool or "
        "None, or a list of those"
    )


def check_part_text(text: object, what: str) -> None:
    """Refuse a multipart name or filename that is not text a part's header can carry."""
    if not isinstance(text, str):
        raise UsageError(f"a {what} is a str, got {type(text).__name__} {text!r}")
    found = _NOT_TEXT.search(text)
    if found is not None:
        raise UsageError(f"{what} {text!r} holds {_describe(found.group())}")


def check_body_text(text: str, what: str) -> bytes:
    """``text`` as UTF-8; a UsageError naming ``what`` if it holds a lone surrogate."""
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"{what} holds a lone surrogate at position {exc.start}, which UTF-8 cannot carry"
        ) from None


def checked_metadata(given: Any) -> tuple[tuple[str, str | bytes], ...]:
    """gRPC metadata as ``(key, value)`` pairs if gRPC can carry it; a UsageError naming the problem.

    The rules are grpc's own (its HTTP/2 protocol spec, which grpc checks as
    the call starts and then reports as an INTERNAL status, or as a bare
    TypeError or UnicodeEncodeError): a key is lower-case ``0-9a-z_.-``; a
    ``-bin`` key's value is bytes; any other value is printable ASCII, as
    ``str`` or ``bytes``.
    """
    if isinstance(given, (str, bytes, Mapping)) or not isinstance(given, Iterable):
        raise UsageError(
            f"metadata is a sequence of (key, value) pairs, got {type(given).__name__}"
        )
    pairs = tuple(given)
    for pair in pairs:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UsageError(f"metadata holds (key, value) pairs, got {pair!r}")
        key, value = pair
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise UsageError(
                f"metadata key {key!r} is not lower-case letters, digits and _.- (gRPC's rule)"
            )
        if key.endswith("-bin"):
            if not isinstance(value, bytes):
                raise UsageError(f"metadata {key}: a -bin key's value is bytes, got {value!r}")
        elif not (
            _METADATA_VALUE.fullmatch(value)
            if isinstance(value, str)
            else isinstance(value, bytes) and _METADATA_BYTES.fullmatch(value)
        ):
            raise UsageError(
                f"metadata {key}: a value is printable ASCII (str or bytes; binary values go "
                f"under a key ending in -bin), got {value!r}"
            )
    return pairs


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate ({char!r})"
    if char.isascii():
        return f"a control character ({char!r})"
    return f"a non-ASCII character ({char!r})"
