"""The Marketplace: ``python -m microcall.demo.bookstore.marketplace --host H --port P``.

The web page a person opens (aiohttp with Jinja2 templates, no asset from
the internet). ``/`` shows the books recommended for a user and a category
(``?user=7&category=SCIENCE_FICTION``) with their details, and the path of
the page's calls: each service called, each attempt (first, retry, hedge),
its endpoint and timing, and the deadline each hop received. ``/api/page``
is the same as JSON. ``/dashboard`` shows each hop live, read from the
services' own ``/metrics``, with the chaos switches.

Peers come from the environment: ``CATALOG_URL``, ``RECOMMENDATIONS_TARGETS``
(``host:port,host:port`` or one name resolved for its replicas),
``RECOMMENDATIONS_ADMIN`` (the replicas' metrics URLs, for the dashboard),
``REDIS_URL`` (the Catalog cache's store; memory when unset). ``--plain``
(``MARKETPLACE_MODE=plain``) calls them without microcall's policies, for
comparison. ``PAGE_TIMEOUT`` is the deadline of a browser's request that
brings none (1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
from aiohttp import web

from microcall.demo.bookstore import books
from microcall.demo.bookstore._calls import MODES, Calls, resolve_targets
from microcall.demo.bookstore._dashboard import Dashboard, HopSpec
from microcall.demo.bookstore._service import chaos_routes, setup_tracing, shutdown_tracing
from microcall.observe.exposition import add_metrics_route
from microcall.observe.prometheus import ServerMetrics
from microcall.observe.tracing import ServerTracing
from microcall.server import ServerOptions, trust_networks
from microcall.server.aiohttp import AiohttpMiddleware
from microcall.testing.chaos import Chaos

DEFAULT_PORT = 8080
# The deadline of a page when the browser sends none: a person waits about a second.
DEFAULT_PAGE_TIMEOUT = 1.0

CALLS = web.AppKey("calls", Calls)
DASHBOARD = web.AppKey("dashboard", Dashboard)
SESSION = web.AppKey("session", aiohttp.ClientSession)
ADMIN = web.AppKey("admin", dict[str, str])

_HERE = Path(str(resources.files("microcall.demo.bookstore")))
_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True
)


def _hops(targets: list[str], catalog_url: str, replicas: list[str]) -> list[HopSpec]:
    recommendation_hosts = ",".join(sorted({t.rpartition(":")[0].strip("[]") for t in targets}))
    catalog_host = catalog_url.split("://", 1)[-1].split("/", 1)[0].rpartition(":")[0]
    specs = [
        HopSpec(
            "browser → marketplace",
            "marketplace",
            "http_server_request_duration_seconds",
            lambda tags: tags.get("http_route") in ("/", "/api/page"),
            shed=True,
        ),
        HopSpec(
            "marketplace → recommendations",
            "marketplace",
            "rpc_client_call_duration_seconds",
            attempts_server=recommendation_hosts,
        ),
        HopSpec(
            "marketplace → catalog",
            "marketplace",
            "http_client_request_duration_seconds",
            attempts_server=catalog_host,
        ),
    ]
    for index, _ in enumerate(replicas, 1):
        specs.append(
            HopSpec(
                f"recommendations #{index}",
                f"recommendations-{index}",
                "rpc_server_call_duration_seconds",
                shed=True,
            )
        )
    specs.append(
        HopSpec(
            "catalog",
            "catalog",
            "http_server_request_duration_seconds",
            lambda tags: tags.get("http_route", "").startswith("/books"),
            shed=True,
        )
    )
    return specs


async def page_view(request: web.Request) -> web.Response:
    """``/``: the books and the call path, as HTML."""
    page = await _load(request)
    html = _TEMPLATES.get_template("page.html").render(
        page=page, categories=books.CATEGORIES, mode=request.app[CALLS].mode
    )
    return web.Response(text=html, content_type="text/html", status=_status(page))


async def page_json(request: web.Request) -> web.Response:
    """``/api/page``: the same page as JSON."""
    page = await _load(request)
    return web.json_response(page.to_json(), status=_status(page))


def _status(page: Any) -> int:
    return 200 if page.error is None else 503


async def _load(request: web.Request) -> Any:
    try:
        user = int(request.query.get("user", "1"))
    except ValueError:
        user = -1
    # The id travels as a protobuf int64: refuse here what it cannot carry.
    if not 0 <= user < 2**63:
        raise web.HTTPBadRequest(text="user must be a whole number from 0 to 2**63 - 1")
    category = request.query.get("category", books.MYSTERY)
    if category not in books.CATEGORIES:
        raise web.HTTPBadRequest(text=f"category must be one of {', '.join(books.CATEGORIES)}")
    return await request.app[CALLS].page(user, category)


async def dashboard_view(request: web.Request) -> web.Response:
    """``/dashboard``: the live figures and the chaos switches."""
    services = request.app[ADMIN]
    html = _TEMPLATES.get_template("dashboard.html").render(
        services=sorted(services), mode=request.app[CALLS].mode
    )
    return web.Response(text=html, content_type="text/html")


async def dashboard_data(request: web.Request) -> web.Response:
    """``/dashboard/data``: the figures since the previous poll."""
    dashboard = request.app[DASHBOARD]
    snapshot = await dashboard.poll(request.app[SESSION])
    return web.json_response(dashboard.to_json(snapshot))


async def dashboard_chaos(request: web.Request) -> web.Response:
    """``POST /dashboard/chaos`` ``{"service": name, ...settings}``: flip a service's switch."""
    try:
        data = json.loads(await request.read() or b"{}")
        service = data.pop("service")
        url = request.app[ADMIN][service]
    except (ValueError, KeyError, AttributeError):
        return web.json_response({"error": "unknown service"}, status=400)
    try:
        async with request.app[SESSION].post(
            url.rstrip("/") + "/chaos", json=data, timeout=aiohttp.ClientTimeout(total=2.0)
        ) as response:
            answer = await response.json(content_type=None)
            return web.json_response(answer, status=response.status)
    except (TimeoutError, aiohttp.ClientError, ValueError):
        # A killed service may exit before it answers.
        return web.json_response({"service": service, "unreachable": True}, status=202)


async def healthz(request: web.Request) -> web.Response:
    """``/healthz``: the process is up."""
    return web.json_response({"status": "ok", "mode": request.app[CALLS].mode})


def make_app(
    *,
    mode: str,
    catalog_url: str,
    targets: list[str],
    replica_admin: list[str],
    redis_url: str | None = None,
    page_timeout: float = DEFAULT_PAGE_TIMEOUT,
) -> web.Application:
    """The Marketplace application (its clients are made when it starts, in its loop)."""
    chaos = Chaos()
    options = ServerOptions(
        default_timeout=page_timeout,
        trust=trust_networks("127.0.0.0/8", "::1/128"),
        observers=[ServerMetrics(), ServerTracing()],
    )
    app = web.Application(middlewares=[AiohttpMiddleware(options)])
    admin = {"catalog": catalog_url}
    admin.update({f"recommendations-{i}": url for i, url in enumerate(replica_admin, 1)})
    app[ADMIN] = admin
    sources = {"marketplace": "", **{name: url + "/metrics" for name, url in admin.items()}}
    app[DASHBOARD] = Dashboard(sources, _hops(targets, catalog_url, replica_admin))

    async def clients(app: web.Application) -> AsyncIterator[None]:
        app[CALLS] = Calls(mode, catalog_url, targets, redis_url=redis_url)
        app[SESSION] = aiohttp.ClientSession()
        yield
        await app[SESSION].close()
        await app[CALLS].aclose()

    app.cleanup_ctx.append(clients)
    app.add_routes(
        [
            web.get("/", page_view),
            web.get("/api/page", page_json),
            web.get("/dashboard", dashboard_view),
            web.get("/dashboard/data", dashboard_data),
            web.post("/dashboard/chaos", dashboard_chaos),
            web.get("/healthz", healthz),
            web.static("/static", _HERE / "static"),
            *chaos_routes(chaos),
        ]
    )
    add_metrics_route(app)
    return app


async def serve(app: web.Application, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    provider = setup_tracing("marketplace")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"Marketplace on http://{host}:{port}/ (dashboard: /dashboard)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    shutdown_tracing(provider)


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and the environment, and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--plain",
        action="store_true",
        default=os.environ.get("MARKETPLACE_MODE", "resilient") == "plain",
        help="call without microcall's policies (for comparison)",
    )
    args = parser.parse_args(argv)
    targets = resolve_targets(os.environ.get("RECOMMENDATIONS_TARGETS", "127.0.0.1:50051"))
    app = make_app(
        mode=MODES[1] if args.plain else MODES[0],
        catalog_url=os.environ.get("CATALOG_URL", "http://127.0.0.1:8081"),
        targets=targets,
        replica_admin=_split(os.environ.get("RECOMMENDATIONS_ADMIN")),
        redis_url=os.environ.get("REDIS_URL") or None,
        page_timeout=float(os.environ.get("PAGE_TIMEOUT", DEFAULT_PAGE_TIMEOUT)),
    )
    asyncio.run(serve(app, args.host, args.port))


if __name__ == "__main__":
    main()
