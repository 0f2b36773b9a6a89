"""Start a graph of services as real processes on loopback, fault them, and read each hop's view.

The harness the bookstore's tests use, for testing your own service graphs
the same way::

    with ServiceGraph(tmp_path) as graph:
        catalog = graph.start(
            "catalog",
            [sys.executable, "-m", "myshop.catalog", "--port", "{port}"],
            health="/healthz",
        )
        shop = graph.start(
            "shop",
            [sys.executable, "-m", "myshop.web", "--port", "{port}"],
            env={"CATALOG_URL": catalog.url},
            health="/healthz",
        )
        inject(catalog.url, latency=0.2)          # the catalog's chaos switch
        ...                                       # drive the shop, assert on what it answers

* every ``{port}`` (and ``{metrics_port}``) in the command line is a free
  port on 127.0.0.1, chosen before the process starts;
* ``health`` is an HTTP path (or a callable) polled until it answers 200,
  so a test starts only when the service is ready;
* the process's output goes to ``<directory>/<name>.log``, printed in the
  error when it dies before it is healthy;
* :func:`inject` speaks the chaos protocol below to any service that serves
  it; :func:`seen_deadline` reads the deadline a hop says it received.

**The chaos protocol.** A service that supports fault injection serves
``POST /chaos`` with a JSON object: ``latency`` (seconds added to each
request), ``error_rate`` (0 to 1: the share of requests answered with an
error), ``route`` (a path prefix or gRPC method the faults apply to; all
requests when absent) and ``kill`` (true: the process exits). ``GET /chaos``
answers the current settings, and ``{}`` clears them.
:class:`microcall.testing.chaos.Chaos` implements it.

**Each hop's view.** A service echoes the deadline it received in a
response header (``X-Seen-Deadline``, seconds) or, over gRPC, in trailing
metadata (``x-seen-deadline``), so a test can check that the deadline
shrinks hop by hop.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "SEEN_DEADLINE_HEADER",
    "SEEN_DEADLINE_METADATA",
    "ServiceGraph",
    "ServiceProcess",
    "ServiceStartError",
    "free_port",
    "http_get",
    "inject",
    "python_module",
    "seen_deadline",
    "wait_until",
]

SEEN_DEADLINE_HEADER = "X-Seen-Deadline"
SEEN_DEADLINE_METADATA = "x-seen-deadline"

# Long enough for a gunicorn master and its workers to import Flask on a
# loaded two-core machine; a healthy start takes well under a second.
DEFAULT_START_TIMEOUT = 30.0


class ServiceStartError(RuntimeError):
    """A service exited, or did not become healthy in time; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """GET ``url`` with the standard library: ``(status, body)``; a refused connection raises OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _http_post_json(url: str, payload: Mapping[str, Any], timeout: float) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def wait_until(
    check: Callable[[], bool], timeout: float, *, every: float = 0.05, what: str = "condition"
) -> None:
    """Poll ``check`` until it returns True; TimeoutError after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if time.monotonic() >= end:
            raise TimeoutError(f"{what} not reached in {timeout:.1f} s")
        time.sleep(every)


def inject(
    admin_url: str,
    *,
    latency: float = 0.0,
    error_rate: float = 0.0,
    route: str | None = None,
    kill: bool = False,
    timeout: float = 2.0,
) -> Any:
    """Set a service's faults through its chaos endpoint (``POST <admin_url>/chaos``).

    ``inject(url)`` with no fault clears them. Returns the settings the
    service answered (None when it was told to exit).
    """
    payload: dict[str, Any] = {"latency": latency, "error_rate": error_rate}
    if route is not None:
        payload["route"] = route
    if kill:
        payload["kill"] = True
    try:
        return _http_post_json(admin_url.rstrip("/") + "/chaos", payload, timeout)
    except (ConnectionError, urllib.error.URLError):
        if kill:  # it may exit before its answer is read
            return None
        raise


def seen_deadline(headers: Mapping[str, str]) -> float | None:
    """The deadline a hop echoed (``X-Seen-Deadline`` / ``x-seen-deadline``), in seconds, or None."""
    for name in (SEEN_DEADLINE_HEADER, SEEN_DEADLINE_METADATA):
        value = headers.get(name)
        if value is not None:
            with contextlib.suppress(ValueError):
                return float(value)
    return None


HealthCheck = Callable[["ServiceProcess"], bool]


@dataclass(slots=True)
class ServiceProcess:
    """One service started by a :class:`ServiceGraph`: its process, ports and log."""

    name: str
    argv: list[str]
    port: int
    host: str
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` of the service's main port."""
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port`` of the service's main port (a gRPC target)."""
        return f"{self.host}:{self.port}"

    def url_of(self, port_name: str) -> str:
        """``http://host:port`` of another port the graph chose (``"metrics_port"``)."""
        return f"http://{self.host}:{self.ports[port_name]}"

    @property
    def pid(self) -> int:
        """The process id (the process may have exited)."""
        assert self.process is not None, "not started"
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What the process printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; waits for the exit."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL at once (a crash) to the process and its children, and wait for the exit."""
        if self.process is None or self.process.poll() is not None:
            return
        # Its own session (see spawn): the group holds the workers it forked (gunicorn's).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()


def _http_health(path: str) -> HealthCheck:
    def check(service: ServiceProcess) -> bool:
        status, _ = http_get(service.url + path, timeout=1.0)
        return status == 200

    return check


class ServiceGraph:
    """Services started as processes on 127.0.0.1, stopped together (a context manager).

    ``directory`` holds the logs. ``env`` is added to every service's
    environment (on top of this process's).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.env = dict(env or {})
        self.services: dict[str, ServiceProcess] = {}

    def __enter__(self) -> ServiceGraph:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        port_names: Sequence[str] = ("metrics_port",),
    ) -> ServiceProcess:
        """Start ``argv`` without waiting: ``{port}`` and each ``{<port_name>}`` become free ports."""
        if name in self.services and self.services[name].alive():
            raise ValueError(f"a service named {name!r} is already running")
        ports = {"port": free_port(self.host)}
        ports.update({extra: free_port(self.host) for extra in port_names})
        values: dict[str, object] = {**ports, "host": self.host}
        command = [part.format(**values) for part in argv]
        log_path = self.directory / f"{name}.log"
        service = ServiceProcess(name, command, ports["port"], self.host, log_path, ports)
        environment = {**os.environ, **self.env, **(env or {})}
        environment.setdefault("PYTHONUNBUFFERED", "1")
        with log_path.open("ab") as log:
            service.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the test, not them
            )
        self.services[name] = service
        return service

    def wait_healthy(
        self,
        service: ServiceProcess,
        health: str | HealthCheck,
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> ServiceProcess:
        """Poll ``health`` until it passes; ServiceStartError if the process dies or time runs out."""
        check = _http_health(health) if isinstance(health, str) else health
        end = time.monotonic() + timeout
        while True:
            if not service.alive():
                raise ServiceStartError(
                    f"{service.name} exited with {service.process and service.process.returncode}"
                    f" before it was healthy:\n{service.log()[-4000:]}"
                )
            with contextlib.suppress(Exception):
                if check(service):
                    return service
            if time.monotonic() >= end:
                raise ServiceStartError(
                    f"{service.name} not healthy in {timeout:.0f} s:\n{service.log()[-4000:]}"
                )
            time.sleep(0.05)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        health: str | HealthCheck | None = None,
        env: Mapping[str, str] | None = None,
        port_names: Sequence[str] = ("metrics_port",),
        timeout: float = DEFAULT_START_TIMEOUT,
    ) -> ServiceProcess:
        """:meth:`spawn`, then :meth:`wait_healthy` when ``health`` is given."""
        service = self.spawn(name, argv, env=env, port_names=port_names)
        if health is not None:
            try:
                self.wait_healthy(service, health, timeout)
            except BaseException:
                service.kill()
                raise
        return service

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every service: SIGTERM to all at once, then wait (SIGKILL after ``timeout``)."""
        running = [service for service in self.services.values() if service.alive()]
        for service in running:
            with contextlib.suppress(ProcessLookupError):
                assert service.process is not None
                service.process.send_signal(signal.SIGTERM)
        for service in running:
            service.stop(timeout)


def python_module(module: str, *arguments: str) -> list[str]:
    """``[sys.executable, "-m", module, *arguments]``: a command line for :meth:`ServiceGraph.start`."""
    return [sys.executable, "-m", module, *arguments]
