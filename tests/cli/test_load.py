"""``microcall load``: short runs against a real service; the figures' invariants, not speeds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from rich.console import Console

from microcall.cli.load._generator import Plan
from microcall.cli.load._report import LAG_WARNING, LiveView, lag_warning
from microcall.cli.load._stats import Stats
from microcall.cli.load._workers import merge
from tests.cli.conftest import Run, one_line_error


def test_open_loop_sends_every_scheduled_call(run: Run, service: str) -> None:
    ran = run("load", f"{service}/echo", "--rate", "100", "--duration", "1", "--json")
    assert ran.status == 0
    document = ran.json()
    assert document["mode"] == "open"
    (result,) = document["runs"]
    # The schedule is fixed: rate x duration calls, however late the generator ran.
    assert result["calls"] == 100
    assert result["ok"] == 100
    assert result["extra_load"] == 0.0
    latency = result["latency"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["p99.9"]
    assert latency["p99.9"] <= latency["max"] * 1.02
    assert result["generator_lag"]["p50"] >= 0
    assert result["achieved_rate"] > 0


def test_open_loop_counts_latency_from_when_calls_were_due(run: Run, service: str) -> None:
    # One connection, 200 ms per call, 10 calls a second for half a second: the
    # five calls queue behind each other. A closed-loop tool would report 200 ms
    # each; from when they were due, the last waited about 0.6 s.
    ran = run(
        "load",
        f"{service}/sleep/0.2",
        "--rate",
        "10",
        "--duration",
        "0.5",
        "--connections",
        "1",
        "--json",
    )
    assert ran.status == 0
    (result,) = ran.json()["runs"]
    assert result["calls"] == 5
    assert result["latency"]["max"] >= 0.5
    # The client's one connection held them back, and the report says so:
    # call i waited 0.1 i s for it, the last went out about 0.8 s in (so
    # fewer than 10 a second went out), and the server's own time stays 0.2 s.
    assert result["connection_wait"]["max"] >= 0.3
    assert result["latency_from_send"]["p50"] < 0.4
    assert result["achieved_rate"] < 8
    assert "connections were the limit" in result["warning"]


def test_closed_loop_keeps_calls_in_flight(run: Run, service: str) -> None:
    ran = run("load", f"{service}/echo", "-c", "4", "-d", "0.5", "--json")
    assert ran.status == 0
    document = ran.json()
    assert document["mode"] == "closed"
    assert document["concurrency"] == 4
    (result,) = document["runs"]
    assert result["calls"] >= 4
    assert result["generator_lag"] is None


def test_compare_shows_the_extra_load_of_each_strategy(run: Run, service: str) -> None:
    ran = run(
        "load",
        f"{service}/tail",
        "--rate",
        "100",
        "-d",
        "1",
        "--compare",
        "single,hedged:0.02",
        "--json",
    )
    assert ran.status == 0
    single, hedged = ran.json()["runs"]
    assert (single["strategy"], hedged["strategy"]) == ("single", "hedged:0.02")
    assert single["extra_load"] == 0.0
    # One call in five takes 100 ms: each of those sends a hedge at 20 ms.
    assert hedged["extra_load"] > 0
    assert hedged["attempts"] > hedged["calls"]


def test_table_for_people(run: Run, service: str, tmp_path: Path) -> None:
    plot = tmp_path / "load.html"
    ran = run(
        "load",
        f"{service}/status/503",
        "--rate",
        "50",
        "-d",
        "0.4",
        "--compare",
        "single,retry:2",
        "--pretty",
        "--plot",
        str(plot),
    )
    # Every call failed: the status says so, after the table.
    assert ran.status == 6
    assert "no call" in ran.err
    ran = run(
        "load", f"{service}/echo", "--rate", "50", "-d", "0.4", "--pretty", "--plot", str(plot)
    )
    assert ran.status == 0
    for column in ("strategy", "calls", "rate/s", "p99", "p99.9", "extra", "lag", "in ms"):
        assert column in ran.out
    assert f"plot written to {plot}" in ran.out
    page = plot.read_text()
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 2
    assert "<script" not in page
    assert "src=" not in page


def test_workers_merge_into_one_result(run: Run, service: str) -> None:
    ran = run("load", f"{service}/echo", "--rate", "100", "-d", "1", "--workers", "2", "--json")
    assert ran.status == 0
    document = ran.json()
    assert document["workers"] == 2
    (result,) = document["runs"]
    # Two workers each sent half of the one schedule.
    assert result["calls"] == 100
    assert result["ok"] == 100


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--rate", "0"], "--rate"),
        (["--rate", "-5"], "--rate"),
        (["--rate", "nan"], "--rate"),
        (["--duration", "0"], "--duration"),
        (["--rate", "5", "-c", "2"], "not allowed with"),
        (["--compare", "single,bogus"], "unknown strategy"),
        (["--workers", "0"], "--workers"),
        (["--plot", "chart.svg"], "HTML"),
        (["-c", "1", "--workers", "2"], "--concurrency"),
    ],
)
def test_bad_load_options(run: Run, argv: list[str], says: str) -> None:
    ran = run("load", "http://127.0.0.1:1/", *argv)
    assert ran.status == 2
    assert one_line_error(ran), ran.err
    assert says in ran.err


def test_unreachable_target(run: Run, unused_port: int) -> None:
    ran = run("load", f"http://127.0.0.1:{unused_port}/", "--rate", "20", "-d", "0.2", "--json")
    assert ran.status == 6
    assert one_line_error(ran)
    assert "ConnectError" in ran.err
    # The report is written all the same: when nothing succeeds its errors matter most.
    (result,) = ran.json()["runs"]
    assert result["ok"] == 0
    assert result["errors"] == {"ConnectError": result["calls"]}


def test_an_interrupted_run_counts_its_rate_over_the_time_it_ran() -> None:
    stats = Stats(window=10.0, began=100.0)
    for number in range(30):
        stats.record(number / 10, 0.01, None, 1)
    stats.cut_short(103.0)  # Ctrl-C three seconds into a ten-second run
    assert stats.rate() == pytest.approx(10.0)


def test_the_largest_latency_is_exact_never_below_the_mean() -> None:
    stats = Stats()
    for value in (0.50154, 0.5031, 0.5027, 0.5024):
        stats.record(0.0, value, None, 1)
    latency = stats.to_json()["latency"]
    assert latency["max"] == 0.5031
    assert latency["max"] >= latency["mean"]


def test_sketches_merge_exactly() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-5, 1.5) for _ in range(5000)]
    whole = Stats()
    parts = [Stats(), Stats(), Stats()]
    for number, value in enumerate(values):
        whole.record(number / 1000, value, None if number % 10 else "HTTP 503", 1)
        parts[number % 3].record(number / 1000, value, None if number % 10 else "HTTP 503", 1)
    merged = merge(parts)
    assert merged.calls == whole.calls == 5000
    assert merged.errors == whole.errors
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        assert merged.quantile(q) == whole.quantile(q)
    assert set(merged.seconds) == set(whole.seconds)
    # And to the sketch's accuracy (1%), the exact percentile.
    ordered = sorted(values)
    assert merged.quantile(0.99) == pytest.approx(ordered[int(0.99 * 5000) - 1], rel=0.021)


def test_live_view_shows_lag_and_warns_when_the_generator_falls_behind() -> None:
    plan = Plan(method="GET", bases=("http://127.0.0.1:1",), path="/", rate=100.0, duration=1.0)
    stats = Stats()
    for _ in range(100):
        stats.record(0.5, 0.004, None, 1)
        stats.lag.add(LAG_WARNING * 3)
    stats.record(0.6, 1.0, "ConnectError", 1)
    assert lag_warning(stats) is not None
    view = LiveView(plan, enabled=False)
    view.start("single")
    console = Console(record=True, width=200)
    console.print(view._render(stats))
    text = console.export_text()
    assert "generator lag ms" in text
    assert "ConnectError 1" in text
    assert "fell behind" in text
    fine = Stats()
    fine.lag.add(0.0001)
    assert lag_warning(fine) is None
