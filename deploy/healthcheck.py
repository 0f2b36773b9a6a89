#!/usr/bin/env python3
"""Container health check of the bookstore image: exit 0 when the service answers healthy.

    bookstore-healthcheck http://127.0.0.1:8081/healthz   # 2xx from an HTTP endpoint
    bookstore-healthcheck grpc://127.0.0.1:50051          # SERVING from grpc.health.v1
    bookstore-healthcheck grpc://127.0.0.1:50051/bookstore.Recommendations

The slim Python image has no curl or grpc_health_probe, and the image
already holds Python, grpcio and grpcio-health-checking: this uses them.
Kubernetes does not need it (its probes speak HTTP and gRPC themselves);
compose's ``healthcheck`` runs it inside the container.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 3.0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def grpc_serving(target: str, service: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    url = urllib.parse.urlsplit(argv[0])
    if url.scheme in ("http", "https"):
        healthy = http_ok(argv[0])
    elif url.scheme == "grpc" and url.netloc:
        healthy = grpc_serving(url.netloc, url.path.lstrip("/"))
    else:
        print(f"not an http(s):// or grpc:// URL: {argv[0]}", file=sys.stderr)
        return 2
    if not healthy:
        print(f"unhealthy: {argv[0]}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
