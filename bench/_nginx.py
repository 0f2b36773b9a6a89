"""nginx serving a fixed small 200 on loopback: a server fast enough never to be the bottleneck.

nginx runs as a plain child process (no daemon, no master, one worker) from a
configuration generated into a temporary directory, so a benchmark needs no
root and touches nothing outside that directory. ``serve_ok_tls`` serves the
same answer over HTTP/2 and TLS, with a certificate from a throwaway CA
(trustme) whose certificate the client is given to verify against.
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
    sendfile on;
    server {{
        {listen}
        {location}
    }}
}}
"""

# Every path answers a fixed small 200.
_OK = 'location / { default_type text/plain; return 200 "ok\\n"; }'


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
        with _nginx(env, directory, port, f"listen 127.0.0.1:{port};"):
            yield f"http://127.0.0.1:{port}/"


@contextlib.contextmanager
def serve_files(env: BenchEnv, root: Path) -> Iterator[str]:
    """nginx serving the files under ``root`` (sendfile); yield its base URL, no trailing slash."""
    with tempfile.TemporaryDirectory(prefix="microcall-bench-nginx-") as directory:
        port = _free_port()
        location = f"default_type application/octet-stream; root {root};"
        with _nginx(env, directory, port, f"listen 127.0.0.1:{port};", location):
            yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def serve_ok_tls(env: BenchEnv) -> Iterator[tuple[str, str]]:
    """The same over HTTP/2 and TLS: yield ``(https://127.0.0.1:port/, the CA's PEM file)``."""
    import trustme

    with tempfile.TemporaryDirectory(prefix="microcall-bench-nginx-") as directory:
        authority = trustme.CA()
        certificate = authority.issue_cert("127.0.0.1")
        ca, chain, key = (Path(directory) / name for name in ("ca.pem", "chain.pem", "key.pem"))
        authority.cert_pem.write_to_path(str(ca))
        certificate.private_key_pem.write_to_path(str(key))
        for blob in certificate.cert_chain_pems:
            blob.write_to_path(str(chain), append=True)
        port = _free_port()
        listen = (
            f"listen 127.0.0.1:{port} ssl http2; "
            f"ssl_certificate {chain}; ssl_certificate_key {key};"
        )
        with _nginx(env, directory, port, listen):
            yield f"https://127.0.0.1:{port}/", str(ca)


@contextlib.contextmanager
def _nginx(
    env: BenchEnv, directory: str, port: int, listen: str, location: str = _OK
) -> Iterator[None]:
    """nginx with ``_CONFIG`` (its ``listen`` and ``location`` given) in ``directory``, until the block ends."""
    config = Path(directory) / "nginx.conf"
    config.write_text(_CONFIG.format(dir=directory, listen=listen, location=location))
    process = subprocess.Popen(
        [nginx_binary(), "-p", directory, "-e", f"{directory}/error.log", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # errors go to the log file named above
    )
    try:
        env.pin_server(process.pid)
        _wait_until_listening(process, port, Path(directory) / "error.log")
        yield
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
