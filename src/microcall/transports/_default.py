"""Which transport a client uses when it is given none: microcall's own where httptools is installed."""

from __future__ import annotations

import importlib.util
import ssl

from yarl import URL

from microcall._limits import Limits
from microcall.transports._base import Transport


def default_transport(
    *,
    limits: Limits | None,
    verify: bool | ssl.SSLContext,
    follow_redirects: bool,
    proxy: str | URL | None = None,
    trust_env: bool = False,
) -> Transport:
    """``H1Transport`` when httptools can be imported, else ``AiohttpTransport``.

    httptools is a compiled extension: an interpreter it has no build for
    (PyPy, say) installs microcall without it and keeps the aiohttp transport.
    Proxied calls (``proxy``, ``trust_env``) go through the same transport:
    both speak to forward proxies themselves (docs/proxies.md).
    """
    if importlib.util.find_spec("httptools") is not None:
        from microcall.transports.h1 import H1Transport

        return H1Transport(
            limits=limits,
            verify=verify,
            follow_redirects=follow_redirects,
            proxy=proxy,
            trust_env=trust_env,
        )
    from microcall.transports.aiohttp import AiohttpTransport

    return AiohttpTransport(
        limits=limits,
        verify=verify,
        follow_redirects=follow_redirects,
        proxy=proxy,
        trust_env=trust_env,
    )
