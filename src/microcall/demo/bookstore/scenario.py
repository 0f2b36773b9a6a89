"""The scripted scenario of ``make demo``: the bookstore under four phases of faults.

The whole bookstore starts as processes on 127.0.0.1, with two Marketplaces
in front of the same services: one with microcall's policies, one with a
plain client (one attempt, round robin, no breaker, no cache). Both get the
same offered load, page after page at a fixed rate, through four phases:

1. normal;
2. a slow Recommendations replica (+300 ms on every call);
3. that replica dead (it exits);
4. the Catalog failing (every request answered 503).

For each phase it prints what the Marketplace's users saw (p50, p99, errors:
a page that failed or lacked details), and writes an HTML report with plots
(inline SVG, nothing fetched).
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from microcall.demo.bookstore.stack import Stack
from microcall.testing.services import inject

# Offered load per Marketplace: enough pages for a p99 per phase, little
# enough that two Marketplaces and five services fit on two cores.
DEFAULT_RATE = 20.0
DEFAULT_PHASE_SECONDS = 6.0
SLOW_REPLICA_LATENCY = 0.3
# A request the load driver gives up on counts as an error.
DRIVER_TIMEOUT = 3.0


@dataclass(slots=True)
class Sample:
    """One page load: when it started (seconds into the phase), how long it took, whether it was good."""

    at: float
    seconds: float
    ok: bool


@dataclass(slots=True)
class PhaseResult:
    """What the users of one Marketplace saw in one phase."""

    phase: str
    mode: str
    samples: list[Sample] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        """The ``q`` quantile of page latency, in seconds (nearest rank)."""
        values = sorted(sample.seconds for sample in self.samples)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]

    @property
    def errors(self) -> int:
        """Pages that failed, lacked details or did not come in time."""
        return sum(not sample.ok for sample in self.samples)

    def row(self) -> dict[str, float | int | str]:
        """The phase's figures as a table row."""
        return {
            "phase": self.phase,
            "mode": self.mode,
            "pages": len(self.samples),
            "p50_ms": round(self.percentile(0.5) * 1000, 1),
            "p99_ms": round(self.percentile(0.99) * 1000, 1),
            "errors": self.errors,
        }


async def _one(session: aiohttp.ClientSession, url: str, started: float, into: PhaseResult) -> None:
    begin = time.perf_counter()
    ok = False
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=DRIVER_TIMEOUT)) as reply:
            body = await reply.read()
            if reply.status == 200:
                page = json.loads(body)
                ok = not page.get("degraded") and bool(page.get("books"))
    except (TimeoutError, aiohttp.ClientError, ValueError):
        ok = False
    into.samples.append(Sample(begin - started, time.perf_counter() - begin, ok))


async def drive(
    targets: dict[str, str], phase: str, seconds: float, rate: float
) -> list[PhaseResult]:
    """Offer ``rate`` pages a second to each Marketplace in ``targets`` for ``seconds``."""
    results = {mode: PhaseResult(phase, mode) for mode in targets}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks: list[asyncio.Task[None]] = []
        started = time.perf_counter()
        count = int(seconds * rate)
        for index in range(count):
            due = started + index / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            for mode, base in targets.items():
                url = f"{base}/api/page?user={index % 50}&category={_CATEGORIES[index % 3]}"
                tasks.append(asyncio.create_task(_one(session, url, started, results[mode])))
        await asyncio.gather(*tasks)
    return list(results.values())


_CATEGORIES = ("MYSTERY", "SCIENCE_FICTION", "SELF_HELP")


@dataclass(frozen=True, slots=True)
class Phase:
    """A phase: its name and the faults switched on as it starts."""

    name: str
    start: Callable[[Stack], None]


def _normal(stack: Stack) -> None:
    pass


def _slow_replica(stack: Stack) -> None:
    inject(stack.admin("recommendations-1"), latency=SLOW_REPLICA_LATENCY)


def _dead_replica(stack: Stack) -> None:
    inject(stack.admin("recommendations-1"), kill=True)
    process = stack.replicas[0].process
    if process is not None:
        process.wait(5)


def _catalog_failing(stack: Stack) -> None:
    inject(stack.admin("catalog"), error_rate=1.0)


PHASES: tuple[Phase, ...] = (
    Phase("normal", _normal),
    Phase("slow replica", _slow_replica),
    Phase("dead replica", _dead_replica),
    Phase("catalog failing", _catalog_failing),
)


async def _warm_up(targets: dict[str, str]) -> None:
    """A few pages each, so connections are open and the learned hedge delay has samples."""
    await drive(targets, "warm-up", 2.0, 10.0)


def run(
    stack: Stack,
    *,
    phase_seconds: float = DEFAULT_PHASE_SECONDS,
    rate: float = DEFAULT_RATE,
    phases: Sequence[Phase] = PHASES,
    echo: Callable[[str], None] = print,
) -> list[PhaseResult]:
    """Run the phases against a started stack (with its plain Marketplace); the results, in order."""
    assert stack.plain is not None, "the scenario compares against a plain Marketplace"
    targets = {"microcall": stack.marketplace, "plain": stack.plain}
    asyncio.run(_warm_up(targets))
    results: list[PhaseResult] = []
    for phase in phases:
        phase.start(stack)
        phase_results = asyncio.run(drive(targets, phase.name, phase_seconds, rate))
        results.extend(phase_results)
        for result in phase_results:
            echo(format_row(result.row()))
    return results


def format_row(row: dict[str, float | int | str]) -> str:
    """One line of the printed table."""
    return (
        f"{row['phase']:<16} {row['mode']:<10} pages {row['pages']:>4}   "
        f"p50 {row['p50_ms']:>7.1f} ms   p99 {row['p99_ms']:>7.1f} ms   errors {row['errors']:>4}"
    )


HEADER = f"{'phase':<16} {'client':<10} what the Marketplace's users saw"

_COLOURS = {"microcall": "#2a7", "plain": "#c33"}


def _bars_svg(results: list[PhaseResult], key: str, title: str) -> str:
    rows = [result.row() for result in results]
    phases = list(dict.fromkeys(str(row["phase"]) for row in rows))
    top = max(float(row[key]) for row in rows) * 1.15 or 1.0
    width, height, pad = 720, 240, 40
    group = (width - pad) / len(phases)
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    parts.append(f'<text x="{pad}" y="14" font-size="13">{html.escape(title)}</text>')
    for index, phase in enumerate(phases):
        for offset, row in enumerate(r for r in rows if r["phase"] == phase):
            value = float(row[key])
            bar = (height - 2 * pad) * value / top
            x = pad + index * group + 10 + offset * (group / 2 - 10)
            y = height - pad - bar
            colour = _COLOURS.get(str(row["mode"]), "#888")
            parts.append(
                f'<rect x="{x:.0f}" y="{y:.0f}" width="{group / 2 - 14:.0f}" height="{bar:.0f}"'
                f' fill="{colour}"/><text x="{x:.0f}" y="{y - 3:.0f}" font-size="10">{value:g}</text>'
            )
        parts.append(
            f'<text x="{pad + index * group + 10:.0f}" y="{height - pad + 15}" font-size="11">'
            f"{html.escape(phase)}</text>"
        )
    parts.append(
        f'<line x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#999"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _timeline_svg(results: list[PhaseResult]) -> str:
    width, height, pad = 720, 260, 40
    phases = list(dict.fromkeys(result.phase for result in results))
    length = max((s.at for r in results for s in r.samples), default=1.0) + 0.5
    top = max((s.seconds for r in results for s in r.samples), default=0.1) * 1.1
    span = (width - pad) / len(phases)
    parts = [f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    parts.append(f'<text x="{pad}" y="14" font-size="13">every page: latency (ms) over time</text>')
    for result in results:
        index = phases.index(result.phase)
        colour = _COLOURS.get(result.mode, "#888")
        for sample in result.samples:
            x = pad + index * span + span * sample.at / length
            y = height - pad - (height - 2 * pad) * sample.seconds / top
            shape = "circle" if sample.ok else "rect"
            if shape == "circle":
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="{colour}"/>')
            else:
                parts.append(
                    f'<rect x="{x - 2:.1f}" y="{y - 2:.1f}" width="4" height="4" fill="#f80"/>'
                )
    for index, phase in enumerate(phases):
        parts.append(
            f'<text x="{pad + index * span + 4:.0f}" y="{height - pad + 15}" font-size="11">'
            f"{html.escape(phase)}</text>"
        )
    parts.append(f'<text x="2" y="{pad}" font-size="10">{top * 1000:.0f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(results: list[PhaseResult], path: Path) -> Path:
    """A self-contained HTML report: the table and three plots."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in result.row().values()) + "</tr>"
        for result in results
    )
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Bookstore scenario</title><style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }} td, th {{ border: 1px solid #ddd;
padding: 0.2em 0.6em; }} table {{ border-collapse: collapse; }}</style></head><body>
<h1>The bookstore under faults</h1>
<p>Two Marketplaces in front of the same services: <span style="color:#2a7">microcall</span>
(hedged and balanced gRPC, breakers, ejection, a cache serving stale) and
<span style="color:#c33">plain</span> (one attempt, round robin, no cache). Orange squares are
pages that failed or lacked details.</p>
<table><tr><th>phase</th><th>client</th><th>pages</th><th>p50 ms</th><th>p99 ms</th>
<th>errors</th></tr>{rows}</table>
{_bars_svg(results, "p99_ms", "p99 page latency (ms) per phase")}
{_bars_svg(results, "errors", "pages with errors per phase")}
{_timeline_svg(results)}
</body></html>"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return path
