"""Reading caching headers from the network: defensive, never raising."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from microcall.cache._directives import (
    MAX_DELTA_SECONDS,
    NONE,
    Directives,
    header_value,
    parse_age,
    parse_cache_control,
    parse_http_date,
    parse_vary,
    request_directives,
)


def test_common_response_directives() -> None:
    parsed = parse_cache_control("public, max-age=60, s-maxage=120, must-revalidate")
    assert parsed == Directives(public=True, max_age=60, s_maxage=120, must_revalidate=True)


def test_names_are_case_insensitive_and_spaces_are_allowed() -> None:
    parsed = parse_cache_control("  No-Store ,MAX-AGE = 5 ")
    assert parsed.no_store
    assert parsed.max_age == 5


def test_quoted_values_keep_their_commas() -> None:
    parsed = parse_cache_control('no-cache="Set-Cookie, X-Foo", max-age=30')
    assert parsed.no_cache  # the qualified form is read as the stricter plain one
    assert parsed.max_age == 30


def test_quoted_delta_seconds_are_accepted() -> None:
    assert parse_cache_control('max-age="15"').max_age == 15


@pytest.mark.parametrize(
    "value", ["max-age=abc", "max-age=-5", "max-age=", "max-age", "max-age=1.5"]
)
def test_a_malformed_max_age_counts_as_zero(value: str) -> None:
    assert parse_cache_control(value).max_age == 0


def test_a_repeated_directive_keeps_the_most_restrictive_value() -> None:
    assert parse_cache_control("max-age=100, max-age=10").max_age == 10


def test_huge_numbers_are_capped() -> None:
    assert parse_cache_control("max-age=99999999999999999999").max_age == MAX_DELTA_SECONDS


def test_garbage_between_directives_is_skipped() -> None:
    parsed = parse_cache_control('"broken, ;;; ,no-store, private')
    assert parsed.no_store
    assert parsed.private


def test_unknown_directives_are_ignored() -> None:
    assert parse_cache_control("immutable, community=UCI") is NONE
    assert parse_cache_control("") is NONE
    assert parse_cache_control(None) is NONE


def test_stale_if_error_and_min_fresh() -> None:
    parsed = parse_cache_control("stale-if-error=300, min-fresh=5")
    assert parsed.stale_if_error == 300
    assert parsed.min_fresh == 5


def test_pragma_no_cache_counts_only_without_cache_control() -> None:
    assert request_directives({"Pragma": "no-cache"}).no_cache
    assert not request_directives({"Pragma": "no-cache", "Cache-Control": "max-age=5"}).no_cache
    assert request_directives({}) is NONE


@pytest.mark.parametrize(
    "value",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_the_three_http_date_forms(value: str) -> None:
    assert parse_http_date(value) == 784111777.0


@pytest.mark.parametrize(
    "value", ["0", "-1", "yesterday", "", None, "Sun, 99 Nov 1994 08:49:37 GMT"]
)
def test_invalid_dates_are_none(value: str | None) -> None:
    assert parse_http_date(value) is None


def test_age() -> None:
    assert parse_age("42") == 42
    assert parse_age("42, 7") == 42
    assert parse_age("-3") == 0
    assert parse_age("soon") == 0
    assert parse_age(None) == 0


def test_vary_names_are_normalised() -> None:
    assert parse_vary("Accept-Encoding, accept ,ACCEPT") == ("accept", "accept-encoding")
    assert parse_vary("") == ()
    assert parse_vary("Accept, *") is None


def test_header_value_joins_repeated_fields_of_a_multidict() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict([("Cache-Control", "max-age=5"), ("cache-control", "public")])
    )
    assert header_value(headers, "CACHE-CONTROL") == "max-age=5, public"
    assert header_value(headers, "Expires") is None


def test_header_value_finds_any_case_in_a_plain_dict() -> None:
    assert header_value({"authorization": "x"}, "Authorization") == "x"
    assert header_value({"Accept": "a"}, "accept") == "a"


@given(st.text(max_size=200))
def test_no_cache_control_value_raises(value: str) -> None:
    parse_cache_control(value)


@given(st.text(max_size=80))
def test_no_date_raises(value: str) -> None:
    parse_http_date(value)
