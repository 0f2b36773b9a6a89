"""gunicorn's configuration for the Catalog (``-c python:microcall.demo.bookstore._gunicorn``)."""

from __future__ import annotations

import os
import shutil
from typing import Any


# Workers that die leave the live gauges' sum (prometheus-client's multiprocess mode).
def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the metrics every worker serves."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Any) -> None:
    """Remove the scratch directory catalog.py made for this run (none when it was given one)."""
    scratch = os.environ.get("CATALOG_SCRATCH_DIR")
    if scratch:
        shutil.rmtree(scratch, ignore_errors=True)
