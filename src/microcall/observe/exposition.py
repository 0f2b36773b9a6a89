"""``/metrics`` for aiohttp, ASGI and WSGI applications: one registry, scraped by Prometheus.

::

    from microcall.observe.exposition import add_metrics_route, metrics_asgi_app, metrics_wsgi_app

    add_metrics_route(aiohttp_app)                         # aiohttp: GET /metrics
    fastapi_app.mount("/metrics", metrics_asgi_app())      # FastAPI / Starlette
    flask_app.wsgi_app = DispatcherMiddleware(             # Flask, with werkzeug's dispatcher
        flask_app.wsgi_app, {"/metrics": metrics_wsgi_app()})

Each serves the registry it is given (the global one by default) in the
format the scraper asks for (Prometheus text or OpenMetrics), gzipped when
accepted, and honours ``?name[]=...`` to serve only some families. The ASGI
and WSGI apps are prometheus-client's own.

Several worker processes (gunicorn, uWSGI ``--processes``): set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the workers start.
Then every family (microcall's and any prometheus-client metric) keeps its
values in that directory's files, and these endpoints, given no registry,
serve what ``MultiProcessCollector`` adds up over all the workers, whichever
worker the scrape reaches.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app, make_wsgi_app
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from microcall.observe._series import multiprocess_mode

__all__ = [
    "add_metrics_route",
    "metrics_asgi_app",
    "metrics_handler",
    "metrics_wsgi_app",
]

MetricsHandler = Callable[[web.Request], Awaitable[web.Response]]


def _served_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """What an endpoint given ``registry`` serves: it, or else every worker's metrics, or the global.

    In multiprocess mode the global registry would show one worker's share;
    a registry holding only a ``MultiProcessCollector`` shows the sum (as
    prometheus-client's documentation sets it up).
    """
    if registry is not None:
        return registry
    if multiprocess_mode():
        combined = CollectorRegistry()
        MultiProcessCollector(combined)  # type: ignore[no-untyped-call]  # unannotated upstream
        return combined
    return REGISTRY


def metrics_handler(registry: CollectorRegistry | None = None) -> MetricsHandler:
    """An aiohttp handler serving ``registry``: ``app.router.add_get("/metrics", handler)``."""
    chosen = _served_registry(registry)

    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        names = request.query.getall("name[]", [])
        source = chosen.restricted_registry(names) if names else chosen
        response = web.Response(body=encoder(source), headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    return metrics


def add_metrics_route(
    app: web.Application, path: str = "/metrics", registry: CollectorRegistry | None = None
) -> None:
    """Serve ``registry`` at ``GET path`` of an aiohttp application."""
    app.router.add_get(path, metrics_handler(registry))


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """An ASGI application serving ``registry`` (mount it at ``/metrics``)."""
    return make_asgi_app(_served_registry(registry))


def metrics_wsgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """A WSGI application serving ``registry`` (dispatch ``/metrics`` to it)."""
    return make_wsgi_app(_served_registry(registry))
