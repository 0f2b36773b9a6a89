"""Attempts not sent: every RefusalReason has its metric label, and the budget ones a log line."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry
from yarl import URL

from microcall._attempt import Attempt, AttemptKind, RefusalReason
from microcall._request import Request
from microcall.observe import LogEvents
from microcall.observe.prometheus import ClientMetrics
from tests.observe._metrics import label_values

# A family as prometheus-client names it: a counter without its _total.
REFUSED = "microcall_client_attempts_refused"
REQUEST = Request("GET", URL("http://catalog:8080/books/1"), {}, path="/books/1")


def refused(reason: str) -> Attempt:
    return Attempt(1, AttemptKind.RETRY, "catalog:8080", 0.1, 0.0, error=reason, sent=False)


def test_each_refusal_reason_has_a_label_of_its_own(registry: CollectorRegistry) -> None:
    metrics = ClientMetrics(registry)
    # The text of each reason, as records made before the enum spelled it, counts the same.
    for reason in [*RefusalReason, *(str(reason) for reason in RefusalReason)]:
        metrics.call_started(REQUEST).call_ended(None, None, [refused(reason)])
    labels = label_values(registry, REFUSED, "reason")
    assert labels == {"retry_budget", "hedge_budget", "circuit_open", "body_not_replayable"}


def test_an_unknown_refusal_counts_as_other(registry: CollectorRegistry) -> None:
    metrics = ClientMetrics(registry)
    metrics.call_started(REQUEST).call_ended(None, None, [refused("made up")])
    assert label_values(registry, REFUSED, "reason") == {"_OTHER"}


def test_budget_refusals_are_logged_and_an_open_breaker_is_left_to_its_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="microcall")
    events = LogEvents()
    for reason in RefusalReason:
        events.call_started(REQUEST).call_ended(None, None, [refused(reason)])
    reasons = [
        vars(record)["reason"]
        for record in caplog.records
        if getattr(record, "microcall_event", None) == "budget_exhausted"
    ]
    assert reasons == ["retry_budget", "hedge_budget"]
