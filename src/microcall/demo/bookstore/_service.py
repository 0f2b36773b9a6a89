"""What every bookstore service shares: its command line, tracing set-up and chaos endpoint."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from microcall.testing.chaos import Chaos

# How long a service waits after answering ``{"kill": true}`` before it exits,
# so the answer reaches the caller.
KILL_DELAY = 0.05


def arguments(
    description: str,
    default_port: int,
    argv: Sequence[str] | None = None,
    *,
    metrics_port: int | None = None,
) -> argparse.Namespace:
    """``--host`` / ``--port`` (and ``--metrics-port``), defaulting to HOST / PORT / METRICS_PORT."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", default_port)))
    if metrics_port is not None:
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=int(os.environ.get("METRICS_PORT", metrics_port)),
            help="HTTP port of /metrics, /healthz and /chaos",
        )
    return parser.parse_args(argv)


def setup_tracing(default_name: str) -> Any:
    """An OpenTelemetry SDK provider exporting over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

    Without the endpoint nothing is exported (and nothing complains): spans
    are not recorded, and the trace context still travels. Returns the
    provider, or None.
    """
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", default_name)
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing(provider: Any) -> None:
    """Flush and stop the provider :func:`setup_tracing` made (None: nothing)."""
    if provider is not None:
        provider.shutdown()


def chaos_routes(chaos: Chaos) -> list[web.RouteDef]:
    """``GET /chaos`` and ``POST /chaos`` for an aiohttp application (the chaos protocol)."""

    async def show(request: web.Request) -> web.Response:
        return web.json_response(chaos.settings.to_json())

    async def change(request: web.Request) -> web.Response:
        try:
            data = json.loads(await request.read() or b"{}")
            settings = chaos.update(data)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        if settings.kill:
            asyncio.get_running_loop().call_later(KILL_DELAY, os._exit, 1)
        return web.json_response(settings.to_json())

    return [web.get("/chaos", show), web.post("/chaos", change)]
