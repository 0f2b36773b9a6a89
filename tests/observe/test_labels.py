"""Label values and redaction, one function at a time."""

from __future__ import annotations

import pytest
from yarl import URL

from microcall._redact import host_port, safe_endpoint, safe_path, safe_url
from microcall.errors import ConnectError
from microcall.observe._labels import (
    client_error_type,
    grpc_status_label,
    method_label,
    route_label,
    server_error_type,
    split_rpc_method,
    status_label,
)
from microcall.server._route_labels import asgi_route, wsgi_route


@pytest.mark.parametrize(
    ("method", "label"),
    [("GET", "GET"), ("PATCH", "PATCH"), ("get", "_OTHER"), ("PROPFIND", "_OTHER"), ("", "_OTHER")],
)
def test_methods_outside_the_known_set_are_other(method: str, label: str) -> None:
    assert method_label(method) == label


def test_statuses_and_codes_are_bounded() -> None:
    assert [status_label(s) for s in (None, 200, 599, 600, 99, -1)] == [
        "",
        "200",
        "599",
        "_OTHER",
        "_OTHER",
        "_OTHER",
    ]
    assert [grpc_status_label(c) for c in (None, 0, 16, 17)] == ["", "0", "16", "_OTHER"]


def test_error_types_follow_the_conventions() -> None:
    assert client_error_type(200, None) == ""
    assert client_error_type(404, None) == "404"  # a client fails on 4xx
    assert client_error_type(None, ConnectError("refused")) == "ConnectError"
    assert server_error_type(404, None) == ""  # a server does not
    assert server_error_type(503, None) == "503"
    assert server_error_type(None, "RuntimeError") == "RuntimeError"


def test_routes_and_rpc_methods() -> None:
    assert route_label("/books/{id}") == "/books/{id}"
    assert route_label(None) == route_label("") == "_OTHER"
    assert split_rpc_method("/shop.Recommendations/Recommend") == (
        "shop.Recommendations",
        "Recommend",
    )
    assert split_rpc_method("nonsense") == ("_OTHER", "_OTHER")
    assert split_rpc_method(None) == ("_OTHER", "_OTHER")


def test_urls_lose_user_info_query_and_fragment() -> None:
    url = URL("https://user:pw@example.com:8443/a/b?token=1#frag")
    assert safe_url(url) == "https://example.com:8443/a/b"
    assert safe_url(URL("http://[::1]:80/")) == "http://[::1]:80/"
    assert safe_path("/a?b=c") == "/a"
    assert len(safe_path("/" + "x" * 10_000)) == 256


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("http://user:pw@10.0.0.7:8080/api/", ("10.0.0.7", "8080")),
        ("https://catalog/", ("catalog", "443")),
        ("10.0.0.7:8080", ("10.0.0.7", "8080")),
        ("::1:8080", ("::1", "8080")),
        ("catalog", ("catalog", "")),
    ],
)
def test_endpoints_are_host_and_port(address: str, expected: tuple[str, str]) -> None:
    assert host_port(address) == expected


def test_a_logged_endpoint_never_has_user_info() -> None:
    assert safe_endpoint("http://user:pw@[::1]:8080/?key=1") == "[::1]:8080"


def test_any_framework_may_name_its_route() -> None:
    assert asgi_route({"microcall.route": "/orders/{id}"}) == "/orders/{id}"
    assert asgi_route({}) is None
    assert wsgi_route({"microcall.route": "orders/<id>"}) == "orders/<id>"
    assert wsgi_route({"werkzeug.request": None}) is None
