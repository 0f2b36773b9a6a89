"""Parsing what a command line asks for: request items, strategies, URLs."""

from __future__ import annotations

import pytest

import microcall
from microcall.cli._common import CliError
from microcall.cli._items import parse_items
from microcall.cli._options import parse_strategy, parse_url


def test_items_of_every_kind() -> None:
    items = parse_items(
        ["Accept:application/json", "q==a=b", "title=Dune", "year:=1965", "url==http://x/y"]
    )
    assert items.headers == {"Accept": "application/json"}
    assert items.params == [("q", "a=b"), ("url", "http://x/y")]
    assert items.json == {"title": "Dune", "year": 1965}


def test_the_first_separator_decides() -> None:
    items = parse_items(["note=a:b", "time:=1", r"a\=b=c"])
    assert items.json == {"note": "a:b", "time": 1, "a=b": "c"}
    assert items.headers == {}


def test_no_fields_no_body() -> None:
    assert parse_items(["X:1"]).json is None


@pytest.mark.parametrize("item", ["plain", "=value", "n:=[1,", "Bad Name:x"])
def test_bad_items(item: str) -> None:
    with pytest.raises(CliError):
        parse_items([item])


def test_strategies() -> None:
    assert parse_strategy("single") == microcall.single()
    assert parse_strategy("retry") == microcall.retry(3)
    assert parse_strategy("retry:5") == microcall.retry(5)
    assert parse_strategy("hedged:0.02") == microcall.hedged(0.02)
    assert parse_strategy("hedged") == microcall.hedged()


@pytest.mark.parametrize("text", ["", "single:2", "retry:0", "retry:x", "hedged:-1", "fast"])
def test_bad_strategies(text: str) -> None:
    with pytest.raises(CliError):
        parse_strategy(text)


def test_urls() -> None:
    assert str(parse_url(":8080/books")) == "http://localhost:8080/books"
    assert str(parse_url("example.com/x")) == "http://example.com/x"
    assert str(parse_url("https://h/x?q=1")) == "https://h/x?q=1"
    for bad in ("http://", "gopher://h/", "http://h:port/"):
        with pytest.raises(CliError):
            parse_url(bad)
