"""Each benchmark, run for real in its quick mode, still produces its section.

The benchmarks call microcall's public API, start real servers on 127.0.0.1
(nginx, aiohttp, Redis, memcached) and measure in child processes; nothing
else runs them between two ``make bench`` runs, so a renamed option or a
changed result would otherwise break them unseen. Only the shape of the
report is checked: its title, a table, and no figure that could not be
computed. The figures of a quick run on a shared machine mean nothing, so no verdict
is asserted. The three longest (about a minute each) are left to ``make
bench``: the HTTP and gRPC client comparisons and priority shedding, whose
report code tests/benchmarks/test_reports.py covers.
"""

from __future__ import annotations

import importlib
import re

import pytest

from bench import BenchEnv
from bench.__main__ import BENCHMARKS

LONG = {"http_clients", "grpc_clients", "shedding"}


@pytest.mark.parametrize("name", [name for name in BENCHMARKS if name not in LONG])
def test_a_quick_run_produces_the_benchmarks_section(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    section = module.run(BenchEnv.create(quick=True))
    assert section.startswith("## ")
    assert re.search(r"^\|(---:?\|)+", section, re.MULTILINE), "no table"
    # A median of no values, a ratio of nothing: the measurement lost its numbers.
    assert not re.search(r"\bnan\b", section, re.IGNORECASE), section
