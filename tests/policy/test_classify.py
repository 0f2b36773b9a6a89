"""Response classification: the default rules, and a user's classifier reaching the engine."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from microcall import (
    AsyncClient,
    AttemptTimeout,
    Backoff,
    CallError,
    ConfigurationError,
    ConnectError,
    DeadlineExceeded,
    ProtocolError,
    ReadError,
    Request,
    Response,
    TransportError,
    Verdict,
    default_classifier,
    retry,
)
from microcall.errors import CircuitOpen
from microcall.testing import MockTransport, Reply

URL_ = URL("http://svc:8080/thing")
REQUEST = Request("GET", URL_, {})
NO_WAIT = Backoff(base=0.0)


def response(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        headers=CIMultiDictProxy(CIMultiDict(headers or {})),
        content=b"",
        url=URL_,
        request=REQUEST,
    )


@pytest.mark.parametrize("status", [500, 501, 502, 503, 504, 599, 408, 429])
def test_failure_statuses_are_retriable(status: int) -> None:
    assert default_classifier(response(status), None) is Verdict.RETRY


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304, 400, 401, 403, 404, 409, 422, 499])
def test_other_statuses_are_answers(status: int) -> None:
    assert default_classifier(response(status), None) is Verdict.ACCEPT


@pytest.mark.parametrize(
    "error", [TransportError, ConnectError, ReadError, ProtocolError, AttemptTimeout]
)
def test_transport_errors_are_retriable(error: type[CallError]) -> None:
    assert default_classifier(None, error("boom", request=REQUEST)) is Verdict.RETRY


def test_deadline_exceeded_stops() -> None:
    assert default_classifier(None, DeadlineExceeded("late", request=REQUEST)) is Verdict.STOP


def test_circuit_open_is_not_stopped_by_the_default() -> None:
    # Another endpoint may be healthy; the breaker's refusal is a failure like any other.
    assert default_classifier(None, CircuitOpen("open", request=REQUEST)) is Verdict.RETRY


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "True", " 1 "])
@pytest.mark.parametrize("status", [503, 500, 429, 408])
def test_do_not_retry_stops_a_failure(status: int, value: str) -> None:
    assert default_classifier(response(status, {"X-Do-Not-Retry": value}), None) is Verdict.STOP


def test_do_not_retry_header_name_is_case_insensitive() -> None:
    assert default_classifier(response(503, {"x-do-not-retry": "1"}), None) is Verdict.STOP


@pytest.mark.parametrize("value", ["0", "false", "", "yes please"])
def test_do_not_retry_with_another_value_is_ignored(value: str) -> None:
    assert default_classifier(response(503, {"X-Do-Not-Retry": value}), None) is Verdict.RETRY


@pytest.mark.parametrize("status", [200, 404])
def test_do_not_retry_on_an_answer_is_still_an_answer(status: int) -> None:
    assert default_classifier(response(status, {"X-Do-Not-Retry": "1"}), None) is Verdict.ACCEPT


# ---------------------------------------------------------------- through a client


async def test_do_not_retry_ends_retries_through_a_client() -> None:
    transport = MockTransport([Reply(503, headers={"X-Do-Not-Retry": "1"}), Reply(200)])
    async with AsyncClient(
        "http://svc", transport=transport, strategy=retry(3, backoff=NO_WAIT)
    ) as client:
        result = await client.get("/thing")
    assert result.status_code == 503
    assert len(transport.sent) == 1


async def test_a_user_classifier_decides_what_is_retried() -> None:
    seen: list[tuple[int | None, str | None]] = []

    def not_found_is_transient(resp: Response | None, error: CallError | None) -> Verdict:
        seen.append(
            (
                None if resp is None else resp.status_code,
                None if error is None else type(error).__name__,
            )
        )
        if resp is not None and resp.status_code == 404:
            return Verdict.RETRY
        return default_classifier(resp, error)

    transport = MockTransport([Reply(404), Reply(error=ConnectError), Reply(200)])
    async with AsyncClient(
        "http://svc",
        transport=transport,
        strategy=retry(3, backoff=NO_WAIT),
        classifier=not_found_is_transient,
    ) as client:
        result = await client.get("/thing")
    assert result.status_code == 200
    assert [a.status for a in result.attempts] == [404, None, 200]
    assert seen == [(404, None), (None, "ConnectError"), (200, None)]


async def test_a_user_classifier_can_stop_on_a_failure_status() -> None:
    def stop_on_503(resp: Response | None, error: CallError | None) -> Verdict:
        if resp is not None and resp.status_code == 503:
            return Verdict.STOP
        return default_classifier(resp, error)

    transport = MockTransport([Reply(503), Reply(200)])
    async with AsyncClient(
        "http://svc",
        transport=transport,
        strategy=retry(3, backoff=NO_WAIT),
        classifier=stop_on_503,
    ) as client:
        result = await client.get("/thing")
    assert result.status_code == 503
    assert len(transport.sent) == 1


async def test_a_user_classifier_stopping_on_an_error_raises_it() -> None:
    def never_retry(resp: Response | None, error: CallError | None) -> Verdict:
        return Verdict.ACCEPT if resp is not None else Verdict.STOP

    transport = MockTransport([Reply(error=ConnectError), Reply(200)])
    async with AsyncClient(
        "http://svc",
        transport=transport,
        strategy=retry(3, backoff=NO_WAIT),
        classifier=never_retry,
    ) as client:
        with pytest.raises(ConnectError) as caught:
            await client.get("/thing")
    assert len(transport.sent) == 1
    assert len(caught.value.attempts) == 1


def test_a_classifier_must_be_callable() -> None:
    with pytest.raises(ConfigurationError, match="classifier"):
        AsyncClient("http://svc", transport=MockTransport([]), classifier="strict")  # type: ignore[arg-type]
