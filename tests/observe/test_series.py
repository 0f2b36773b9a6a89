"""Sharded series: what a scraper reads equals prometheus-client's, and no thread loses a count."""

from __future__ import annotations

import math
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from yarl import URL

from microcall._attempt import Attempt, AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.errors import ConfigurationError
from microcall.observe._buckets import DURATION_BUCKETS
from microcall.observe._series import SeriesCollector
from microcall.observe.hooks import CallScope
from microcall.observe.prometheus import ClientMetrics, ServerMetrics
from tests.observe._metrics import series, value

LABELS = ("http_request_method", "server_address")
# Values on the bounds themselves (le: they count in that bound's bucket),
# between them, below the first, above the last, zero, negative and +Inf.
OBSERVED = (
    0.005,
    0.0049,
    0.0051,
    0.01,
    0.0123,
    1.0,
    0.999999,
    1.000001,
    10.0,
    10.5,
    42.0,
    0.0,
    -0.5,
    math.inf,
    *(bound for bound in DURATION_BUCKETS),
)


def without_created(exposition: bytes) -> list[str]:
    return [line for line in exposition.decode().splitlines() if "_created" not in line]


def exposed(registry: CollectorRegistry) -> tuple[list[str], list[str]]:
    """The text and OpenMetrics expositions of ``registry``, less the ``_created`` samples."""
    return without_created(generate_latest(registry)), without_created(
        generate_openmetrics(registry)
    )


@pytest.fixture
def reference() -> CollectorRegistry:
    return CollectorRegistry()


def test_a_histogram_reads_as_prometheus_client_s(
    registry: CollectorRegistry, reference: CollectorRegistry
) -> None:
    ours = SeriesCollector()
    family = ours.histogram("work_seconds", "Work done.", LABELS, buckets=DURATION_BUCKETS)
    registry.register(ours)
    theirs = Histogram(
        "work_seconds",
        "Work done.",
        LABELS,
        registry=reference,
        buckets=DURATION_BUCKETS,
        unit="seconds",  # what a name ending in _seconds gets from SeriesCollector
    )
    for number, seconds in enumerate(OBSERVED):
        labels = ("GET" if number % 3 else "POST", "10.0.0.1")
        family.labels(*labels).observe(seconds)
        theirs.labels(*labels).observe(seconds)

    assert exposed(registry) == exposed(reference)
    gets = sum(1 for number in range(len(OBSERVED)) if number % 3)
    on = {"http_request_method": "GET", "server_address": "10.0.0.1"}
    assert value(registry, "work_seconds_bucket", **on, le="+Inf") == gets
    assert value(registry, "work_seconds_count", **on) == gets


def test_a_value_on_a_bound_counts_in_that_bound_s_bucket(registry: CollectorRegistry) -> None:
    ours = SeriesCollector()
    family = ours.histogram("work_seconds", "Work done.", (), buckets=(0.1, 1.0))
    registry.register(ours)
    for seconds in (0.1, 1.0, 1.0, 2.0):
        family.labels().observe(seconds)

    assert value(registry, "work_seconds_bucket", le="0.1") == 1
    assert value(registry, "work_seconds_bucket", le="1.0") == 3
    assert value(registry, "work_seconds_bucket", le="+Inf") == 4
    assert value(registry, "work_seconds_count") == 4
    assert value(registry, "work_seconds_sum") == pytest.approx(4.1)


def test_counters_and_gauges_read_as_prometheus_client_s(
    registry: CollectorRegistry, reference: CollectorRegistry
) -> None:
    ours = SeriesCollector()
    sent = ours.counter("sent", "Things sent.", LABELS)
    busy = ours.gauge("busy", "Things in flight.", LABELS)
    registry.register(ours)
    their_sent = Counter("sent", "Things sent.", LABELS, registry=reference)
    their_busy = Gauge("busy", "Things in flight.", LABELS, registry=reference)
    for number in range(25):
        labels = ("GET" if number % 4 else "_OTHER", f"host-{number % 3}")
        sent.labels(*labels).inc()
        their_sent.labels(*labels).inc()
        busy.labels(*labels).inc()
        their_busy.labels(*labels).inc()
        if number % 2:
            busy.labels(*labels).dec()
            their_busy.labels(*labels).dec()

    assert exposed(registry) == exposed(reference)
    assert "sent_total{" in generate_latest(registry).decode()


def test_created_samples_follow_prometheus_client_s_switch(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = SeriesCollector()
    ours.histogram("work_seconds", "Work done.", ("kind",), buckets=(1.0,)).labels("a").observe(1)
    ours.counter("sent", "Things sent.", ("kind",)).labels("a").inc()
    registry.register(ours)
    assert registry.get_sample_value("work_seconds_created", {"kind": "a"}) is not None
    assert registry.get_sample_value("sent_created", {"kind": "a"}) is not None

    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    assert registry.get_sample_value("work_seconds_created", {"kind": "a"}) is None
    assert registry.get_sample_value("sent_created", {"kind": "a"}) is None


def test_a_gauge_moved_up_on_one_thread_and_down_on_another(registry: CollectorRegistry) -> None:
    ours = SeriesCollector()
    busy = ours.gauge("busy", "Things in flight.", ()).labels()
    registry.register(ours)
    for _ in range(3):
        busy.inc()
    down = threading.Thread(target=busy.dec)
    down.start()
    down.join()
    assert value(registry, "busy") == 2


def test_threads_that_end_leave_their_counts_and_no_shards(registry: CollectorRegistry) -> None:
    ours = SeriesCollector()
    family = ours.histogram("work_seconds", "Work done.", (), buckets=(1.0,))
    registry.register(ours)
    series = family.labels()

    def work() -> None:
        for _ in range(10):
            series.observe(0.5)

    for _ in range(50):
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    assert value(registry, "work_seconds_count") == 500
    assert value(registry, "work_seconds_bucket", le="1.0") == 500
    assert len(series._shards) <= 1  # folded as they registered, the last at the scrape
    assert value(registry, "work_seconds_count") == 500


def test_bad_buckets_and_label_counts_are_refused() -> None:
    ours = SeriesCollector()
    for buckets in ((), (math.inf,), (1.0, 0.5), (1.0, 1.0), (math.nan,)):
        with pytest.raises(ConfigurationError, match="buckets"):
            ours.histogram("work_seconds", "Work done.", (), buckets=buckets)
    with_inf = ours.histogram("work_seconds", "Work done.", ("kind",), buckets=(1.0, math.inf))
    with pytest.raises(ValueError, match="label values"):
        with_inf.labels("a", "b")
    with pytest.raises(ConfigurationError, match="buckets"):
        ClientMetrics(CollectorRegistry(), buckets=(2.0, 1.0))


def test_registered_once_per_registry_and_unregistered_whole(registry: CollectorRegistry) -> None:
    metrics = ClientMetrics(registry)
    with pytest.raises(ConfigurationError, match="one metrics object per registry"):
        ClientMetrics(registry)
    registry.unregister(metrics)
    assert list(registry.collect()) == []
    again = ClientMetrics(registry)
    assert {metric.name for metric in registry.collect()} >= {
        "http_client_request_duration_seconds",
        "microcall_client_attempts",
        "microcall_client_breaker_state",
    }
    registry.unregister(again)
    server = ServerMetrics(registry)
    with pytest.raises(ConfigurationError):
        ServerMetrics(registry)
    registry.unregister(server)
    ServerMetrics(registry)


def test_a_name_taken_by_another_metric_leaves_the_registry_as_it_was(
    registry: CollectorRegistry,
) -> None:
    Counter("microcall_client_ejections", "Someone else's.", registry=registry)
    with pytest.raises(ConfigurationError):
        ClientMetrics(registry)
    assert [metric.name for metric in registry.collect()] == ["microcall_client_ejections"]


def test_a_restricted_registry_finds_the_families_by_name(registry: CollectorRegistry) -> None:
    metrics = ClientMetrics(registry)
    request, _, _ = one_call()
    metrics.call_started(request)
    text = generate_latest(registry.restricted_registry(["http_client_active_requests"])).decode()
    assert "# TYPE http_client_active_requests gauge" in text
    assert "http_client_request_duration_seconds" not in text


# ----------------------------------------------------------------- many threads, one ClientMetrics

THREADS = 8
CALLS = 10_000


def one_call() -> tuple[Request, Response, tuple[Attempt, ...]]:
    """A call answered 200 after a 503 and a retry, its hedge refused by the budget."""
    url = URL("http://catalog:8080/books/1")
    request = Request("GET", url, {}, path="/books/1")
    response = Response(status_code=200, headers={}, content=b"", url=url, request=request)
    attempts = (
        Attempt(0, AttemptKind.FIRST, "catalog:8080", 0.0, 0.3, status=503),
        Attempt(1, AttemptKind.RETRY, "catalog:8080", 0.31, 0.0123, status=200),
        Attempt(2, AttemptKind.HEDGE, "catalog:8080", 0.32, 0.0, error="retry budget empty"),
    )
    attempts[2].sent = False
    return request, response, attempts


def test_eight_threads_recording_into_one_client_metrics_lose_nothing(
    registry: CollectorRegistry,
) -> None:
    metrics = ClientMetrics(registry)
    request, response, attempts = one_call()
    start = threading.Barrier(THREADS)

    def calls() -> None:
        start.wait()
        for _ in range(CALLS):
            metrics.call_started(request).call_ended(response, None, attempts)

    workers = [threading.Thread(target=calls) for _ in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    total = THREADS * CALLS
    on = {"http_request_method": "GET", "server_address": "catalog", "server_port": "8080"}
    ok = {"http_response_status_code": "200", "error_type": ""}
    failed = {"http_response_status_code": "503", "error_type": "503"}
    assert value(registry, "http_client_request_duration_seconds_count", **on, **ok) == total
    assert value(
        registry, "http_client_request_duration_seconds_bucket", **on, **ok, le="+Inf"
    ) == (total)
    assert value(registry, "http_client_active_requests", **on) == 0
    assert value(registry, "microcall_client_attempts_total", **on, attempt_kind="first") == total
    assert value(registry, "microcall_client_attempts_total", **on, attempt_kind="retry") == total
    assert value(registry, "microcall_client_attempts_total", **on, attempt_kind="hedge") == 0
    assert (
        value(
            registry,
            "microcall_client_attempts_refused_total",
            **on,
            attempt_kind="hedge",
            reason="retry_budget",
        )
        == total
    )
    attempt_times = "microcall_client_attempt_duration_seconds"
    first = {**on, "attempt_kind": "first", **failed}
    retry = {**on, "attempt_kind": "retry", **ok}
    assert value(registry, f"{attempt_times}_bucket", **first, le="0.25") == 0
    assert value(registry, f"{attempt_times}_bucket", **first, le="0.5") == total
    assert value(registry, f"{attempt_times}_bucket", **retry, le="0.01") == 0
    assert value(registry, f"{attempt_times}_bucket", **retry, le="0.025") == total
    assert value(registry, f"{attempt_times}_sum", **first) == pytest.approx(0.3 * total)
    assert value(registry, f"{attempt_times}_sum", **retry) == pytest.approx(0.0123 * total)


def test_usual_calls_started_on_one_thread_and_ended_on_others_lose_nothing(
    registry: CollectorRegistry,
) -> None:
    # A call answered by its one first attempt is written straight into the
    # thread's cells: started here, ended on eight other threads at once.
    metrics = ClientMetrics(registry)
    url = URL("http://catalog:8080/books/1")
    request = Request("GET", url, {}, path="/books/1", endpoint="catalog:8080")
    response = Response(status_code=200, headers={}, content=b"", url=url, request=request)
    attempts = (Attempt(0, AttemptKind.FIRST, "catalog:8080", 0.0, 0.0123, status=200),)
    scopes = [metrics.call_started(request) for _ in range(THREADS * CALLS)]
    on = {"http_request_method": "GET", "server_address": "catalog", "server_port": "8080"}
    assert value(registry, "http_client_active_requests", **on) == THREADS * CALLS
    start = threading.Barrier(THREADS)

    def end(mine: list[CallScope]) -> None:
        start.wait()
        for scope in mine:
            scope.call_ended(response, None, attempts)

    workers = [
        threading.Thread(target=end, args=(scopes[number::THREADS],)) for number in range(THREADS)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    total = THREADS * CALLS
    ok = {"http_response_status_code": "200", "error_type": ""}
    assert value(registry, "http_client_active_requests", **on) == 0
    assert value(registry, "http_client_request_duration_seconds_count", **on, **ok) == total
    assert value(registry, "microcall_client_attempts_total", **on, attempt_kind="first") == total
    attempt = {**on, "attempt_kind": "first", **ok}
    attempt_times = "microcall_client_attempt_duration_seconds"
    assert value(registry, f"{attempt_times}_bucket", **attempt, le="0.01") == 0
    assert value(registry, f"{attempt_times}_bucket", **attempt, le="0.025") == total
    assert value(registry, f"{attempt_times}_sum", **attempt) == pytest.approx(0.0123 * total)
    # Nothing but those series: the usual path makes no others.
    assert series(registry, "http_client_request_duration_seconds") == {
        tuple(sorted({**on, **ok}.items()))
    }


def test_usual_calls_to_ever_new_hosts_keep_one_entry(registry: CollectorRegistry) -> None:
    # An absolute URL's host is in no label (it counts as _OTHER), so it
    # must not be in what the usual path keeps either: memory stays flat.
    metrics = ClientMetrics(registry)
    for number in range(1000):
        url = URL(f"http://host-{number}.example:8080/books/1")
        request = Request("GET", url, {}, endpoint=f"host-{number}.example:8080")
        response = Response(status_code=200, headers={}, content=b"", url=url, request=request)
        attempt = Attempt(0, AttemptKind.FIRST, request.endpoint, 0.0, 0.0123, status=200)
        metrics.call_started(request).call_ended(response, None, (attempt,))

    (target,) = metrics._targets.values()
    assert len(target.ledger().usual) == 1
    other = {"http_request_method": "GET", "server_address": "_OTHER", "server_port": ""}
    ok = {"http_response_status_code": "200", "error_type": ""}
    assert value(registry, "http_client_request_duration_seconds_count", **other, **ok) == 1000
    assert value(registry, "microcall_client_attempts_total", **other, attempt_kind="first") == 1000


def test_openmetrics_output_names_the_unit_of_every_duration(registry: CollectorRegistry) -> None:
    ClientMetrics(registry)
    ServerMetrics(registry)
    text = generate_openmetrics(registry).decode()
    durations = {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE") and line.split()[2].endswith("_seconds")
    }
    units = {line.split()[2] for line in text.splitlines() if line.startswith("# UNIT")}
    assert durations
    assert durations == units
    assert "# UNIT http_client_request_duration_seconds seconds" in text
