"""The docs' examples run against a real redis-server, started once for the session."""

from tests.cache.conftest import redis_server  # noqa: F401
