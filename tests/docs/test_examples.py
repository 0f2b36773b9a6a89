"""Every Python block in README.md and docs/ runs, as written, against real servers.

A page is read top to bottom the way a reader reads it: its blocks run in
order in one namespace, so a later block may use what an earlier one built
(a client, an app). Top-level ``await`` works, as in ``python -m asyncio``;
functions named ``test_*`` that a block defines are called (awaited if they
are coroutines), as pytest would. Service names (``http://catalog:8080``...)
are served by the real servers of :mod:`tests.docs._services`.

A block that is deliberately not runnable (the shape of a protocol, say)
says so in its first line, where a reader sees it: ``# Not runnable: why``.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

import microcall
import microcall.observe.exposition
import microcall.observe.prometheus
from microcall.grpc import AsyncChannel
from tests.cache.conftest import ServerProcess
from tests.docs._services import Services, running_services

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUNNABLE = re.compile(r"#\s*Not runnable:", re.IGNORECASE)
FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True, slots=True)
class Block:
    page: str
    line: int
    code: str

    @property
    def runnable(self) -> bool:
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        return not NOT_RUNNABLE.match(first)


def blocks_of(page: Path) -> list[Block]:
    found: list[Block] = []
    language: str | None = None
    start = 0
    lines: list[str] = []
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        fence = FENCE.match(line)
        if fence is None:
            if language is not None:
                lines.append(line)
            continue
        if language is None:
            language, start, lines = fence.group(1), number + 1, []
        else:
            if language == "python":
                found.append(Block(page.relative_to(ROOT).as_posix(), start, "\n".join(lines)))
            language = None
    return found


@pytest.fixture(scope="module")
def services(
    redis_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    with running_services(redis_server.port, tmp_path_factory.mktemp("docs")) as running:
        yield running


def test_every_page_with_code_is_checked() -> None:
    # A page with Python blocks that are all marked not runnable checks nothing.
    for page in PAGES:
        blocks = blocks_of(page)
        if blocks:
            assert any(block.runnable for block in blocks), f"{page.name}: nothing runs"


@pytest.mark.parametrize("page", [page for page in PAGES if blocks_of(page)], ids=lambda p: p.name)
def test_page_runs(page: Path, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each page is a program of its own: its metrics go to a registry of their own.
    registry = prometheus_client.CollectorRegistry()
    # (ClientMetrics and ServerMetrics look prometheus_client.REGISTRY up when built.)
    for module in (prometheus_client, microcall.observe.exposition):
        monkeypatch.setattr(module, "REGISTRY", registry)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    loop = asyncio.new_event_loop()
    try:
        for block in blocks_of(page):
            if block.runnable:
                _run(block, services.rewrite(block.code), namespace, loop)
    finally:
        _close_clients(namespace, loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _run(
    block: Block, code: str, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> None:
    where = f"{block.page}:{block.line}"
    before = set(namespace)
    try:
        compiled = compile(code, where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        if compiled.co_flags & inspect.CO_COROUTINE:
            loop.run_until_complete(eval(compiled, namespace))
        else:
            exec(compiled, namespace)
        for name in sorted(set(namespace) - before):
            test = namespace[name]
            if name.startswith("test_") and callable(test):
                result = test()
                if inspect.iscoroutine(result):
                    loop.run_until_complete(result)
    except Exception as error:
        raise AssertionError(f"the block at {where} failed: {error!r}\n{block.code}") from error


def _close_clients(namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
    """Close what the page left open, as a program would at exit."""
    for value in list(namespace.values()):
        if isinstance(value, microcall.AsyncClient):
            loop.run_until_complete(value.aclose())
        elif isinstance(value, AsyncChannel):
            loop.run_until_complete(value.close())
        elif isinstance(value, (microcall.Client, microcall.FuturesClient)):
            value.close()
