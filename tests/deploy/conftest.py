"""Fixtures for the deployment tests: a network of Linux namespaces, skipped where none can be made."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from tests.deploy.netns import Network, unavailable_reason


@functools.cache
def _reason() -> str | None:
    return unavailable_reason()


@pytest.fixture
def network() -> Iterator[Network]:
    """A bridge and namespaces joined to it (``network.add(label)``), all removed afterwards."""
    reason = _reason()
    if reason is not None:
        pytest.skip(f"no network namespaces: {reason}")
    with Network() as created:
        yield created
