"""``--plot FILE.html``: latency over time and the percentile distribution, as one HTML page.

The page is self-contained (inline SVG, no script, nothing fetched), so it
opens anywhere and can be attached to a ticket. Two charts, after vegeta's
plot and HdrHistogram's percentile chart:

* latency over time: each second's p50 (dashed) and p99 (solid), one colour
  per strategy, on a log scale so a 500 ms tail and 2 ms answers both show;
* percentile distribution: latency against percentile, the x axis spread as
  ``1 / (1 - q)`` on a log scale so 99%, 99.9% and 99.99% get equal room.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from microcall.cli.load._report import Run

WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 20, 20, 40
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
# Points of the percentile curve: 0 .. 99.99% spaced evenly in log(1 / (1 - q)).
PERCENTILE_STEPS = 80
MAX_NINES = 4


def write(path: Path, runs: Sequence[Run], *, title: str) -> None:
    """Write the page for ``runs`` to ``path``."""
    body = "\n".join(
        [
            f"<h1>{html.escape(title)}</h1>",
            _legend(runs),
            "<h2>Latency over time (ms, log scale)</h2>",
            _over_time(runs),
            "<h2>Latency by percentile (ms)</h2>",
            _by_percentile(runs),
        ]
    )
    path.write_text(
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;color:#222}"
        "svg text{font-size:11px;fill:#444}h2{font-size:1.1em}</style>"
        f"</head><body>\n{body}\n</body></html>\n",
        encoding="utf-8",
    )


def _legend(runs: Sequence[Run]) -> str:
    items = []
    for number, run in enumerate(runs):
        colour = COLOURS[number % len(COLOURS)]
        items.append(
            f"<span style='color:{colour};margin-right:2em'>&#9632; {html.escape(run.strategy)}"
            f" ({run.stats.calls:,} calls, {run.stats.failed:,} failed)</span>"
        )
    return "<p>" + "".join(items) + "</p>"


def _svg(content: list[str]) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{WIDTH}' height='{HEIGHT}' "
        f"viewBox='0 0 {WIDTH} {HEIGHT}'>" + "".join(content) + "</svg>"
    )


def _axes(content: list[str]) -> None:
    content.append(
        f"<line x1='{LEFT}' y1='{HEIGHT - BOTTOM}' x2='{WIDTH - RIGHT}' y2='{HEIGHT - BOTTOM}' stroke='#888'/>"
        f"<line x1='{LEFT}' y1='{TOP}' x2='{LEFT}' y2='{HEIGHT - BOTTOM}' stroke='#888'/>"
    )


def _polyline(points: list[tuple[float, float]], colour: str, dashed: bool = False) -> str:
    if not points:
        return ""
    text = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash = " stroke-dasharray='4 3'" if dashed else ""
    return f"<polyline fill='none' stroke='{colour}' stroke-width='1.5'{dash} points='{text}'/>"


def _over_time(runs: Sequence[Run]) -> str:
    series: list[tuple[str, bool, list[tuple[float, float]]]] = []
    for number, run in enumerate(runs):
        colour = COLOURS[number % len(COLOURS)]
        for q, dashed in ((0.5, True), (0.99, False)):
            points = []
            for second in sorted(run.stats.seconds):
                value = run.stats.seconds[second].latency.get_quantile_value(q)
                if value is not None and value > 0:
                    points.append((second + 0.5, value * 1000))
            series.append((colour, dashed, points))
    values = [y for _, _, points in series for _, y in points]
    seconds = [x for _, _, points in series for x, _ in points]
    content: list[str] = []
    _axes(content)
    if not values:
        return _svg([*content, "<text x='100' y='100'>no calls</text>"])
    low, high = math.log10(min(values)), math.log10(max(values))
    if high - low < 1:
        low, high = low - 0.5, high + 0.5
    span_x = max(max(seconds), 1.0)

    def at(x: float, y: float) -> tuple[float, float]:
        px = LEFT + x / span_x * (WIDTH - LEFT - RIGHT)
        py = HEIGHT - BOTTOM - (math.log10(y) - low) / (high - low) * (HEIGHT - TOP - BOTTOM)
        return px, py

    for exponent in range(math.floor(low), math.ceil(high) + 1):
        value = 10.0**exponent
        if not (low <= exponent <= high):
            continue
        _, y = at(0, value)
        content.append(
            f"<line x1='{LEFT}' y1='{y:.1f}' x2='{WIDTH - RIGHT}' y2='{y:.1f}' stroke='#eee'/>"
            f"<text x='{LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{value:g}</text>"
        )
    for tick in range(0, int(span_x) + 1, max(1, int(span_x) // 10)):
        x, _ = at(tick, 10.0**low)
        content.append(
            f"<text x='{x:.1f}' y='{HEIGHT - BOTTOM + 16}' text-anchor='middle'>{tick}s</text>"
        )
    for colour, dashed, points in series:
        content.append(_polyline([at(x, y) for x, y in points], colour, dashed))
    content.append(
        f"<text x='{WIDTH - RIGHT}' y='{TOP + 10}' text-anchor='end'>solid p99, dashed p50</text>"
    )
    return _svg(content)


def _by_percentile(runs: Sequence[Run]) -> str:
    curves: list[tuple[str, list[tuple[float, float]]]] = []
    for number, run in enumerate(runs):
        points = []
        for step in range(PERCENTILE_STEPS + 1):
            nines = step / PERCENTILE_STEPS * MAX_NINES  # q = 1 - 10**-nines
            value = run.stats.quantile(1 - 10**-nines)
            if value is not None:
                points.append((nines, value * 1000))
        curves.append((COLOURS[number % len(COLOURS)], points))
    values = [y for _, points in curves for _, y in points]
    content: list[str] = []
    _axes(content)
    if not values:
        return _svg([*content, "<text x='100' y='100'>no calls</text>"])
    high = max(values) * 1.05 or 1.0

    def at(nines: float, y: float) -> tuple[float, float]:
        px = LEFT + nines / MAX_NINES * (WIDTH - LEFT - RIGHT)
        py = HEIGHT - BOTTOM - y / high * (HEIGHT - TOP - BOTTOM)
        return px, py

    for nines, label in enumerate(("0%", "90%", "99%", "99.9%", "99.99%")):
        x, _ = at(nines, 0)
        content.append(
            f"<line x1='{x:.1f}' y1='{TOP}' x2='{x:.1f}' y2='{HEIGHT - BOTTOM}' stroke='#eee'/>"
            f"<text x='{x:.1f}' y='{HEIGHT - BOTTOM + 16}' text-anchor='middle'>{label}</text>"
        )
    for fraction in (0.25, 0.5, 0.75, 1.0):
        _, y = at(0, high * fraction)
        content.append(
            f"<text x='{LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{high * fraction:.3g}</text>"
        )
    for colour, points in curves:
        content.append(_polyline([at(x, y) for x, y in points], colour))
    return _svg(content)
