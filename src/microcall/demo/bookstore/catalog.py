"""The Catalog service: ``python -m microcall.demo.bookstore.catalog --host H --port P``.

Runs :mod:`.catalog_app` under gunicorn with ``--workers`` processes
(``CATALOG_WORKERS``, 2 by default) of gthread workers. Before handing over
to gunicorn it prepares what the workers share: the SQLite file
(``CATALOG_DB``, seeded), the chaos switch file and prometheus-client's
multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``), each made in a
scratch directory when not given, removed when gunicorn exits.

Routes: ``/books``, ``/books/<id>``, ``/docs/`` (Swagger UI),
``/docs/openapi.json``, ``/healthz``, ``/metrics``, ``/chaos``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence

from microcall.demo.bookstore._service import arguments
from microcall.demo.bookstore.catalog_app import CONCURRENCY_LIMIT, seed

DEFAULT_PORT = 8081


def gunicorn_command(host: str, port: int, workers: int) -> list[str]:
    """The gunicorn command line that serves the Catalog."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(CONCURRENCY_LIMIT),
        "--config",
        "python:microcall.demo.bookstore._gunicorn",
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
        "microcall.demo.bookstore.catalog_app:create_app()",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Prepare the shared files, then become gunicorn."""
    args = arguments(__doc__.splitlines()[0], DEFAULT_PORT, argv)
    workers = int(os.environ.get("CATALOG_WORKERS", "2"))
    scratch = tempfile.mkdtemp(prefix="bookstore-catalog-")
    os.environ["CATALOG_SCRATCH_DIR"] = scratch
    os.environ.setdefault("CATALOG_DB", os.path.join(scratch, "catalog.sqlite"))
    os.environ.setdefault("CATALOG_CHAOS_FILE", os.path.join(scratch, "chaos.json"))
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = os.path.join(scratch, "metrics")
        os.mkdir(metrics_dir)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    seed(os.environ["CATALOG_DB"])
    print(f"Catalog on http://{args.host}:{args.port} ({workers} workers)", flush=True)
    command = gunicorn_command(args.host, args.port, workers)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
