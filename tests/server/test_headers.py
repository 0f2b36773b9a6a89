"""The header parsers: exact on what the protocol allows, never raising on anything else."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from microcall._wire import MAX_HEADER_TIMEOUT, MAX_TIMEOUT_TEXT
from microcall.priority import Priority
from microcall.server import MALFORMED, parse_priority, parse_timeout

header_text = st.text(max_size=64)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1.499", 1.499),
        ("0", 0.0),
        ("0.000", 0.0),
        ("20", 20.0),
        (" 2.5\t", 2.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("5e-05", 5e-05),  # Python's str(float) for small values, as aio-request sends
        ("1.5E+2", 150.0),
        ("86400", MAX_HEADER_TIMEOUT),
    ],
)
def test_timeout_values_the_protocol_allows(value: str, seconds: float) -> None:
    assert parse_timeout([value]) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value",
    [
        "",
        " ",
        "-1",
        "-0.5",
        "+1",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "1e999",
        "86400.5",
        "1" * 40,
        "0x10",
        "1_000",
        "1,2",
        "1.2.3",
        "1 2",
        "abc",
        "١٢",  # Arabic-Indic digits: float() reads them, the protocol does not
        "１",  # fullwidth digit
        "1.5s",
        "1\n",
        "\x00",
    ],
)
def test_malformed_timeouts(value: str) -> None:
    assert parse_timeout([value]) is MALFORMED


def test_absent_and_repeated_timeout() -> None:
    assert parse_timeout([]) is None
    assert parse_timeout(["1", "1"]) is MALFORMED
    assert parse_timeout(["1", "2"]) is MALFORMED


@pytest.mark.parametrize(
    ("value", "priority"),
    [("high", Priority.HIGH), ("NORMAL", Priority.NORMAL), (" Low ", Priority.LOW)],
)
def test_priorities(value: str, priority: Priority) -> None:
    assert parse_priority([value]) is priority


@pytest.mark.parametrize(
    "value", ["", "urgent", "hi", "high,low", "ＨＩＧＨ", "hıgh", "\u212aow", "h" * 100, "1"]
)
def test_malformed_priorities(value: str) -> None:
    assert parse_priority([value]) is MALFORMED


def test_absent_and_repeated_priority() -> None:
    assert parse_priority([]) is None
    assert parse_priority(["high", "high"]) is MALFORMED


@given(st.lists(header_text, max_size=3))
@example(["1e308"])
@example(["9" * 32])
def test_timeout_parser_never_raises_and_returns_a_sane_value(values: list[str]) -> None:
    result = parse_timeout(values)
    if not values:
        assert result is None
    elif result is not MALFORMED:
        assert isinstance(result, float)
        assert math.isfinite(result)
        assert 0.0 <= result <= MAX_HEADER_TIMEOUT
        assert len(values) == 1
        assert values[0].isascii()


@given(st.floats(min_value=0.0, max_value=MAX_HEADER_TIMEOUT))
def test_what_clients_send_reads_back(seconds: float) -> None:
    # microcall sends three decimals; aio-request sends str(float).
    assert parse_timeout([f"{seconds:.3f}"]) == pytest.approx(seconds, abs=0.0005)
    assert parse_timeout([str(seconds)]) == seconds


@given(header_text.filter(lambda text: not text.isascii()))
def test_non_ascii_is_never_a_timeout_or_a_priority(value: str) -> None:
    assert parse_timeout([value]) is MALFORMED
    assert parse_priority([value]) is MALFORMED


@given(st.lists(header_text, min_size=2, max_size=4))
def test_a_repeated_header_is_always_malformed(values: list[str]) -> None:
    assert parse_timeout(values) is MALFORMED
    assert parse_priority(values) is MALFORMED


@given(st.lists(header_text, max_size=3))
def test_priority_parser_never_raises(values: list[str]) -> None:
    result = parse_priority(values)
    if not values:
        assert result is None
    elif result is not MALFORMED:
        assert isinstance(result, Priority)
        assert values[0].strip(" \t").lower() == result.value


@given(st.text(alphabet="0123456789.eE+- \t", max_size=MAX_TIMEOUT_TEXT + 4))
def test_numeric_looking_text_parses_as_float_would_or_not_at_all(value: str) -> None:
    result = parse_timeout([value])
    if result is not MALFORMED:
        assert result == float(value)
        assert "-" not in value.split("e")[0].split("E")[0]
