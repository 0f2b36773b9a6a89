"""Fixtures for the observability tests: the ASGI and WSGI servers of tests/server, a fresh registry."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from tests.server.conftest import serve_asgi, serve_wsgi

__all__ = ["registry", "serve_asgi", "serve_wsgi"]


@pytest.fixture
def registry() -> CollectorRegistry:
    """A registry of this test's own: the global one is never touched."""
    return CollectorRegistry()
