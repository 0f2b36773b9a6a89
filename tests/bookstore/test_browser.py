"""The bookstore in a real browser: Debian's chromium, headless, driven by Playwright.

Runs before test_bookstore.py breaks the stack (pytest collects this file
first: alphabetical order). Screenshots go under the test's tmp_path.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microcall.demo.bookstore.stack import Stack
from microcall.testing.services import http_get, inject

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason="chromium is not installed (scripts/ensure-system-packages.sh installs it)",
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


def test_a_person_sees_books_and_the_call_path(stack: Stack, browser: Any, tmp_path: Path) -> None:
    tab = browser.new_page()
    tab.goto(stack.marketplace + "/?user=4&category=SCIENCE_FICTION")
    assert tab.locator(".book").count() == 3
    assert tab.locator(".book .title").first.inner_text().strip()
    rows = tab.locator("#call-path tr.hop")
    assert rows.count() == 4
    assert "first" in rows.first.inner_text()
    tab.screenshot(path=str(tmp_path / "marketplace.png"), full_page=True)
    tab.close()


def test_the_dashboard_updates_and_a_switch_takes_effect(
    stack: Stack, browser: Any, tmp_path: Path
) -> None:
    tab = browser.new_page()
    tab.goto(stack.marketplace + "/dashboard")
    done = threading.Event()

    def traffic() -> None:  # pages for the dashboard to chart, while it polls
        user = 0
        while not done.wait(0.1):
            user += 1
            http_get(f"{stack.marketplace}/api/page?user={user}&category=MYSTERY")

    loader = threading.Thread(target=traffic, daemon=True)
    loader.start()
    try:
        tab.wait_for_function(
            "Number(document.querySelector('#hops tr.hop td:nth-child(2)')?.textContent || 0) > 0",
            timeout=15000,
        )
        tab.wait_for_function(
            "Number(document.getElementById('polls').textContent) >= 3", timeout=15000
        )
    finally:
        done.set()
        loader.join()
    points = int(tab.locator("#chart").get_attribute("data-points") or "0")
    assert points >= 3
    assert tab.locator("#hops tr.hop").count() >= 5
    assert "closed" in tab.locator("#breakers").inner_text()
    try:
        tab.locator('tr[data-service="recommendations-1"] button', has_text="slow").click()
        tab.wait_for_function(
            "document.querySelector('tr[data-service=\"recommendations-1\"] .chaos-state')"
            ".textContent.includes('0.3')",
            timeout=5000,
        )
        status, body = http_get(stack.admin("recommendations-1") + "/chaos")
        assert status == 200
        assert b'"latency": 0.3' in body
        tab.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    finally:
        inject(stack.admin("recommendations-1"))
    tab.close()
