"""ClientMetrics: the client's families, and how a call and its attempts land in them.

The families are listed in :mod:`microcall.observe.prometheus`; gRPC's
(``rpc_client_call_duration_seconds``) and the bound on its method names
come from :mod:`~microcall.observe._grpc_metrics`.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from time import perf_counter
from typing import Any, Final, cast

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from yarl import URL

from microcall._attempt import Attempt, AttemptKind, RefusalReason
from microcall._redact import host_port
from microcall._request import Request
from microcall._response import Response
from microcall.cache import CacheEvent
from microcall.errors import UsageError
from microcall.observe._buckets import DURATION_BUCKETS
from microcall.observe._grpc_metrics import (
    MethodPaths,
    attempt_code_label,
    client_call_duration,
    client_call_labels,
)
from microcall.observe._labels import (
    KNOWN_METHODS,
    OTHER,
    RESULT_LABELS,
    RPC_SYSTEMS,
    client_error_type,
    method_label,
    split_rpc_method,
    status_label,
)
from microcall.observe._registry import register, registry_or_global
from microcall.observe._series import (
    Cells,
    CounterSeries,
    Counts,
    GaugeSeries,
    HistogramSeries,
    Observes,
    SeriesCollector,
    upper_bounds,
)
from microcall.observe.logs import observer_failed
from microcall.policy.breaker import BreakerState, BreakerStateChange
from microcall.policy.ejection import Ejection

_CLIENT_LABELS = ("http_request_method", "server_address", "server_port")
_ENDPOINT_LABELS = ("server_address", "server_port")

# The ``reason`` label of an attempt the engine did not send (its Attempt.error).
_REFUSALS: Final[dict[str, str]] = {
    RefusalReason.RETRY_BUDGET: "retry_budget",
    RefusalReason.HEDGE_BUDGET: "hedge_budget",
    RefusalReason.CIRCUIT_OPEN: "circuit_open",
    RefusalReason.BODY_NOT_REPLAYABLE: "body_not_replayable",
}


class ClientMetrics:
    """Client metrics: pass it in a client's ``observers=``, share it between clients.

    ``registry``: where the families are registered (default: the global
    one). ``server_addresses``: hosts that calls by absolute URL may name in
    the ``server_address`` label; other absolute URLs count as ``_OTHER``.
    It registers itself in ``registry`` as one collector (a second one in
    the same registry raises ``ConfigurationError``);
    ``registry.unregister(metrics)`` takes all its families out.
    """

    # Its caches and series may be used from many threads at once: a
    # Client's direct calls call it in their own threads (observe/hooks).
    thread_safe = True
    # Attempts are counted from the call's record when it ends (the engine
    # times them, and refused ones appear only there): the engine need not
    # tell it of each attempt as it starts.
    follows_attempts = False
    # Its scopes catch and log their own errors: as a client's only
    # observer, each call's scope is the call's watch (Watching).
    guards_itself = True

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        server_addresses: Iterable[str] = (),
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        registry = registry_or_global(registry)
        self.registry = registry
        self._known_hosts = frozenset(server_addresses)
        result = (*_CLIENT_LABELS, *RESULT_LABELS)
        # Every call moves the sharded families; breakers and ejections are
        # rare events, and a gauge that is set stays prometheus-client's.
        families = self._families = SeriesCollector()
        # Every duration family's; a usual call finds its buckets with them (_Ledger).
        self.duration_bounds = upper_bounds(buckets)
        self.call_duration = families.histogram(
            "http_client_request_duration_seconds",
            "Duration of logical HTTP calls: every attempt, backoff and hedge included.",
            result,
            buckets=buckets,
        )
        self.attempt_duration = families.histogram(
            "microcall_client_attempt_duration_seconds",
            "Duration of each attempt sent (a physical HTTP request).",
            (*_CLIENT_LABELS, "attempt_kind", *RESULT_LABELS),
            buckets=buckets,
        )
        self.attempts = families.counter(
            "microcall_client_attempts",
            "Attempts sent, by kind: first, retry or hedge.",
            (*_CLIENT_LABELS, "attempt_kind"),
        )
        self.refused = families.counter(
            "microcall_client_attempts_refused",
            "Attempts not sent: the retry or hedge budget was empty, or a breaker open.",
            (*_CLIENT_LABELS, "attempt_kind", "reason"),
        )
        self.resends = families.counter(
            "microcall_client_connection_resends",
            "Requests sent again, inside their attempt, on a fresh connection because the "
            "reused keep-alive connection they were sent on was dead before any response byte.",
            _CLIENT_LABELS,
        )
        self.active = families.gauge(
            "http_client_active_requests", "Logical calls in flight.", _CLIENT_LABELS
        )
        self.breaker_state = families.include(
            Gauge(
                "microcall_client_breaker_state",
                "1 for the current state of an endpoint's circuit breaker, 0 for the others.",
                (*_ENDPOINT_LABELS, "state"),
                registry=None,
                # Each worker process has its breakers: one series per live
                # worker (a pid label) under multiprocess mode.
                multiprocess_mode="liveall",
            )
        )
        self.breaker_transitions = families.include(
            Counter(
                "microcall_client_breaker_transitions",
                "Circuit breaker state changes, by the state entered.",
                (*_ENDPOINT_LABELS, "state"),
                registry=None,
            )
        )
        self.ejections = families.include(
            Counter(
                "microcall_client_ejections",
                "Endpoints ejected by outlier detection.",
                _ENDPOINT_LABELS,
                registry=None,
            )
        )
        self.rpc_duration = client_call_duration(families, buckets)
        self.cache_lookups = families.counter(
            "microcall_client_cache_lookups",
            "Cacheable calls, by how the response cache answered them "
            "(hit, miss, revalidated, stale, coalesced).",
            ("http_request_method", "status"),
        )
        self._targets: dict[tuple[object, ...], _Target] = {}
        # The last call's URL, method and whether it was relative, with its target.
        self._last: tuple[URL, str, bool, _Target] | None = None
        self._rpc_paths = MethodPaths()
        self._lock = threading.Lock()
        register(registry, self)

    def describe(self) -> list[Metric]:
        """The families, without samples (how the registry knows their names)."""
        return self._families.describe()

    def collect(self) -> list[Metric]:
        """The families and their samples: what a scrape of the registry reads."""
        return self._families.collect()

    # ------------------------------------------------------------ the observer

    def call_started(self, request: Request) -> _CallMetrics | None:
        try:
            url = request.url
            relative = request.path is not None
            # A client reuses one URL object for each path it is given as a
            # string: most calls are to the last call's URL, found by
            # identity, without a key built and hashed. The same URL object
            # may come back as an absolute URL (a request's own, passed on),
            # whose labels differ: whether it was relative is checked too.
            # One tuple, swapped whole, so a thread never reads one call's
            # URL beside another's target.
            last = self._last
            if (
                last is not None
                and last[0] is url
                and last[1] == request.method
                and last[2] is relative
            ):
                target = last[3]
            else:
                target = self._keyed_target(request, url, relative)
                self._last = (url, request.method, relative, target)
            if target.direct:
                try:
                    ledger: _Ledger = target.local.ledger
                except AttributeError:
                    ledger = target.ledger()
                ledger.active[0] += 1
            else:
                target.active.inc()
            return _CallMetrics(target, perf_counter())
        except Exception:  # it guards itself (Watching): a broken metric never breaks a call
            observer_failed(self, "call start")
            return None

    def _keyed_target(self, request: Request, url: URL, relative: bool) -> _Target:
        # The key holds only what the labels will, so calls to ever new
        # hosts share one target instead of growing the cache. A request's
        # endpoint is its URL's host:port, worked out once. The usual
        # call's key is looked up as it is: a made-up method or an RPC
        # (keyed by its path too) is never stored under it, and is worked
        # out on the miss.
        known = relative or url.raw_host in self._known_hosts
        key: tuple[object, ...] = (
            (request.method, url.scheme, request.endpoint, relative)
            if known
            else (request.method, url.scheme)
        )
        return self._targets.get(key) or self._unusual_target(request, known)

    def _unusual_target(self, request: Request, known: bool) -> _Target:
        """The target of a call whose key was not found: a first call, an odd method, an RPC."""
        url = request.url
        scheme = url.scheme
        method = request.method if request.method in KNOWN_METHODS else OTHER
        key: tuple[object, ...] = (
            (method, scheme, request.endpoint, request.path is not None)
            if known
            else (method, scheme)
        )
        rpc_path = None
        if scheme in RPC_SYSTEMS:
            rpc_path = self._rpc_paths.bounded(url.raw_path)
            key = (*key, rpc_path)
        return self._targets.get(key) or self._target(key, request, known, rpc_path)

    def _target(
        self, key: tuple[object, ...], request: Request, known: bool, rpc_path: str | None
    ) -> _Target:
        url = request.url
        if known:
            address, port = url.raw_host or "", "" if url.port is None else str(url.port)
        else:
            address, port = OTHER, ""
        rpc = None if rpc_path is None else (RPC_SYSTEMS[url.scheme], *split_rpc_method(rpc_path))
        target = _Target(
            self,
            (method_label(request.method), address, port),
            request.path is not None,
            rpc,
            # gRPC calls and callables end with a code of their own: the usual
            # path is for HTTP calls, on microcall's own series.
            direct=rpc is None and not self._families.shared,
        )
        with self._lock:
            return self._targets.setdefault(key, target)

    # ------------------------------------------------------------ breakers, ejection

    def watch(self, client: object) -> None:
        """Count the breaker state changes and ejections of ``client``'s endpoints.

        ``client`` is an AsyncClient, Client or FuturesClient with a base URL
        (or its ``replicas``). Its endpoints' breakers are reported closed
        until they change; call it before the first call. Watching twice
        changes nothing.
        """
        replicas = _replicas_of(client)
        if self.ejected not in replicas.ejection_events:
            replicas.ejection_events.append(self.ejected)
        if self.breaker_changed in replicas.breaker_events:
            return  # already heard: the gauges are current
        replicas.breaker_events.append(self.breaker_changed)
        for endpoint in replicas.balancer.endpoints:
            if endpoint.breaker is not None:
                self._set_breaker_state(host_port(endpoint.address), BreakerState.CLOSED)

    def breaker_changed(self, event: BreakerStateChange) -> None:
        """A breaker listener: count ``event`` and move the state gauge."""
        endpoint = host_port(event.endpoint)
        self.breaker_transitions.labels(*endpoint, str(event.new)).inc()
        self._set_breaker_state(endpoint, event.new)

    def ejected(self, event: Ejection) -> None:
        """An ejection listener: count ``event``."""
        self.ejections.labels(*host_port(event.endpoint)).inc()

    def cache_answered(self, event: CacheEvent) -> None:
        """A response-cache listener: count how a cacheable call was answered.

        A client made with ``cache=`` and this observer subscribes it by itself.
        """
        self.cache_lookups.labels(method_label(event.method), str(event.status)).inc()

    def _set_breaker_state(self, endpoint: tuple[str, str], state: BreakerState) -> None:
        for each in BreakerState:
            self.breaker_state.labels(*endpoint, str(each)).set(1 if each is state else 0)


class _Ledger:
    """One thread's cells for one target's usual calls, written directly.

    A usual call is answered by its one first attempt. It moves four
    series (the in-flight gauge, the call's duration, the attempt's count
    and duration): here each is its list of this thread's cells, found by
    one ``threading.local`` lookup for them all instead of a method call
    and a lookup for each (about 0.3 µs of the 2.7 µs the metrics cost a
    call in a tight loop; the rest is finding the labels and the engine's
    fan-out to observers).
    """

    __slots__ = ("active", "bounds", "usual")

    def __init__(self, active: Cells, bounds: tuple[float, ...]) -> None:
        self.active = active
        self.bounds = bounds
        # By (status, the replica that answered a call on the base URL, else
        # ""): the cells of the call's duration, of the attempt's count and
        # of the attempt's duration.
        self.usual: dict[tuple[int | None, str], tuple[Cells, Cells, Cells]] = {}


class _Target:
    """Label values and series for calls to one method and server.

    The series a call or an attempt lands in are cached here by the raw
    outcome (a status, an error's class), so a call costs a tuple and a dict
    lookup or two on top of the numbers it moves. For HTTP calls on
    microcall's own series (not prometheus-client's, as under multiprocess
    mode: ``direct``), a usual call writes its thread's cells through a
    :class:`_Ledger` instead.
    """

    __slots__ = (
        "_attempts",
        "_endpoints",
        "_owner",
        "_refusals",
        "active",
        "calls",
        "direct",
        "labels",
        "local",
        "relative",
        "rpc",
    )

    def __init__(
        self,
        owner: ClientMetrics,
        labels: tuple[str, str, str],
        relative: bool,
        rpc: tuple[str, str, str] | None,
        *,
        direct: bool,
    ) -> None:
        self._owner = owner
        self.labels = labels
        self.relative = relative
        self.rpc = rpc
        self.direct = direct
        self.active = owner.active.labels(*labels)
        self.calls: dict[tuple[object, ...], Observes] = {}
        self._attempts: dict[tuple[object, ...], tuple[Counts, Observes]] = {}
        self._refusals: dict[tuple[object, ...], Counts] = {}
        self._endpoints: dict[str, tuple[str, str, str]] = {}
        # Each thread's ledger, read straight from here on a usual call.
        self.local = threading.local()

    def ledger(self) -> _Ledger:
        """The calling thread's ledger, made on its first call (only when ``direct``)."""
        try:
            ledger: _Ledger = self.local.ledger
        except AttributeError:
            active = cast(GaugeSeries, self.active)
            ledger = self.local.ledger = _Ledger(active.cells(), self._owner.duration_bounds)
        return ledger

    def usual_cells(
        self, ledger: _Ledger, key: tuple[int | None, str], response: Response, attempt: Attempt
    ) -> tuple[Cells, Cells, Cells]:
        """This thread's cells for a call ``attempt`` answered with ``response``, kept at ``key``."""
        call_key = (response.status_code, None)
        call = self.calls.get(call_key) or self.call_series(call_key, response, None)
        endpoint = self._attempt_endpoint(attempt)
        attempt_key = (endpoint, attempt.kind, attempt.status)
        pair = self._attempts.get(attempt_key) or self._attempt_series(
            attempt_key, endpoint, attempt
        )
        cells = (
            cast(HistogramSeries, call).cells(),
            cast(CounterSeries, pair[0]).cells(),
            cast(HistogramSeries, pair[1]).cells(),
        )
        ledger.usual[key] = cells
        return cells

    def _attempt_endpoint(self, attempt: Attempt) -> tuple[str, str, str]:
        if self.relative and attempt.endpoint:
            return self._endpoints.get(attempt.endpoint) or self._endpoint(attempt.endpoint)
        return self.labels

    def call_series(
        self, key: tuple[object, ...], response: Response | None, error: BaseException | None
    ) -> Observes:
        """The duration series of a call that ended so (``key``: its status and error class)."""
        owner = self._owner
        status = None if response is None else response.status_code
        if self.rpc is None:
            series = owner.call_duration.labels(
                *self.labels, status_label(status), client_error_type(status, error)
            )
        else:
            series = owner.rpc_duration.labels(
                *client_call_labels(self.rpc, self.labels[1:], status, error)
            )
        self.calls[key] = series
        return series

    def attempt_ended(self, attempt: Attempt) -> None:
        endpoint = self._attempt_endpoint(attempt)
        kind = attempt.kind
        if not attempt.sent:
            self._refused(endpoint, kind, attempt.error)
            return
        key: tuple[object, ...]
        if attempt.error is None and not attempt.cancelled and type(attempt) is Attempt:
            # An HTTP attempt that got an answer: its error label follows from
            # the status, so the common case skips working it out.
            key = (endpoint, kind, attempt.status)
        else:
            key = (endpoint, kind, attempt.status, _attempt_error(attempt))
        pair = self._attempts.get(key)
        if pair is None:
            pair = self._attempt_series(key, endpoint, attempt)
        counted, timed = pair
        counted.inc()
        timed.observe(attempt.duration)
        if attempt.resent:
            self._owner.resends.labels(*endpoint).inc()

    def _attempt_series(
        self, key: tuple[object, ...], endpoint: tuple[str, str, str], attempt: Attempt
    ) -> tuple[Counts, Observes]:
        owner = self._owner
        kind = str(attempt.kind)
        pair = (
            owner.attempts.labels(*endpoint, kind),
            owner.attempt_duration.labels(
                *endpoint, kind, status_label(attempt.status), _attempt_error(attempt)
            ),
        )
        self._attempts[key] = pair
        return pair

    def _refused(self, endpoint: tuple[str, str, str], kind: AttemptKind, why: str | None) -> None:
        reason = _REFUSALS.get(why or "", OTHER)
        key = (endpoint, kind, reason)
        series = self._refusals.get(key)
        if series is None:
            series = self._owner.refused.labels(*endpoint, str(kind), reason)
            self._refusals[key] = series
        series.inc()

    def _endpoint(self, name: str) -> tuple[str, str, str]:
        """Labels for an attempt's endpoint: the replica it went to, for calls on the base URL."""
        labels = (self.labels[0], *host_port(name))
        self._endpoints[name] = labels
        return labels


class _CallMetrics:
    __slots__ = ("_start", "_target")

    def __init__(self, target: _Target, start: float) -> None:
        self._target = target
        self._start = start

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> None:
        # Counted from the call's record when it ends (ClientMetrics.follows_attempts).
        return None

    def call_ended(
        self,
        response: Response | None,
        error: BaseException | None,
        attempts: Sequence[Attempt],
    ) -> None:
        try:
            duration = perf_counter() - self._start
            target = self._target
            if target.direct and error is None and response is not None and len(attempts) == 1:
                # An HTTP call (``direct`` targets are only theirs) answered by its
                # one attempt: that attempt is its first, was sent and answered.
                attempt = attempts[0]
                if (
                    attempt.status == response.status_code
                    and attempt.error is None
                    and not attempt.resent
                ):
                    # The usual call: the same numbers as below, written straight into
                    # this thread's cells.
                    try:
                        ledger: _Ledger = target.local.ledger
                    except AttributeError:
                        ledger = target.ledger()
                    # Only calls on the base URL are labelled by the replica that
                    # answered: an absolute URL's host is in no label, nor in the key.
                    usual = (attempt.status, attempt.endpoint if target.relative else "")
                    cells = ledger.usual.get(usual)
                    if cells is None:
                        cells = target.usual_cells(ledger, usual, response, attempt)
                    call, counted, timed = cells
                    bounds = ledger.bounds
                    call[bisect_left(bounds, duration)] += 1
                    call[-1] += duration
                    counted[0] += 1
                    timed[bisect_left(bounds, attempt.duration)] += 1
                    timed[-1] += attempt.duration
                    ledger.active[0] -= 1
                    return
            key = (
                None if response is None else response.status_code,
                None if error is None else type(error),
            )
            series = target.calls.get(key) or target.call_series(key, response, error)
            series.observe(duration)
            target.active.dec()
            for attempt in attempts:
                target.attempt_ended(attempt)
        except Exception:  # it guards itself (Watching): a broken metric never breaks a call
            observer_failed(self._target._owner, "call end")


def _attempt_error(attempt: Attempt) -> str:
    if attempt.cancelled:
        return "cancelled"
    if attempt.error is not None:
        # "ConnectError: connection refused ..." -> "ConnectError"
        name = attempt.error.partition(":")[0]
        return name if name.isidentifier() else OTHER
    code = getattr(attempt, "code", None)  # a gRPC attempt's status name
    if code is not None and code != "OK":
        return attempt_code_label(code)
    return client_error_type(attempt.status, None)


def _replicas_of(client: object) -> Any:
    replicas = getattr(client, "replicas", None)
    if replicas is None and hasattr(client, "breaker_events"):
        replicas = client
    if replicas is None:
        # Client and FuturesClient run an AsyncClient on their own loop.
        replicas = getattr(getattr(client, "_async", None), "replicas", None)
    if replicas is None:
        raise UsageError(
            f"{client!r} has no endpoint group to watch: only a client with a base URL has one"
        )
    return replicas
