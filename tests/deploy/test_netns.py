"""The namespace harness works: plain aiohttp and grpc.aio servers, each in its own namespace.

A front service in one namespace calls an HTTP backend and a gRPC backend in
two others, with microcall's AsyncClient and AsyncChannel, under the
deadline the test sends it from the root namespace. Each hop sees its
caller's own address (not 127.0.0.1) and a deadline smaller than the hop
before it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import microcall
from tests.deploy.netns import NETNS_ETC, Namespace, Network, ip, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
HTTP_PORT = 8080
GRPC_PORT = 50051

pytestmark = pytest.mark.timeout(90)


def start(namespace: Namespace, role: str, port: int, tmp: Path, *extra: str) -> None:
    argv = [sys.executable, "-m", "tests.deploy._servers", role]
    argv += ["--host", namespace.address, "--port", str(port), *extra]
    namespace.popen(argv, log=tmp / f"{namespace.label}.log", cwd=ROOT)


async def ready(namespace: Namespace, port: int) -> None:
    await asyncio.to_thread(
        wait_for_port, namespace.address, port, timeout=30.0, process=namespace.processes[-1]
    )


async def test_a_call_crosses_namespaces_with_its_deadline(
    network: Network, tmp_path: Path
) -> None:
    backend, recommender, front = network.add("http"), network.add("grpc"), network.add("front")
    # The front finds its HTTP backend by name, as a container finds a service.
    front.resolve({"backend": [backend.address]})
    # The same port in every namespace: each has a port space of its own.
    start(backend, "http", HTTP_PORT, tmp_path)
    start(recommender, "grpc", GRPC_PORT, tmp_path)
    start(
        front,
        "front",
        HTTP_PORT,
        tmp_path,
        "--backend-url",
        f"http://backend:{HTTP_PORT}",
        "--grpc-target",
        f"{recommender.address}:{GRPC_PORT}",
    )
    for namespace, port in ((backend, HTTP_PORT), (recommender, GRPC_PORT), (front, HTTP_PORT)):
        await ready(namespace, port)

    sent = 20.0
    async with microcall.AsyncClient(f"http://{front.address}:{HTTP_PORT}") as client:
        with microcall.deadline(sent):
            response = await client.get("/page")
    assert response.status_code == 200, network.output()
    page = response.json()

    # Each hop sees the address of the namespace that called it.
    assert page["peer"] == network.gateway
    assert page["http"]["peer"] == front.address
    assert page["grpc"]["peer"].startswith(f"ipv4:{front.address}:")
    # The deadline shrinks hop by hop; it never grows back.
    assert 0 < page["remaining"] < sent
    assert 0 < page["http"]["remaining"] < page["remaining"]
    # grpc-timeout is written by grpc itself, rounded up to its unit: 100 ms
    # between 10 and 100 seconds (grpc core's timeout encoding).
    assert 0 < page["grpc"]["remaining"] < min(page["remaining"] + 0.1, sent)


def test_a_name_resolves_to_every_replica_inside_its_namespace(network: Network) -> None:
    """The stand-in for a headless Service's DNS: one name, one address per replica."""
    replicas = [network.add("replica1"), network.add("replica2")]
    caller = network.add("caller")
    caller.resolve({"recommendations": [replica.address for replica in replicas]})
    lookup = (
        "import socket\n"
        "infos = socket.getaddrinfo('recommendations', 50051, type=socket.SOCK_STREAM)\n"
        "print(' '.join(sorted({info[4][0] for info in infos})))\n"
    )
    done = caller.run([sys.executable, "-c", lookup])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == sorted(replica.address for replica in replicas)


def test_a_namespace_cannot_reach_the_root_loopback(network: Network) -> None:
    """A service that assumed its peers on localhost would fail here, as on separate hosts."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        inside = network.add("alone")
        probe = (
            "import socket, sys\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
            "except OSError:\n"
            "    sys.exit(3)\n"
        )
        done = inside.run([sys.executable, "-c", probe])
    assert done.returncode == 3, done.stderr


def test_close_removes_namespaces_and_links_even_after_a_failure(tmp_path: Path) -> None:
    from tests.deploy.conftest import _reason

    if (reason := _reason()) is not None:
        pytest.skip(f"no network namespaces: {reason}")
    with pytest.raises(RuntimeError, match="the test failed"), Network() as network:  # noqa: PT012
        namespace = network.add("doomed")
        namespace.resolve({"somewhere": ["198.18.255.254"]})
        namespace.popen([sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "x")
        bridge, name = network.bridge, namespace.name
        raise RuntimeError("the test failed")
    assert name not in ip("netns", "list")
    assert not (NETNS_ETC / name).exists()
    assert bridge not in ip("-o", "link", "show")
    assert all(process.poll() is not None for process in namespace.processes)
    assert subprocess.run(["true"], check=False).returncode == 0
