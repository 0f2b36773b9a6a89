"""Waiting in tests for something another task or thread will make true."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Return once ``condition()`` holds; fail the test if it has not within ``timeout``."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while loop.time() < give_up:
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"still false after {timeout} s: {condition}")
