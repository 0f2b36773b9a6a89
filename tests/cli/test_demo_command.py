"""``microcall demo``: progress per strategy, ``--json``, ``--url`` at one's own service."""

from __future__ import annotations

from microcall.demo.tail import STRATEGIES
from tests.cli.conftest import Run, one_line_error


def test_demo_json_and_progress(run: Run) -> None:
    ran = run("demo", "--requests", "40", "--concurrency", "4", "--seed", "3", "--json")
    assert ran.status == 0
    document = ran.json()
    assert document["load_counted_by"] == "server"
    assert [row["strategy"] for row in document["strategies"]] == [s for s, _ in STRATEGIES]
    for row in document["strategies"]:
        assert row["calls"] == 40
        assert row["requests_received"] >= 40
        assert 0 < row["p50"] <= row["p99"] <= row["p999"]
    # Progress, one line per strategy when stderr is not a terminal, on stderr only.
    for label, _ in STRATEGIES:
        assert f"{label}: 40 calls done" in ran.err


def test_demo_against_a_url(run: Run, service: str) -> None:
    ran = run("demo", "--requests", "30", "--url", f"{service}/tail", "--json")
    assert ran.status == 0
    document = ran.json()
    assert document["target"] == f"{service}/tail"
    assert document["load_counted_by"] == "client"
    single, _retried, hedged, _learned = document["strategies"]
    assert single["requests_received"] == 30
    assert single["extra_load"] == 0.0
    # One call in five takes 100 ms, past the 10 ms hedge delay.
    assert hedged["requests_received"] > 30


def test_demo_table_against_a_url(run: Run, service: str) -> None:
    ran = run("demo", "--requests", "10", "--url", f"{service}/echo")
    assert ran.status == 0
    assert "p99.9 ms" in ran.out


def test_demo_against_nothing(run: Run, unused_port: int) -> None:
    ran = run("demo", "--requests", "2", "--url", f"http://127.0.0.1:{unused_port}/")
    assert ran.status == 6
    assert "no call" in ran.err
    assert "Traceback" not in ran.err


def test_demo_bad_url(run: Run) -> None:
    ran = run("demo", "--url", "http://")
    assert ran.status == 2
    assert one_line_error(ran)
