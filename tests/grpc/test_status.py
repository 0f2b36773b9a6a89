"""Status classification and grpc-retry-pushback-ms parsing (gRFC A6), without a network."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from microcall.grpc import (
    DO_NOT_RETRY,
    PUSHBACK_METADATA,
    RETRYABLE_CODES,
    classify,
    parse_pushback,
)
from microcall.policy.classify import Verdict

ANSWERS = [code for code in grpc.StatusCode if code not in RETRYABLE_CODES]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["0"], 0.0),
        (["250"], 0.25),
        ([b"1500"], 1.5),
        ([" 20 "], 0.02),
        (["99999999999"], 3600.0),  # capped: no deadline is that long
        (["-1"], DO_NOT_RETRY),
        (["1.5"], DO_NOT_RETRY),
        (["abc"], DO_NOT_RETRY),
        ([""], DO_NOT_RETRY),
        (["١٢"], DO_NOT_RETRY),  # non-ASCII digits
        (["10", "20"], DO_NOT_RETRY),  # two values: which one?
        (["1" * 40], DO_NOT_RETRY),
    ],
)
def test_pushback_values(values: list[str | bytes], expected: object) -> None:
    assert parse_pushback(values) == expected


@given(st.lists(st.one_of(st.text(max_size=20), st.binary(max_size=20)), max_size=3))
def test_parse_pushback_never_raises(values: list[str | bytes]) -> None:
    result = parse_pushback(values)
    assert result is None or result is DO_NOT_RETRY or 0.0 <= result <= 3600.0  # type: ignore[operator]


def test_unavailable_and_resource_exhausted_are_retriable() -> None:
    for code in RETRYABLE_CODES:
        assert classify(code, ()) == (Verdict.RETRY, None)


def test_pushback_delays_a_retry_and_a_bad_one_stops_it() -> None:
    code = grpc.StatusCode.UNAVAILABLE
    assert classify(code, ((PUSHBACK_METADATA, "300"),)) == (Verdict.RETRY, 0.3)
    assert classify(code, ((PUSHBACK_METADATA, "-5"),)) == (Verdict.STOP, None)
    assert classify(code, ((PUSHBACK_METADATA, "soon"),)) == (Verdict.STOP, None)


@pytest.mark.parametrize("code", ANSWERS, ids=lambda code: code.name)
def test_every_other_status_is_an_answer_except_deadline(code: grpc.StatusCode) -> None:
    verdict, _ = classify(code, ((PUSHBACK_METADATA, "-1"),))
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        assert verdict is Verdict.STOP
    else:
        assert verdict is Verdict.ACCEPT  # pushback is only read on a retriable status


def test_an_attempt_that_ran_out_of_its_own_time_is_retriable() -> None:
    deadline = grpc.StatusCode.DEADLINE_EXCEEDED
    assert classify(deadline, (), attempt_limited=True) == (Verdict.RETRY, None)
    assert classify(deadline, (), attempt_limited=False) == (Verdict.STOP, None)


def test_retryable_codes_can_be_chosen() -> None:
    aborted = grpc.StatusCode.ABORTED
    assert classify(aborted, (), retryable={aborted})[0] is Verdict.RETRY
    assert classify(grpc.StatusCode.UNAVAILABLE, (), retryable={aborted})[0] is Verdict.ACCEPT
