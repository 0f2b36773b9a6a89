"""The task a loop is running, read without asking for the running loop.

``asyncio.current_task()`` first asks for the running loop, and asyncio
checks that loop's process id on every ask: a ``getpid`` system call. A
caller that holds its loop skips that by naming it. On Python 3.11
``current_task`` is moreover a Python function over a dict kept by the C
accelerator, so there the dict is read directly; from 3.12 it is C itself.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from typing import Any

__all__ = ["task_on"]


def _reader() -> Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None]:
    current = getattr(asyncio.tasks, "_current_tasks", None)
    if isinstance(asyncio.current_task, types.FunctionType) and isinstance(current, dict):
        return current.get  # what the Python function returns, without its frame
    return asyncio.current_task


task_on = _reader()
"""``task_on(loop)``: the task ``loop`` is running now, or None."""
