"""What a load run measured, kept so that runs in several processes merge exactly.

Latencies go into DDSketches (relative accuracy 1%): a sketch of the whole
run, one per second of it (for the plot), and one of the generator's own
lag. Two sketches with the same accuracy merge into exactly the sketch of
all their values, so ``--workers N`` reports the percentiles of every call,
never an average of each worker's percentiles. Counts add up.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ddsketch import DDSketch

# 1%: p99 of 100 ms reads as 99-101 ms, finer than run-to-run noise, in a few KB per sketch.
RELATIVE_ACCURACY = 0.01
# Percentiles the table, the live view and the JSON report.
QUANTILES = (0.5, 0.9, 0.99, 0.999)


def _sketch() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


@dataclass(slots=True)
class Second:
    """One second of a run: the latencies of calls that ended in it, and its failures."""

    latency: DDSketch = field(default_factory=_sketch)
    errors: int = 0

    def merge(self, other: Second) -> None:
        self.latency.merge(other.latency)
        self.errors += other.errors


@dataclass(slots=True)
class Stats:
    """Everything one run (or one worker's share of it) measured.

    ``latency`` counts from when each call was due (open loop) or sent
    (closed loop) to its outcome. ``lag`` is how late the generator itself
    was to start calls (open loop only), and ``from_send`` the latency
    counted from when each call really started: what the server and the
    network took, the generator's lag left out (the two agree in a closed
    loop, and in an open loop whose generator kept up). ``waited`` is how
    long calls waited in the client for one of its connections before their
    first request went out (``--connections``). ``attempts`` counts requests sent,
    retries and hedges included, so ``attempts / calls - 1`` is the extra
    load a strategy added. ``errors`` counts failed calls by kind
    (``"HTTP 503"``, ``"ConnectError"``). ``elapsed`` runs to the last
    outcome, ``window`` is the duration asked for (or run, when it was cut
    short), ``sent_until`` when the last call's first request really went out
    (past ``window`` when the generator or the connections fell behind).
    ``latency_max`` is the largest latency exactly (a sketch's top bin is
    within 1% of it, and could read below the mean). ``began`` is when the
    run started, on this process's monotonic clock.
    """

    latency: DDSketch = field(default_factory=_sketch)
    lag: DDSketch = field(default_factory=_sketch)
    from_send: DDSketch = field(default_factory=_sketch)
    waited: DDSketch = field(default_factory=_sketch)
    latency_max: float = 0.0
    calls: int = 0
    ok: int = 0
    attempts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    seconds: dict[int, Second] = field(default_factory=dict)
    elapsed: float = 0.0
    window: float = 0.0
    sent_until: float = 0.0
    began: float = 0.0

    def record(
        self,
        at: float,
        latency: float,
        error: str | None,
        attempts: int,
        from_send: float | None = None,
        waited: float | None = None,
    ) -> None:
        """A call ended ``at`` seconds into the run after ``latency`` seconds.

        ``from_send``: since its first request went out; ``waited``: how long
        it waited for a connection before that (None: it never went out).
        """
        self.calls += 1
        self.attempts += attempts
        self.latency.add(latency)
        self.latency_max = max(self.latency_max, latency)
        self.from_send.add(latency if from_send is None else from_send)
        if waited is not None:
            self.waited.add(waited)
        second = self.seconds.get(int(at))
        if second is None:
            second = self.seconds[int(at)] = Second()
        second.latency.add(latency)
        if error is None:
            self.ok += 1
        else:
            self.errors[error] += 1
            second.errors += 1

    def merge(self, other: Stats) -> None:
        """Add ``other``'s calls to these (exactly: sketches merge bin by bin)."""
        self.latency.merge(other.latency)
        self.lag.merge(other.lag)
        self.from_send.merge(other.from_send)
        self.waited.merge(other.waited)
        self.latency_max = max(self.latency_max, other.latency_max)
        self.calls += other.calls
        self.ok += other.ok
        self.attempts += other.attempts
        self.errors.update(other.errors)
        for number, second in other.seconds.items():
            self.seconds.setdefault(number, Second()).merge(second)
        self.elapsed = max(self.elapsed, other.elapsed)
        self.window = max(self.window, other.window)
        self.sent_until = max(self.sent_until, other.sent_until)

    def cut_short(self, now: float) -> None:
        """The run was stopped at ``now`` (monotonic): its window is the time it really ran."""
        if self.began:
            self.window = min(self.window, now - self.began)

    def without_seconds(self) -> Stats:
        """These figures but not the per-second ones: a light progress report for the live view."""
        return dataclasses.replace(self, seconds={})

    def quantile(
        self, q: float, *, of_lag: bool = False, sketch: DDSketch | None = None
    ) -> float | None:
        """A percentile in seconds (None before any value) of the latency, the lag, or ``sketch``."""
        if sketch is None:
            sketch = self.lag if of_lag else self.latency
        if sketch.count == 0:
            return None
        value = sketch.get_quantile_value(q)
        return None if value is None else max(0.0, float(value))

    @property
    def failed(self) -> int:
        return self.calls - self.ok

    @property
    def extra_load(self) -> float:
        """Requests sent beyond one per call, as a fraction of calls."""
        return self.attempts / self.calls - 1.0 if self.calls else 0.0

    def rate(self) -> float:
        """Calls sent per second: over the duration asked, or longer if sending ran late."""
        span = max(self.window, self.sent_until)
        return self.calls / span if span > 0 else 0.0

    def throughput(self) -> float:
        """Successful calls per second, up to the last outcome (vegeta's throughput)."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (seconds throughout)."""
        return {
            "calls": self.calls,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors.most_common()),
            "attempts": self.attempts,
            "extra_load": self.extra_load,
            "seconds": self.elapsed,
            "achieved_rate": self.rate(),
            "throughput": self.throughput(),
            "latency": {
                **{f"p{q * 100:g}": self.quantile(q) for q in QUANTILES},
                "max": self.latency_max if self.latency.count else None,
                "mean": self.latency.avg if self.latency.count else None,
            },
            "latency_from_send": {
                f"p{q * 100:g}": self.quantile(q, sketch=self.from_send) for q in QUANTILES
            },
            "connection_wait": None
            if self.waited.count == 0
            else {
                "p50": self.quantile(0.5, sketch=self.waited),
                "p99": self.quantile(0.99, sketch=self.waited),
                "max": _max(self.waited),
            },
            "generator_lag": None
            if self.lag.count == 0
            else {
                "p50": self.quantile(0.5, of_lag=True),
                "p99": self.quantile(0.99, of_lag=True),
                "max": _max(self.lag),
            },
        }


def _max(sketch: DDSketch) -> float | None:
    # The sketch's top bin: the largest value, to the sketch's relative accuracy.
    value = sketch.get_quantile_value(1.0) if sketch.count else None
    return None if value is None else float(value)
