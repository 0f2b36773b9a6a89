"""Printing the tail scenario's rows: a rich table when rich is installed, plain text otherwise."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from microcall.demo.tail import Row

HEADERS = ("strategy", "p50 ms", "p99 ms", "p99.9 ms", "extra load", "calls failed")

# Wide enough for the table on one line per row when the output is not a
# terminal (rich would assume 80 columns and wrap the strategy names).
PIPE_WIDTH = 120

EXPLANATION = (
    "p50 / p99 / p99.9: how long callers waited for half, 99% and 99.9% of the calls; "
    "extra load: requests the backend received beyond one per call.",
    "Retries cut the slow tail, but a slow call first waits out the attempt timeout and a backoff; "
    "a hedge sends a second copy as soon as the first is slower than usual, "
    "so the tail shrinks further for a small extra load.",
)


def cells(row: Row) -> tuple[str, ...]:
    """One row as the table's text cells."""
    return (
        row.strategy,
        f"{row.p50 * 1000:.1f}",
        f"{row.p99 * 1000:.1f}",
        f"{row.p999 * 1000:.1f}",
        f"{row.extra_load:.1%}",
        str(row.failed),
    )


def render_plain(rows: Sequence[Row]) -> str:
    """The table as aligned plain text: strategy left-aligned, numbers right-aligned."""
    lines = [HEADERS, *(cells(row) for row in rows)]
    widths = [max(len(line[column]) for line in lines) for column in range(len(HEADERS))]
    return "\n".join(
        "  ".join(
            text.ljust(width) if column == 0 else text.rjust(width)
            for column, (text, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    )


def print_table(
    rows: Sequence[Row], *, title: str, out: TextIO, console: Any | None = None
) -> None:
    """Print ``rows`` under ``title``, then the explanation (on ``console``, a rich Console, if given)."""
    try:
        from rich import box
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich comes with the [demo] extra; plain text does without it
        print(title, file=out)
        print(render_plain(rows), file=out)
    else:
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
        for column, header in enumerate(HEADERS):
            table.add_column(header, justify="left" if column == 0 else "right")
        for row in rows:
            table.add_row(*cells(row))
        if console is None:
            console = Console(file=out, width=None if out.isatty() else PIPE_WIDTH)
        console.print(table)
    for line in EXPLANATION:
        print(line, file=out)
