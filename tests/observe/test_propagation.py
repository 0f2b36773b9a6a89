"""An attempt's trace context is written as the global propagator would write it, whatever it is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from microcall.observe._propagation import inject


class _Marker(TextMapPropagator):
    """A propagator of the application's own: writes one header of its own."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        return context or Context()

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        span_id = trace.get_current_span(context).get_span_context().span_id
        setter.set(carrier, "x-marker", f"{span_id:x}")

    @property
    def fields(self) -> set[str]:
        return {"x-marker"}


def _parent(caller: Context | None = None) -> Context:
    """What an attempt's span is started in: its call's span, in the caller's context."""
    call = TracerProvider().get_tracer("test").start_span("call")
    return trace.set_span_in_context(call, caller or Context())


@pytest.fixture(autouse=True)
def textmap() -> Iterator[None]:
    """OpenTelemetry's default global propagator (OTEL_PROPAGATORS unset) for the test; then the one before."""
    saved = propagate.get_global_textmap()
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    yield
    propagate.set_global_textmap(saved)


def _both(span: Span, parent: Context) -> tuple[dict[str, str], dict[str, str]]:
    """(what inject wrote, what the global propagator writes) for ``span`` started in ``parent``."""
    ours: dict[str, str] = {}
    inject(ours, span, parent)
    theirs: dict[str, str] = {}
    propagate.get_global_textmap().inject(theirs, context=trace.set_span_in_context(span, parent))
    return ours, theirs


def _spans() -> list[Span]:
    recording = TracerProvider().get_tracer("test").start_span("attempt")
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test").start_span("attempt")
    with_state = NonRecordingSpan(
        SpanContext(
            trace_id=0x0AF7651916CD43DD8448EB211C80319C,
            span_id=0x00F067AA0BA902B7,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=TraceState([("vendor", "opaque"), ("other", "x")]),
        )
    )
    return [recording, unsampled, with_state, trace.INVALID_SPAN]


@pytest.mark.parametrize("span", _spans(), ids=["recording", "unsampled", "tracestate", "invalid"])
@pytest.mark.parametrize("with_baggage", [False, True], ids=["no-baggage", "baggage"])
def test_the_default_propagators_bytes_are_written(span: Span, with_baggage: bool) -> None:
    caller = baggage.set_baggage("tenant", "a b", Context()) if with_baggage else Context()
    ours, theirs = _both(span, _parent(caller))
    assert ours == theirs
    assert ("traceparent" in ours) is span.get_span_context().is_valid


@pytest.mark.parametrize(
    "propagator",
    [
        _Marker(),
        CompositePropagator([_Marker(), W3CBaggagePropagator()]),
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator(), _Marker()]),
    ],
    ids=["own", "own-and-baggage", "w3c-and-own"],
)
def test_any_other_propagator_writes_its_own_headers(propagator: TextMapPropagator) -> None:
    span = TracerProvider().get_tracer("test").start_span("attempt")
    propagate.set_global_textmap(propagator)
    ours, theirs = _both(span, _parent())
    assert ours == theirs
    assert "x-marker" in ours


def test_a_propagator_set_later_is_used_at_once() -> None:
    span = TracerProvider().get_tracer("test").start_span("attempt")
    before: dict[str, str] = {}
    inject(before, span, _parent())
    propagate.set_global_textmap(_Marker())
    after: dict[str, str] = {}
    inject(after, span, _parent())
    assert "traceparent" in before
    assert list(after) == ["x-marker"]


def test_the_default_propagator_itself_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the direct write is for: the header without the propagator's work.
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("went through the global propagator")

    monkeypatch.setattr(propagate.get_global_textmap(), "inject", refuse)
    headers: dict[str, str] = {}
    inject(headers, TracerProvider().get_tracer("test").start_span("attempt"), _parent())
    assert list(headers) == ["traceparent"]
