"""``microcall.init()``: the one-line constructor microrequests users know."""

from __future__ import annotations

from typing import Unpack

from microcall._limits import Limits
from microcall._validate import positive_int, whole
from microcall.client import Client, ClientOptions
from microcall.policy.strategy import SINGLE, Retry, Strategy


def init(
    max_retries: int = 1,
    pool_connections: int = 100,
    pool_maxsize: int = 50,
    *,
    pool_size: int | None = None,
    base_url: str | None = None,
    **options: Unpack[ClientOptions],
) -> Client:
    """A pooled, retrying blocking Client, with microrequests' keyword arguments and defaults.

    ``mr = microcall.init(max_retries=2, pool_connections=10, pool_size=5)``
    then ``mr.get(url)``: moving over is a rename. ``max_retries`` counts
    retries after the first try (of idempotent calls only); ``pool_maxsize``
    (alias ``pool_size``) bounds connections per host and
    ``pool_connections * pool_maxsize`` the total.
    """
    per_host = pool_size if pool_size is not None else pool_maxsize
    whole("max_retries", max_retries, minimum=0, what="an int")
    positive_int("pool_connections", pool_connections, what="an int")
    positive_int("pool_maxsize", per_host, what="an int")
    strategy: Strategy = SINGLE if max_retries == 0 else Retry(attempts=max_retries + 1)
    options.setdefault("strategy", strategy)
    options.setdefault(
        "limits",
        Limits(max_connections=pool_connections * per_host, max_connections_per_host=per_host),
    )
    return Client(base_url, **options)
