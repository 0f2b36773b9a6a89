"""deploy/Dockerfile, its ignore file and the image's health check.

No Docker engine runs here, so the image is not built in the tests; what
can be checked without one is: the base, the user, the install line, that
every file the Dockerfile copies exists and survives the ignore file, and
that the health check script the compose file relies on works against real
HTTP and gRPC servers.
"""

from __future__ import annotations

import asyncio
import fnmatch
import subprocess
import sys
from pathlib import Path

import grpc.aio
import pytest
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.conftest import Serve
from tests.deploy.contract import DEPLOY, DOCKERFILE, DOCKERIGNORE, EXTRAS, ROOT

HEALTHCHECK = DEPLOY / "healthcheck.py"
LINES = [
    line.strip()
    for line in DOCKERFILE.read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def instructions(keyword: str) -> list[str]:
    return [line.split(None, 1)[1] for line in LINES if line.split(None, 1)[0] == keyword]


def test_the_image_is_python_3_11_slim_and_runs_as_a_numeric_non_root_user() -> None:
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in LINES
    assert all(base.split()[0] == "${PYTHON_IMAGE}" for base in instructions("FROM"))
    (user,) = instructions("USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0


def test_the_image_installs_the_package_with_the_contract_extras() -> None:
    assert any(f'pip install ".[{EXTRAS}]"' in run for run in instructions("RUN"))


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches a path (or one of its parents) decides."""
    verdict = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        if any(
            fnmatch.fnmatch(prefix, glob)
            or (glob.startswith("**/") and fnmatch.fnmatch(prefix.split("/")[-1], glob[3:]))
            for prefix in prefixes
        ):
            verdict = not negated
    return verdict


def test_every_copied_file_exists_and_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for copy in instructions("COPY"):
        if "--from=" in copy:
            continue  # from the build stage, not the context
        words = [word for word in copy.split() if not word.startswith("--")]
        sources += words[:-1]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), f"{source} is left out of the build context"
    assert ignored(".venv", patterns)
    assert ignored(".git", patterns)
    assert ignored("src/microcall/__pycache__", patterns)


def check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_the_health_check_passes_on_2xx_and_fails_otherwise(serve: Serve) -> None:
    async def healthy(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def sick(request: web.Request) -> web.Response:
        return web.json_response({"ok": False}, status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthy)
    app.router.add_get("/sick", sick)
    base = await serve(app)
    assert (await asyncio.to_thread(check, f"{base}/healthz")).returncode == 0
    assert (await asyncio.to_thread(check, f"{base}/sick")).returncode == 1
    assert (await asyncio.to_thread(check, "http://127.0.0.1:9/healthz")).returncode == 1
    assert (await asyncio.to_thread(check, "ftp://127.0.0.1/")).returncode == 2


@pytest.fixture
async def grpc_health() -> tuple[int, health.aio.HealthServicer]:
    server = grpc.aio.server()
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    await checks.set("bookstore.Recommendations", health_pb2.HealthCheckResponse.NOT_SERVING)
    yield port, checks
    await server.stop(None)


async def test_the_health_check_asks_the_grpc_health_service(
    grpc_health: tuple[int, health.aio.HealthServicer],
) -> None:
    port, _ = grpc_health
    assert (await asyncio.to_thread(check, f"grpc://127.0.0.1:{port}")).returncode == 0
    assert (
        await asyncio.to_thread(check, f"grpc://127.0.0.1:{port}/bookstore.Recommendations")
    ).returncode == 1
    assert (await asyncio.to_thread(check, f"grpc://127.0.0.1:{port}/unknown")).returncode == 1


def test_the_script_is_executable_for_the_image() -> None:
    assert HEALTHCHECK.stat().st_mode & 0o111
    assert HEALTHCHECK.read_text().startswith("#!/usr/bin/env python3")


def test_the_ignore_file_sits_beside_the_dockerfile() -> None:
    # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile before a root .dockerignore.
    assert DOCKERFILE.with_name(DOCKERFILE.name + ".dockerignore") == DOCKERIGNORE
    assert not Path(ROOT / ".dockerignore").exists()
