"""Proxy settings: what is accepted, what is refused at construction, and who bypasses."""

from __future__ import annotations

import base64

import pytest
from yarl import URL

import microcall
from microcall.errors import ConfigurationError
from microcall.transports._proxy import ProxySettings, parse_proxy, proxy_settings
from microcall.transports.aiohttp import AiohttpTransport
from microcall.transports.h1 import H1Transport
from microcall.transports.httpx import HttpxTransport

MARK = "SECRET"
ENV_NAMES = [f"{name}_proxy" for name in ("http", "https", "all", "no")] + [
    f"{name}_PROXY" for name in ("HTTP", "HTTPS", "ALL", "NO")
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [*ENV_NAMES, "REQUEST_METHOD"]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_user_info_becomes_a_basic_header_and_leaves_the_url() -> None:
    proxy = parse_proxy(f"http://reader:p%40ss:{MARK}@proxy.internal:3128")
    assert proxy.url == URL("http://proxy.internal:3128")
    assert proxy.address == "proxy.internal:3128"
    expected = base64.b64encode(f"reader:p@ss:{MARK}".encode()).decode()
    assert proxy.authorization == f"Basic {expected}"
    assert MARK not in repr(proxy)
    assert "with credentials" in repr(proxy)
    assert MARK not in repr(proxy_settings(f"http://u:{MARK}@proxy:3128", False))


def test_a_url_without_scheme_or_port_gets_http_and_80() -> None:
    assert parse_proxy("proxy.internal:3128").url == URL("http://proxy.internal:3128")
    assert parse_proxy(URL("http://proxy.internal")).port == 80
    assert parse_proxy("http://proxy.internal/").authorization is None


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (f"socks5://u:{MARK}@proxy:1080", "only http:// proxies"),
        (f"https://u:{MARK}@proxy:3128", "only http:// proxies"),
        ("http://", "no host"),
        (f"http://u:{MARK}@proxy:3128/path", "no path"),
        ("http://proxy:3128?x=1", "no path"),
        ("http://proxy:notaport", "port|not a URL"),
        (3128, "must be a URL"),
    ],
)
def test_what_cannot_be_used_is_refused_without_its_credentials(value: object, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as caught:
        parse_proxy(value)
    assert MARK not in str(caught.value)


def test_trust_env_must_be_a_bool() -> None:
    with pytest.raises(ConfigurationError, match="trust_env"):
        proxy_settings(None, "yes")


def test_every_transport_and_front_door_checks_at_construction() -> None:
    for make in (H1Transport, AiohttpTransport, HttpxTransport):
        with pytest.raises(ConfigurationError):
            make(proxy="socks5://proxy:1080")
    for door in (microcall.AsyncClient, microcall.Client, microcall.FuturesClient):
        with pytest.raises(ConfigurationError):
            door("http://catalog:8080", proxy="ftp://proxy:21")


def test_a_ready_made_transport_with_proxy_options_is_refused() -> None:
    # Going direct while the caller asked for a proxy would be worse than refusing.
    with pytest.raises(ConfigurationError, match="ready-made"):
        microcall.AsyncClient(transport=H1Transport(), proxy="http://proxy:3128")
    with pytest.raises(ConfigurationError, match="ready-made"):
        microcall.AsyncClient(transport=H1Transport(), trust_env=True)


def test_no_proxy_and_no_environment_means_no_routing(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTP_PROXY", "http://proxy:3128")
    assert proxy_settings(None, False) is None
    env.delenv("HTTP_PROXY")
    assert proxy_settings(None, True) is None


def test_the_environment_is_read_as_urllib_reads_it(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTP_PROXY", "http://upper:3128")
    env.setenv("http_proxy", "http://lower:3128")  # lower case wins
    env.setenv("ALL_PROXY", "every:3128")
    settings = proxy_settings(None, True)
    assert settings is not None
    assert settings.http is not None
    assert settings.http.host == "lower"
    assert settings.https is not None
    assert settings.https.host == "every"


def test_an_empty_lower_case_variable_unsets_the_upper_case_one(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTPS_PROXY", "http://upper:3128")
    env.setenv("https_proxy", "")
    assert proxy_settings(None, True) is None


def test_http_proxy_is_ignored_in_a_cgi_script(env: pytest.MonkeyPatch) -> None:
    # httpoxy: a request's "Proxy:" header arrives as HTTP_PROXY in CGI.
    env.setenv("REQUEST_METHOD", "GET")
    env.setenv("HTTP_PROXY", "http://attacker:3128")
    assert proxy_settings(None, True) is None


def test_a_bad_variable_is_refused_naming_it_not_its_credentials(env: pytest.MonkeyPatch) -> None:
    env.setenv("ALL_PROXY", f"socks5://u:{MARK}@proxy:1080")
    with pytest.raises(ConfigurationError, match="all_proxy") as caught:
        microcall.AsyncClient("http://catalog:8080", trust_env=True)
    assert MARK not in str(caught.value)


def test_an_explicit_proxy_wins_and_no_proxy_still_applies(env: pytest.MonkeyPatch) -> None:
    env.setenv("HTTPS_PROXY", "http://from-env:3128")
    env.setenv("NO_PROXY", "internal.example")
    settings = proxy_settings("http://given:3128", True)
    assert settings is not None
    proxy = settings.proxy_for(URL("https://catalog:8443/"))
    assert proxy is not None
    assert proxy.host == "given"
    assert settings.proxy_for(URL("https://books.internal.example/")) is None


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("*", "http://anything:80/", True),
        ("example.com", "http://example.com/", True),
        ("example.com", "http://api.example.com/", True),
        (".example.com", "http://example.com/", True),
        ("example.com", "http://notexample.com/", False),
        ("example.com:8080", "http://example.com:8080/", True),
        ("example.com:8080", "http://example.com:9090/", False),
        ("EXAMPLE.com , other", "https://other:8443/", True),
        ("", "http://example.com/", False),
    ],
)
def test_no_proxy_matching(no_proxy: str, url: str, bypassed: bool) -> None:
    proxy = parse_proxy("http://proxy:3128")
    settings = ProxySettings(http=proxy, https=proxy, no_proxy=no_proxy)
    assert (settings.proxy_for(URL(url)) is None) is bypassed
    assert (settings.proxy_for(URL(url)) is None) is bypassed  # the remembered answer agrees


def test_a_scheme_without_a_proxy_goes_direct() -> None:
    settings = ProxySettings(https=parse_proxy("http://proxy:3128"))
    assert settings.proxy_for(URL("http://catalog:8080/")) is None
