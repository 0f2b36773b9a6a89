"""Fixtures for the cache tests: real redis-server and memcached processes on 127.0.0.1.

Each server is started here, on a free port (found by binding port 0 and
releasing it: redis has no port 0 of its own), with no persistence, and
stopped at the end. A test is skipped, not failed, only when the server's
binary is not installed (``make test`` installs both).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

# A server process starts in milliseconds; this bounds a loaded machine.
START_TIMEOUT = 15.0


@dataclass
class ServerProcess:
    """A server started for the tests: ``port``, ``stop()``, ``start()`` again on the same port."""

    command: list[str]
    port: int
    greeting: bytes
    answer: bytes
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        give_up = time.monotonic() + START_TIMEOUT
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command[0]} exited at start: {self.command}")
            if _answers(self.port, self.greeting, self.answer):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.command[0]} did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is None:
            return
        process, self.process = self.process, None
        process.terminate()
        try:
            process.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _answers(port: int, greeting: bytes, answer: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as connection:
            connection.sendall(greeting)
            return connection.recv(64).startswith(answer)
    except OSError:
        return False


def redis_process() -> ServerProcess:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    command = [
        binary,
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--loglevel", "warning",
    ]  # fmt: skip
    return ServerProcess(command, port, b"PING\r\n", b"+PONG")


def memcached_process(*extra: str) -> ServerProcess:
    """A memcached on a free port; ``extra``: more of its options (``-I 512k``)."""
    binary = shutil.which("memcached")
    if binary is None:
        pytest.skip("memcached is not installed")
    port = free_port()
    command = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64", *extra]
    if os.geteuid() == 0:  # memcached refuses to run as root unless told whom to run as
        command += ["-u", pwd.getpwuid(0).pw_name]
    return ServerProcess(command, port, b"version\r\n", b"VERSION")


def _started(make: Callable[[], ServerProcess]) -> ServerProcess:
    # A free port can be taken between probing and binding; try a few.
    for attempt in range(3):
        server = make()
        try:
            server.start()
        except RuntimeError:
            if attempt == 2:
                raise
            continue
        return server
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    """One redis-server for the session (tests keep apart by namespace)."""
    server = _started(redis_process)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[ServerProcess]:
    """One memcached for the session (tests keep apart by namespace)."""
    server = _started(memcached_process)
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[ServerProcess]:
    """A redis-server of this test's own, which the test may stop and start again."""
    server = _started(redis_process)
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    """A key namespace no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"
