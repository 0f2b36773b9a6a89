"""Several worker processes sharing PROMETHEUS_MULTIPROC_DIR: one scrape shows them all.

Each worker is a real process (tests/observe/_multiprocess_worker.py) with
its own aiohttp server on 127.0.0.1 and its own client calling it; the
scrapes go over HTTP to one of them, as Prometheus' would reach whichever
worker the load balancer picks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from microcall.errors import ConfigurationError
from microcall.observe._series import HistogramFamily, SeriesCollector, multiprocess_mode
from tests.observe._metrics import value

ROOT = Path(__file__).resolve().parents[2]
BOOKS = {
    "http_request_method": "GET",
    "http_route": "/books/{id}",
    "http_response_status_code": "200",
    "error_type": "",
}


# A scrape's samples by name and sorted labels.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Worker:
    def __init__(self, directory: Path, calls: int) -> None:
        environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.observe._multiprocess_worker", str(calls)],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the worker ended before it served"
        self.url = f"http://127.0.0.1:{int(line)}"

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    shared = tmp_path / "prometheus"
    shared.mkdir()
    return shared


@pytest.fixture
def workers(directory: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        started.append(Worker(directory, calls=3))
        started.append(Worker(directory, calls=5))
        yield started
    finally:
        for worker in started:
            worker.process.kill()
            worker.process.wait(timeout=30)


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def closed_breakers(samples: Samples) -> set[int]:
    """The pids of the workers whose breaker state gauge reads closed."""
    return {
        int(dict(labels)["pid"])
        for (name, labels), reading in samples.items()
        if name == "microcall_client_breaker_state" and dict(labels)["state"] == "closed"
        if reading == 1
    }


async def test_a_scrape_of_any_worker_adds_up_every_worker(
    workers: list[Worker], directory: Path
) -> None:
    for worker in workers:
        samples = await scrape(worker.url)
        # 3 + 5 requests served, by two processes; the scrapes went by other routes.
        assert sample(samples, "http_server_request_duration_seconds_count", **BOOKS) == 8
        calls = {
            key: count
            for key, count in samples.items()
            if key[0] == "http_client_request_duration_seconds_count"
        }
        assert sum(calls.values()) == 8
        first = {
            key: count
            for key, count in samples.items()
            if key[0] == "microcall_client_attempts_total"
        }
        assert sum(first.values()) == 8
        active = [
            count for key, count in samples.items() if key[0] == "http_client_active_requests"
        ]
        assert active
        assert sum(active) == 0
        # Each worker's breaker for its own server: one series per live worker.
        assert closed_breakers(samples) == {worker.process.pid for worker in workers}


async def test_a_dead_worker_keeps_its_counts_and_leaves_the_gauges(
    workers: list[Worker], directory: Path
) -> None:
    first, second = workers
    first.stop()
    mark_process_dead(first.process.pid, str(directory))  # what a child_exit hook does
    samples = await scrape(second.url)
    assert sample(samples, "http_server_request_duration_seconds_count", **BOOKS) == 8
    # The one request in flight is this scrape, on the live worker.
    in_flight = sample(samples, "http_server_active_requests", http_request_method="GET")
    assert in_flight == 1
    assert closed_breakers(samples) == {second.process.pid}


def test_the_files_hold_what_the_collector_reads(workers: list[Worker], directory: Path) -> None:
    combined = CollectorRegistry()
    MultiProcessCollector(combined, path=str(directory))
    assert value(combined, "http_server_request_duration_seconds_count", **BOOKS) == 8


def test_this_process_keeps_its_own_numbers_without_the_directory() -> None:
    assert not multiprocess_mode()  # the test process imported prometheus-client without it
    own = SeriesCollector().histogram("work_seconds", "Work.", ("kind",), buckets=(0.1, 1.0))
    assert isinstance(own, HistogramFamily)


def test_shared_families_are_prometheus_clients_and_check_their_buckets() -> None:
    shared = SeriesCollector(shared=True)
    histogram = shared.histogram("work_seconds", "Work.", ("kind",), buckets=(0.1, 1.0))
    assert isinstance(histogram, Histogram)
    assert isinstance(shared.gauge("busy", "Busy.", ("kind",)), Gauge)
    histogram.labels("batch").observe(0.5)
    registry = CollectorRegistry()
    registry.register(shared)  # type: ignore[arg-type]  # a collector by its methods
    assert value(registry, "work_seconds_bucket", kind="batch", le="1.0") == 1
    with pytest.raises(ConfigurationError):
        shared.histogram("bad_seconds", "Bad.", (), buckets=(1.0, 0.5))
