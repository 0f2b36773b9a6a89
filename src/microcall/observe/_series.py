"""Metric series kept as plain numbers in per-thread shards, summed into Prometheus families at scrape.

prometheus-client takes a lock for every increment and walks a histogram's
buckets in a Python loop. The families here pay a few list operations per
observation instead, and leave the rest to the scrape, which is rare.

Theory of operation:

* A series (a family and one set of label values) keeps one shard of cells
  per thread that records into it: a histogram's bucket counts (each bucket
  on its own, not yet cumulative) and its sum, a counter's total, a gauge's
  signed change. A thread finds its shard through a ``threading.local`` and
  writes only to its own, so an observation takes no lock and none is lost
  to another thread (``cells[i] += 1`` is a read and then a write).
* A thread's first observation in a series makes its shard and registers it
  in the series' list, under the family's lock: once per thread and series.
* A scrape sums, under that lock, the shards of the threads alive and what
  the dead ones left: the shard of a thread that has ended is folded into
  the series' ``retired`` cells, there and whenever a thread registers, so
  threads that come and go do not pile up shards. A scrape reads shards
  while their threads write to them: it may see an observation's bucket
  and not yet its sum, never a number half written.
* A value's bucket is ``bisect_left`` over the upper bounds: the first bound
  at or above the value, which is Prometheus' ``le`` (a value equal to a
  bound counts in that bound's bucket). The last bound is always +Inf.
* A gauge here moves only by ``inc`` and ``dec`` (a sum of per-thread
  changes): there is no ``set``, which no sum of shards could express.

What a scraper sees is what prometheus-client's own ``Histogram``,
``Counter`` and ``Gauge`` expose: the same sample names and label order,
cumulative ``_bucket`` samples ending in ``+Inf``, ``_count``, ``_sum``,
``_total``, and ``_created`` (the time a series was first used) as long as
prometheus-client emits them (``disable_created_metrics()``,
``PROMETHEUS_DISABLE_CREATED_SERIES``).

Under prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set
before it was imported, as under gunicorn or uWSGI with several worker
processes) a :class:`SeriesCollector` makes prometheus-client's own metrics
instead: their values live in the shared directory's files, where
``MultiProcessCollector`` adds up every worker's. Numbers in one process's
memory could not be combined so. Callers see one interface either way
(:class:`Observes`, :class:`Counts`, :class:`Moves` behind ``labels``).
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import Final, Generic, Protocol, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client import values as prometheus_values
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from microcall.errors import ConfigurationError

__all__ = [
    "CounterFamily",
    "CounterSeries",
    "Counts",
    "GaugeFamily",
    "GaugeSeries",
    "HistogramFamily",
    "HistogramSeries",
    "Labelled",
    "Moves",
    "Observes",
    "SeriesCollector",
    "multiprocess_mode",
]

# prometheus-client's own spelling of a bound in the ``le`` label ("0.005",
# "1.0", "+Inf"), so the buckets read exactly as its Histogram's.
_le_text: Final[Callable[[float], str]] = floatToGoString

# Bucket counts and a counter's or gauge's value are ints, a histogram's sum
# a float: both add the same way, and the scrape turns them into floats.
Cells = list[float]


class _Series:
    """One family's numbers for one set of label values, in per-thread shards."""

    __slots__ = ("_local", "_lock", "_retired", "_shards", "created", "values")

    def __init__(self, values: tuple[str, ...], lock: threading.Lock, size: int) -> None:
        self.values = values
        self.created = time.time()
        self._lock = lock
        self._local = threading.local()
        self._shards: list[tuple[threading.Thread, Cells]] = []
        self._retired: Cells = [0] * size

    def cells(self) -> Cells:
        """The calling thread's cells, for a caller that writes them itself.

        Only from that thread, and only as ``observe`` / ``inc`` / ``dec``
        would: a histogram's bucket (``bisect_left`` over ``bounds``) and its
        last cell, the sum; a counter's or gauge's first and only cell.
        """
        try:
            cells: Cells = self._local.cells
        except AttributeError:
            cells = self._shard()
        return cells

    def _shard(self) -> Cells:
        """The calling thread's cells, made and registered on its first observation."""
        cells: Cells = [0] * len(self._retired)
        thread = threading.current_thread()
        with self._lock:
            self._fold_ended()
            self._shards.append((thread, cells))
        self._local.cells = cells
        return cells

    def totals(self) -> Cells:
        """Every thread's cells summed, cell by cell."""
        with self._lock:
            self._fold_ended()
            totals = list(self._retired)
            for _, cells in self._shards:
                for index, value in enumerate(cells):
                    totals[index] += value
        return totals

    def _fold_ended(self) -> None:
        # Under the lock. A thread that has ended writes no more, so its
        # cells can be added up once and dropped.
        alive: list[tuple[threading.Thread, Cells]] = []
        retired = self._retired
        for thread, cells in self._shards:
            if thread.is_alive():
                alive.append((thread, cells))
            else:
                for index, value in enumerate(cells):
                    retired[index] += value
        self._shards = alive


class HistogramSeries(_Series):
    """One histogram series: ``observe(value)``."""

    __slots__ = ("bounds",)

    def __init__(
        self, values: tuple[str, ...], lock: threading.Lock, bounds: tuple[float, ...]
    ) -> None:
        # One count per bucket, then the sum.
        super().__init__(values, lock, len(bounds) + 1)
        self.bounds = bounds

    def observe(self, value: float) -> None:
        """Count ``value`` in its bucket and add it to the sum."""
        try:
            cells = self._local.cells
        except AttributeError:
            cells = self._shard()
        cells[bisect_left(self.bounds, value)] += 1
        cells[-1] += value


class CounterSeries(_Series):
    """One counter series: ``inc()``."""

    __slots__ = ()

    def __init__(self, values: tuple[str, ...], lock: threading.Lock) -> None:
        super().__init__(values, lock, 1)

    def inc(self) -> None:
        """Add one."""
        try:
            cells = self._local.cells
        except AttributeError:
            cells = self._shard()
        cells[0] += 1


class GaugeSeries(CounterSeries):
    """One gauge series moved by ``inc()`` and ``dec()``, from any threads."""

    __slots__ = ()

    def dec(self) -> None:
        """Take one away (perhaps on another thread than the ``inc``)."""
        try:
            cells = self._local.cells
        except AttributeError:
            cells = self._shard()
        cells[0] -= 1


S = TypeVar("S", bound=_Series)


class _Family(Generic[S]):
    """A metric family: its series by label values, made on first use."""

    __slots__ = ("_lock", "_series", "documentation", "labelnames", "name", "unit")

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.unit = unit_of(name)
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], S] = {}

    def labels(self, *values: str) -> S:
        """The series for ``values`` (one per label name, in order)."""
        series = self._series.get(values)
        if series is None:
            series = self._add(values)
        return series

    def _add(self, values: tuple[str, ...]) -> S:
        if len(values) != len(self.labelnames):
            raise ValueError(
                f"{self.name} takes {len(self.labelnames)} label values "
                f"{self.labelnames}, got {len(values)}"
            )
        with self._lock:
            series = self._series.get(values)
            if series is None:
                series = self._series[values] = self._new(values)
        return series

    def _new(self, values: tuple[str, ...]) -> S:
        raise NotImplementedError

    def _every(self) -> list[S]:
        with self._lock:  # a snapshot: other threads may add series meanwhile
            return list(self._series.values())

    def _labels_of(self, series: S) -> dict[str, str]:
        return dict(zip(self.labelnames, series.values, strict=True))

    def describe(self) -> list[Metric]:
        """The family without samples: what the registry needs to know its names."""
        raise NotImplementedError

    def collect(self) -> list[Metric]:
        """The family and every series' samples, as of now."""
        raise NotImplementedError


# The base units of the OpenMetrics and Prometheus naming rules that
# microcall's names end with; OpenMetrics output then carries ``# UNIT``.
_UNITS = ("seconds", "bytes")


def unit_of(name: str) -> str:
    """The unit a family's name ends with (``"seconds"`` for ``..._seconds``), or ``""``."""
    for unit in _UNITS:
        if name.endswith("_" + unit):
            return unit
    return ""


def upper_bounds(buckets: Sequence[float]) -> tuple[float, ...]:
    """A histogram's bucket bounds, checked, ending in +Inf."""
    bounds = [float(bound) for bound in buckets]
    if bounds and bounds[-1] != math.inf:
        bounds.append(math.inf)
    # Written so that a NaN, which compares false to everything, is refused too.
    if len(bounds) < 2 or not all(low < high for low, high in pairwise(bounds)):
        raise ConfigurationError(
            f"histogram buckets must be increasing numbers, at least one below +Inf, "
            f"got {tuple(buckets)!r}"
        )
    return tuple(bounds)


class HistogramFamily(_Family[HistogramSeries]):
    """A histogram family: ``family.labels(*values).observe(seconds)``."""

    __slots__ = ("_bounds", "_les")

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self._bounds = upper_bounds(buckets)
        self._les = tuple(_le_text(bound) for bound in self._bounds)

    def _new(self, values: tuple[str, ...]) -> HistogramSeries:
        return HistogramSeries(values, self._lock, self._bounds)

    def describe(self) -> list[Metric]:
        return [
            HistogramMetricFamily(
                self.name, self.documentation, labels=self.labelnames, unit=self.unit
            )
        ]

    def collect(self) -> list[Metric]:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit=self.unit
        )
        created = _created_samples()
        for series in self._every():
            totals = series.totals()
            buckets: list[tuple[str, float]] = []
            count = 0.0
            for le, in_bucket in zip(self._les, totals[:-1], strict=True):
                count += in_bucket
                buckets.append((le, count))
            family.add_metric(series.values, buckets, float(totals[-1]))
            if created:
                family.samples.append(
                    Sample(f"{self.name}_created", self._labels_of(series), series.created)
                )
        return [family]


class CounterFamily(_Family[CounterSeries]):
    """A counter family: ``family.labels(*values).inc()``; exposed as ``<name>_total``."""

    __slots__ = ()

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        # prometheus-client's habit: the family is named without ``_total``.
        super().__init__(name.removesuffix("_total"), documentation, labelnames)

    def _new(self, values: tuple[str, ...]) -> CounterSeries:
        return CounterSeries(values, self._lock)

    def describe(self) -> list[Metric]:
        return [
            CounterMetricFamily(
                self.name, self.documentation, labels=self.labelnames, unit=self.unit
            )
        ]

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit=self.unit
        )
        created = _created_samples()
        for series in self._every():
            [total] = series.totals()
            family.add_metric(series.values, float(total), series.created if created else None)
        return [family]


class GaugeFamily(_Family[GaugeSeries]):
    """A gauge family moved by ``inc()`` and ``dec()``: ``family.labels(*values).inc()``."""

    __slots__ = ()

    def _new(self, values: tuple[str, ...]) -> GaugeSeries:
        return GaugeSeries(values, self._lock)

    def describe(self) -> list[Metric]:
        return [
            GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames, unit=self.unit)
        ]

    def collect(self) -> list[Metric]:
        family = GaugeMetricFamily(
            self.name, self.documentation, labels=self.labelnames, unit=self.unit
        )
        for series in self._every():
            [total] = series.totals()
            family.add_metric(series.values, float(total))
        return [family]


def _created_samples() -> bool:
    """Whether prometheus-client emits ``_created`` samples now (they can be switched off)."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps its values in ``PROMETHEUS_MULTIPROC_DIR``'s files.

    prometheus-client chooses once, when it is imported, from the
    environment; its value class says what it chose.
    """
    return bool(getattr(prometheus_values.ValueClass, "_multiprocess", False))


class Observes(Protocol):
    """A histogram series."""

    def observe(self, amount: float, /) -> None: ...


class Counts(Protocol):
    """A counter series."""

    def inc(self) -> None: ...


class Moves(Counts, Protocol):
    """A gauge series that moves by one either way."""

    def dec(self) -> None: ...


T_co = TypeVar("T_co", covariant=True)


class Labelled(Protocol[T_co]):
    """A family: its series for a set of label values."""

    def labels(self, *values: str) -> T_co: ...


class _Part(Protocol):
    def describe(self) -> Iterable[Metric]: ...

    def collect(self) -> Iterable[Metric]: ...


P = TypeVar("P", bound=_Part)


class SeriesCollector:
    """A prometheus-client collector of sharded families (and of metrics that stay prometheus-client's).

    ::

        collector = SeriesCollector()
        duration = collector.histogram("work_seconds", "Work.", ("kind",), buckets=(0.1, 1.0))
        duration.labels("batch").observe(0.25)
        registry.register(collector)

    A prometheus-client metric built with ``registry=None`` and ``include``\\ d
    is scraped along with the families, in the order they were added, so the
    whole collector registers (and unregisters) as one.

    ``shared``: make prometheus-client's own metrics, whose values the
    worker processes share through files (default: when prometheus-client
    is in multiprocess mode).
    """

    __slots__ = ("_parts", "shared")

    def __init__(self, *, shared: bool | None = None) -> None:
        self._parts: list[_Part] = []
        self.shared = multiprocess_mode() if shared is None else shared

    def histogram(
        self, name: str, documentation: str, labelnames: Sequence[str], *, buckets: Sequence[float]
    ) -> Labelled[Observes]:
        """A new histogram family with these upper bounds (+Inf is added if missing)."""
        if self.shared:
            bounds = upper_bounds(buckets)
            return self.include(
                Histogram(
                    name,
                    documentation,
                    labelnames,
                    buckets=bounds,
                    registry=None,
                    unit=unit_of(name),
                )
            )
        return self.include(HistogramFamily(name, documentation, labelnames, buckets))

    def counter(self, name: str, documentation: str, labelnames: Sequence[str]) -> Labelled[Counts]:
        """A new counter family (``name`` without ``_total``, as prometheus-client takes it)."""
        if self.shared:
            return self.include(Counter(name, documentation, labelnames, registry=None))
        return self.include(CounterFamily(name, documentation, labelnames))

    def gauge(self, name: str, documentation: str, labelnames: Sequence[str]) -> Labelled[Moves]:
        """A new gauge family, moved by ``inc`` and ``dec``."""
        if self.shared:
            # The sum over the workers alive: a worker that died takes its
            # requests in flight with it.
            return self.include(
                Gauge(name, documentation, labelnames, registry=None, multiprocess_mode="livesum")
            )
        return self.include(GaugeFamily(name, documentation, labelnames))

    def include(self, part: P) -> P:
        """Scrape ``part`` (a family, or an unregistered prometheus-client metric) with the rest."""
        self._parts.append(part)
        return part

    def describe(self) -> list[Metric]:
        """Every family without samples (how a registry learns the names it must keep unique)."""
        return [metric for part in self._parts for metric in part.describe()]

    def collect(self) -> list[Metric]:
        """Every family with its samples, the sharded ones summed now."""
        return [metric for part in self._parts for metric in part.collect()]
