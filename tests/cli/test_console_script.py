"""The ``microcall`` console script in a real process: broken pipes and exit statuses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web

from tests.cli.conftest import Start

SCRIPT = Path(sys.executable).with_name("microcall")

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="microcall is not installed here")


def shell(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("output", ["--json", "--pretty"])
def test_a_closed_pipe_ends_quietly(service: str, output: str) -> None:
    # 2 MB of body: far more than a pipe holds, so writing it fails mid-way
    # (or, if the kernel took a single large write whole before the reader
    # left, succeeds: either way nothing is printed but the 10 bytes).
    done = shell(f"{SCRIPT} get {service}/big {output} | head -c 10")
    assert len(done.stdout) == 10
    assert done.stderr == ""
    assert done.returncode in (0, 141)
    if output == "--pretty":  # printed line by line: a later line meets the closed pipe
        assert done.returncode == 141


def test_exit_statuses_reach_the_shell(service: str, unused_port: int) -> None:
    assert shell(f"{SCRIPT} get {service}/status/200 > /dev/null").returncode == 0
    assert shell(f"{SCRIPT} get {service}/status/404 > /dev/null").returncode == 4
    assert shell(f"{SCRIPT} get {service}/status/500 > /dev/null").returncode == 5
    unreachable = shell(f"{SCRIPT} get http://127.0.0.1:{unused_port}/ > /dev/null")
    assert unreachable.returncode == 6
    assert unreachable.stderr.count("\n") == 1


def test_python_dash_m_and_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "microcall", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.startswith("microcall ")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_ends_a_load_run_with_what_it_measured(start_app: Start, workers: str) -> None:
    served = 0

    async def count(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/count", count)
    service = start_app(app)
    command = [str(SCRIPT), "load", f"{service}/count", "--rate", "100", "-d", "120"]
    command += ["--json", "--workers", workers]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (nohup, `&`
        # in a script) ignores SIGINT, and a child would inherit that.
        preexec_fn=_default_sigint,
    )
    # Interrupted once it measures (its workers spawned and calling), however
    # long a busy machine takes to start them.
    give_up = time.monotonic() + 60
    while served < 20 and time.monotonic() < give_up and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err
    document = json.loads(out)
    assert document["interrupted"] is True
    (result,) = document["runs"]
    assert result["calls"] > 0
    assert result["ok"] == result["calls"]
