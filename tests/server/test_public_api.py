"""``microcall.server.__all__`` lists every public name, and the framework modules import cleanly."""

from __future__ import annotations

import importlib
import inspect

import pytest

import microcall.server


def test_all_is_complete_and_every_name_exists() -> None:
    public = {
        name
        for name, value in vars(microcall.server).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__.startswith("microcall.")
    }
    assert public - set(microcall.server.__all__) == set()
    assert [name for name in microcall.server.__all__ if not hasattr(microcall.server, name)] == []
    assert len(set(microcall.server.__all__)) == len(microcall.server.__all__)


@pytest.mark.parametrize(
    ("module", "name"),
    [("aiohttp", "AiohttpMiddleware"), ("asgi", "ASGIMiddleware"), ("wsgi", "WSGIMiddleware")],
)
def test_each_framework_module_exports_its_middleware(module: str, name: str) -> None:
    loaded = importlib.import_module(f"microcall.server.{module}")
    assert name in loaded.__all__
    assert inspect.getdoc(getattr(loaded, name))
