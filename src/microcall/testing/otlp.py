"""An OTLP/HTTP trace collector stub on loopback: what services export, kept for a test to read.

::

    with OtlpCollector() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint}   # give it to the services
        ...
        spans = collector.wait_for(lambda spans: len(spans) >= 3)

Each :class:`CollectedSpan` has the trace and span ids (hex), the parent's,
the span's name and the ``service.name`` of the process that sent it. Needs
``opentelemetry-proto`` (installed with the OTLP exporter).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["CollectedSpan", "OtlpCollector"]


@dataclass(frozen=True, slots=True)
class CollectedSpan:
    """One span a service exported."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str


def _decode(body: bytes) -> list[CollectedSpan]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        service = next(
            (
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ),
            "",
        )
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                spans.append(
                    CollectedSpan(
                        span.trace_id.hex(),
                        span.span_id.hex(),
                        span.parent_span_id.hex(),
                        span.name,
                        service,
                    )
                )
    return spans


class OtlpCollector:
    """Receives ``POST /v1/traces`` (OTLP protobuf over HTTP) on 127.0.0.1 in a thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.spans: list[CollectedSpan] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path.rstrip("/") == "/v1/traces":
                    decoded = _decode(body)
                    with collector._lock:
                        collector.spans.extend(decoded)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OtlpCollector:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def trace(self, trace_id: str) -> list[CollectedSpan]:
        """The spans of one trace received so far."""
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def wait_for(
        self, check: Callable[[list[CollectedSpan]], bool], timeout: float = 10.0
    ) -> list[CollectedSpan]:
        """Wait until ``check(spans)`` holds; TimeoutError with what arrived otherwise."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if check(spans):
                return spans
            if time.monotonic() >= end:
                raise TimeoutError(f"spans received: {[(s.service, s.name) for s in spans]}")
            time.sleep(0.05)
