"""nginx serving a fixed small 200 on loopback: a server fast enough never to be the bottleneck.

nginx runs as a plain child process (no daemon, no master, one worker) from a
configuration generated into a temporary directory, so a benchmark needs no
root and touches nothing outside that directory.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import BenchEnv

NGINX_CANDIDATES = ("/usr/sbin/nginx", "nginx")
BODY = "ok\n"

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Every measured connection stays open for the whole run.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
    }}
}}
"""


def nginx_binary() -> str:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        "nginx is not installed; `make bench` installs it (scripts/ensure-system-packages.sh)"
    )


def nginx_version() -> str:
    done = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=False)
    return (
        (done.stderr or done.stdout).strip().removeprefix("nginx version: ").removeprefix("nginx/")
    )


@contextlib.contextmanager
def serve_ok(env: BenchEnv) -> Iterator[str]:
    """Run nginx pinned to the server cores; yield its base URL (``http://127.0.0.1:port/``)."""
    with tempfile.TemporaryDirectory(prefix="microcall-bench-nginx-") as directory:
        port = _free_port()
        config = Path(directory) / "nginx.conf"
        config.write_text(_CONFIG.format(dir=directory, port=port))
        process = subprocess.Popen(
            [nginx_binary(), "-p", directory, "-e", f"{directory}/error.log", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # errors go to the log file named above
        )
        try:
            env.pin_server(process.pid)
            _wait_until_listening(process, port, Path(directory) / "error.log")
            yield f"http://127.0.0.1:{port}/"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    give_up = time.monotonic() + 10
    while time.monotonic() < give_up:
        if process.poll() is not None:
            detail = log.read_text() if log.exists() else ""
            raise RuntimeError(f"nginx exited with {process.returncode} at start:\n{detail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not start listening on port {port}")
