"""A wrong object given to a constructor is refused there, with a ConfigurationError naming it.

Not at the first call (a bare AttributeError from deep inside, or a 500
from a server middleware on every request), and never quietly ignored (an
ejection setting given as a dict leaving ejection off).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import microcall
from microcall.cache import ResponseCache
from microcall.errors import ConfigurationError
from microcall.grpc import ChannelOptions
from microcall.policy.backoff import Backoff
from microcall.server import ServerOptions, Shedding, StaticLimit
from microcall.server.wsgi import WSGIMiddleware

URL = "http://127.0.0.1:9"
FRONT_DOORS = (microcall.AsyncClient, microcall.Client, microcall.FuturesClient)
HUGE = 10**400  # no float holds it


def _wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    return []


@pytest.mark.parametrize("front_door", FRONT_DOORS, ids=lambda door: door.__name__)
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"transport": "aiohttp"}, r"^transport must be a microcall\.transports\.Transport"),
        ({"clock": 1}, r"^clock must have a now\(\) method"),
        ({"balancer": "round_robin"}, r"^balancer must be a BalancerConfig, got 'round_robin'"),
        ({"breaker": {}}, r"^breaker must be a CircuitBreakerConfig or None, got \{\}"),
        ({"ejection": 1}, r"^ejection must be an OutlierEjectionConfig or None, got 1"),
        ({"observers": 1}, r"^observers must be a list, got 1"),
        ({"timeout": HUGE}, r"^timeout must be finite, got an int of 1329 bits$"),
    ],
)
def test_a_front_door_refuses_a_wrong_object_when_built(
    front_door: type[Any], options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        front_door(URL, **options)


@pytest.mark.parametrize("front_door", FRONT_DOORS, ids=lambda door: door.__name__)
@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        (42, r"^base_url must be a URL, a list of URLs or a Discovery, not int$"),
        ("http://127.0.0.1:99999", r"^base_url 'http://127\.0\.0\.1:99999' is not a URL: Port"),
        ("ftp://svc:s3cret@127.0.0.1/", r"^base_url must be an absolute http\(s\) URL with a host"),
        # yarl would drop the CR/LF (or keep the NUL) and another URL would be sent.
        ("http://127.0.0.1:9/a\r\nb", r"^base_url: URL .* holds a control character \('\\r'\)"),
        ("http://127.0.0.1:9/ad\x00min", r"^base_url: URL .* holds a control character"),
        (
            "http://127.0.0.1:9/x?t=s3cret\r\nInjected: 1",
            r"^base_url: URL 'http://127\.0\.0\.1:9/x'",
        ),
        ([URL, "http://127.0.0.1:99999"], r"^base_url .* is not a URL"),
    ],
)
def test_a_bad_base_url_is_refused_when_built_without_showing_credentials(
    front_door: type[Any], base_url: Any, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as refused:
        front_door(base_url)
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: microcall.FuturesClient(URL, max_in_flight=float("nan")), r"^max_in_flight must"),
        (lambda: microcall.FuturesClient(URL, max_in_flight=True), r"^max_in_flight must"),
        (lambda: microcall.FuturesClient(URL, max_in_flight=1.5), r"^max_in_flight must"),
        (lambda: microcall.FuturesClient(URL, max_in_flight="3"), r"^max_in_flight must"),
        (lambda: microcall.FuturesClient(URL, hook_workers=0), r"^hook_workers must"),
        (lambda: ResponseCache(backend=1), r"^backend must be a CacheBackend"),  # type: ignore[arg-type]
        (lambda: microcall.Discovery(url=1), r"^discovery's url must be a str or a yarl\.URL"),  # type: ignore[arg-type]
        (lambda: microcall.Discovery(url="http://:80/"), r"^discovery's url"),
        (lambda: Shedding(limit=StaticLimit(limit=4), shares=0.5), r"^shares must be a Priority"),  # type: ignore[arg-type]
        (lambda: ServerOptions(strict="no"), r"^strict must be True or False, got 'no'"),  # type: ignore[arg-type]
        (lambda: ServerOptions(cancel_on_deadline=1), r"^cancel_on_deadline must be True or"),  # type: ignore[arg-type]
        (lambda: ServerOptions(observers=1), r"^observers must be a list, got 1"),  # type: ignore[arg-type]
        (lambda: ServerOptions(default_timeout=HUGE), r"^default_timeout must be finite"),
        (lambda: Backoff(jitter="no"), r"^backoff jitter must be True or False"),  # type: ignore[arg-type]
        (lambda: microcall.retry(attempt_timeout=HUGE), r"^attempt_timeout must be finite"),
        (lambda: ChannelOptions(ejection={}), r"^ejection must be an OutlierEjectionConfig"),  # type: ignore[arg-type]
        (lambda: ChannelOptions(balancer=1), r"^balancer must be a BalancerConfig"),  # type: ignore[arg-type]
        (lambda: ChannelOptions(insecure="yes"), r"^insecure must be True or False"),  # type: ignore[arg-type]
    ],
)
def test_other_constructors_refuse_a_wrong_object(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


def test_a_shedding_server_with_a_wrong_share_is_refused_before_it_serves() -> None:
    """Before, every request raised AttributeError inside the middleware: a 500 each."""
    with pytest.raises(ConfigurationError, match=r"^shares must be a PriorityShares"):
        WSGIMiddleware(
            _wsgi_app,
            ServerOptions(shedding=Shedding(limit=StaticLimit(limit=4), shares=0.5)),  # type: ignore[arg-type]
        )
