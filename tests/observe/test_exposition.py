"""/metrics for aiohttp, ASGI and WSGI applications, on real servers at 127.0.0.1."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from fastapi import FastAPI
from flask import Flask
from prometheus_client import CollectorRegistry, Counter
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from microcall.observe.exposition import add_metrics_route, metrics_asgi_app, metrics_wsgi_app
from tests.conftest import Serve
from tests.server.conftest import ServeASGI, ServeWSGI

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def counted(registry: CollectorRegistry) -> None:
    Counter("books_sold", "Books sold.", registry=registry).inc(3)
    Counter("books_returned", "Books returned.", registry=registry).inc()


async def fetch(url: str, accept: str = "") -> tuple[str, str]:
    headers = {"Accept": accept} if accept else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        assert r.status == 200
        return r.headers["Content-Type"], await r.text()


async def test_aiohttp_serves_the_registry_it_is_given(
    serve: Serve, registry: CollectorRegistry
) -> None:
    counted(registry)
    app = web.Application()
    add_metrics_route(app, registry=registry)
    base = await serve(app)

    content_type, text = await fetch(f"{base}/metrics")
    assert content_type.startswith("text/plain")
    assert "books_sold_total 3.0" in text
    assert "python_gc" not in text  # the global registry is not this one
    content_type, text = await fetch(f"{base}/metrics", accept=OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")
    _, text = await fetch(f"{base}/metrics?name[]=books_returned_total")
    assert "books_returned_total 1.0" in text
    assert "books_sold" not in text


async def test_asgi_and_wsgi_apps_serve_it_too(
    serve_asgi: ServeASGI, serve_wsgi: ServeWSGI, registry: CollectorRegistry
) -> None:
    counted(registry)
    api = FastAPI()
    api.mount("/metrics", metrics_asgi_app(registry))
    flask = Flask(__name__)
    flask.wsgi_app = DispatcherMiddleware(  # type: ignore[method-assign]
        flask.wsgi_app, {"/metrics": metrics_wsgi_app(registry)}
    )
    for url in (f"{await serve_asgi(api)}/metrics/", f"{serve_wsgi(flask)}/metrics"):
        content_type, text = await fetch(url)
        assert content_type.startswith("text/plain")
        assert "books_sold_total 3.0" in text
