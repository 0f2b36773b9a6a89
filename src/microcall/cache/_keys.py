"""Cache keys: a digest of method and URL (query included), and of the Vary'd header values.

A response whose Vary names headers is stored twice: under the URL's key
(the latest variant, found with one read) and under a variant key derived
from the URL's key, the generation ``nonce`` and the request's values for
those headers (found with a second read when the latest variant is not the
one asked for). Deleting the URL's key (an invalidation) starts a new
generation, so older variants can no longer be reached.

Keys are ``namespace:hex``: short, ASCII and free of spaces, as memcached
requires, and they never show a URL, a query or a credential in the store.
A private cache (``CachePolicy(shared=False)``) keys by the request's
Authorization and Cookie too, so one caller's entries never answer another.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from microcall.errors import ConfigurationError

_NAMESPACE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_namespace(namespace: str) -> str:
    """``namespace`` if it can prefix keys in every backend; ConfigurationError otherwise."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ConfigurationError(
            f"namespace must be 1-64 letters, digits, '.', '_' or '-', got {namespace!r}"
        )
    return namespace


def url_key(namespace: str, method: str, url: str, identity: str = "") -> str:
    """The key of the latest stored answer to ``method url`` (for this identity)."""
    text = f"{method} {url}\n{identity}" if identity else f"{method} {url}"
    return f"{namespace}:{digest(text)}"


def variant_key(url_key: str, nonce: str, vary: tuple[tuple[str, str | None], ...]) -> str:
    """The key of one variant: the URL's key, its generation, and the request's Vary'd values."""
    parts = [url_key, nonce]
    for name, value in vary:
        # repr() keeps a value's own newlines from mimicking the next part.
        parts.append(name if value is None else f"{name}={value!r}")
    namespace = url_key.partition(":")[0]
    return f"{namespace}:{digest(chr(10).join(parts))}"


def new_nonce() -> str:
    return secrets.token_hex(6)


def digest(text: str) -> str:
    """A short, collision-resistant digest of ``text`` (hex)."""
    # BLAKE2b: faster than SHA-256 in CPython and as collision resistant at this size.
    data = text.encode("utf-8", "surrogateescape")
    return hashlib.blake2b(data, digest_size=20).hexdigest()
