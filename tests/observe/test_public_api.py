"""The observe package: its public names, and nothing imported or registered behind your back."""

from __future__ import annotations

import inspect
import subprocess
import sys

import microcall.observe


def test_all_is_sorted_and_complete() -> None:
    assert microcall.observe.__all__ == sorted(set(microcall.observe.__all__))
    public = {
        name
        for name, value in vars(microcall.observe).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }
    assert public - set(microcall.observe.__all__) == set()


def test_importing_microcall_imports_no_backend_and_the_backends_register_nothing() -> None:
    code = (
        "import sys, microcall, microcall.observe, microcall.server.aiohttp, "
        "microcall.server.asgi, microcall.server.wsgi\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('prometheus_client', 'opentelemetry')))\n"
        "from prometheus_client import REGISTRY\n"
        "before = set(REGISTRY._names_to_collectors)\n"
        "import microcall.observe.prometheus, microcall.observe.tracing, "
        "microcall.observe.exposition, microcall.observe.timed\n"
        "print(sorted(set(REGISTRY._names_to_collectors) - before))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["[]", "[]"]
