"""What a load run shows: the live view while it runs, the table and JSON at the end.

The generator's lag is shown next to the latencies, never folded into them
silently: open-loop latencies already count from when each call was due,
so a generator that starts calls late makes every latency worse, and the
lag says how much of that is the generator's own doing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from microcall.cli.load._generator import Plan
from microcall.cli.load._stats import QUANTILES, Stats

# An event loop 10 ms late starting calls is saturated: the generator, not
# the server, is then adding the latency (fast services answer in ~1 ms).
LAG_WARNING = 0.010
# The table fits 80 columns with these; the JSON has every one of QUANTILES.
TABLE_QUANTILES = (0.5, 0.99, 0.999)


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One strategy's run in a load test, and what it measured."""

    strategy: str
    stats: Stats


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def lag_warning(stats: Stats) -> str | None:
    """A sentence when the load itself held calls back (the generator, the connections), else None."""
    said = []
    lag = stats.quantile(0.99, of_lag=True)
    if lag is not None and lag > LAG_WARNING:
        said.append(
            f"the generator fell behind: it started 1% of calls more than {lag * 1000:.0f} ms "
            "late (their latency counts from when they were due); try --workers"
        )
    waited = stats.quantile(0.99, sketch=stats.waited)
    if waited is not None and waited > LAG_WARNING:
        said.append(
            f"the client's connections were the limit: 1% of calls waited more than "
            f"{waited * 1000:.0f} ms for one before going out (their latency counts that "
            "wait, and fewer calls went out than asked); try a larger --connections"
        )
    return "; ".join(said) or None


def asked(plan: Plan) -> str:
    if plan.rate is not None:
        return f"{plan.rate:g}/s asked"
    return f"{plan.concurrency} in flight"


class LiveView:
    """A rich view on stderr, redrawn as the run goes; nothing when stderr is not a terminal."""

    def __init__(self, plan: Plan, *, enabled: bool) -> None:
        self._plan = plan
        self._enabled = enabled
        self._live: Any = None
        self._label = ""
        self._started = 0.0

    def start(self, label: str) -> None:
        self._label = label
        self._started = time.monotonic()
        if not self._enabled:
            return
        import sys

        from rich.console import Console
        from rich.live import Live

        self._live = Live(console=Console(file=sys.stderr), auto_refresh=False, transient=True)
        self._live.start()

    def update(self, stats: Stats) -> None:
        if self._live is not None:
            self._live.update(self._render(stats), refresh=True)

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self, stats: Stats) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        # The run's own clock (workers start after spawning, not when the view did).
        elapsed = stats.elapsed or time.monotonic() - self._started
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("strategy", self._label)
        table.add_row(
            "time", f"{min(elapsed, self._plan.duration):.1f} / {self._plan.duration:g} s"
        )
        table.add_row("calls", f"{stats.calls:,} done, {stats.failed:,} failed")
        rate = stats.calls / elapsed if elapsed > 0 else 0.0
        table.add_row("rate", f"{rate:,.0f}/s done ({asked(self._plan)})")
        table.add_row(
            "latency ms",
            "  ".join(f"p{q * 100:g} {ms(stats.quantile(q))}" for q in (*QUANTILES[::2], 0.999)),
        )
        if stats.lag.count:
            table.add_row(
                "generator lag ms",
                f"p50 {ms(stats.quantile(0.5, of_lag=True))}  "
                f"p99 {ms(stats.quantile(0.99, of_lag=True))}",
            )
        if stats.errors:
            table.add_row(
                "errors",
                ", ".join(f"{kind} {count:,}" for kind, count in stats.errors.most_common(5)),
            )
        warning = lag_warning(stats)
        return Group(table, Text(warning, style="bold red")) if warning else table


def table(runs: Sequence[Run], plan: Plan, title: str) -> Any:
    """The end-of-run table: one row per strategy."""
    from rich import box
    from rich.table import Table

    result = Table(
        title=title,
        title_justify="left",
        caption="latencies in ms (p90 in --json); extra: requests beyond one per call; "
        "lag: how late the generator started calls, p99 in ms",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    headers = ["strategy", "calls", "rate/s", "failed"]
    headers += [f"p{q * 100:g}" for q in TABLE_QUANTILES] + ["max", "extra"]
    if plan.rate is not None:
        headers.append("lag")
    for number, header in enumerate(headers):
        result.add_column(header, justify="left" if number == 0 else "right", no_wrap=True)
    for run in runs:
        stats = run.stats
        row = [run.strategy, f"{stats.calls:,}", f"{stats.rate():,.0f}", f"{stats.failed:,}"]
        row += [ms(stats.quantile(q)) for q in TABLE_QUANTILES]
        row += [ms(stats.to_json()["latency"]["max"]), f"{stats.extra_load:.1%}"]
        if plan.rate is not None:
            row.append(ms(stats.quantile(0.99, of_lag=True)))
        result.add_row(*row)
    return result


def document(runs: Sequence[Run], plan: Plan, workers: int, url: str) -> dict[str, Any]:
    """The JSON report."""
    return {
        "url": url,
        "method": plan.method,
        "mode": "open" if plan.rate is not None else "closed",
        "rate": plan.rate,
        "concurrency": plan.concurrency,
        "duration": plan.duration,
        "workers": workers,
        "deadline": plan.deadline,
        "runs": [
            {"strategy": run.strategy, **run.stats.to_json(), "warning": lag_warning(run.stats)}
            for run in runs
        ],
    }
