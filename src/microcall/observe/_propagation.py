"""Writing an attempt's trace context into its headers: directly, when the W3C propagators are all.

OpenTelemetry's default global propagator is W3C trace context and W3C
baggage in a composite. Through it, an attempt pays for a context made only
to carry its span, a lookup of the span in it, a format call per id and a
baggage lookup, in every call. When the global propagator is made of
those two and nothing else, :func:`inject` writes ``traceparent`` (and
``tracestate`` when there is one) itself, the same bytes the propagator
writes, and asks the baggage propagator only when the context holds
baggage. Any other propagator (B3, Jaeger, one of the application's own, or
those two beside a third) is used as it is, through its ``inject``.

The global propagator is read on every call, so one set later with
``propagate.set_global_textmap`` takes effect at once; what it is made of is
worked out once for each propagator object.
"""

from __future__ import annotations

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import DEFAULT_TRACE_STATE, Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["inject"]


class _Plan:
    """How to write the context for one global propagator object."""

    __slots__ = ("baggage", "direct", "textmap")

    def __init__(self, textmap: TextMapPropagator | None) -> None:
        self.textmap = textmap
        self.direct, self.baggage = _w3c_parts(textmap)


def _w3c_parts(textmap: TextMapPropagator | None) -> tuple[bool, TextMapPropagator | None]:
    """(True, the baggage propagator or None) when ``textmap`` is W3C trace context (and baggage) only."""
    if type(textmap) is CompositePropagator:
        # Not public API, so read with care: without it, the propagator is used as it is.
        parts = getattr(textmap, "_propagators", None)
        if not isinstance(parts, (list, tuple)):
            return False, None
    else:
        parts = [textmap]
    contexts = [part for part in parts if type(part) is TraceContextTextMapPropagator]
    baggages = [part for part in parts if type(part) is W3CBaggagePropagator]
    if len(contexts) != 1 or len(baggages) > 1 or len(contexts) + len(baggages) != len(parts):
        return False, None
    return True, baggages[0] if baggages else None


_plan = _Plan(None)

# trace-flags as the header writes them, by value (a byte).
_FLAGS = tuple(f"{flags:02x}" for flags in range(256))


def inject(headers: dict[str, str], span: Span, parent: Context) -> None:
    """Write ``span``'s trace context (and ``parent``'s baggage) into ``headers``.

    ``parent`` is the context ``span`` was started in, its parent span set
    in it (the call's): what the propagator would see with ``span`` set in
    it instead.
    """
    global _plan  # a race between threads only works the same plan out twice
    textmap = propagate.get_global_textmap()
    plan = _plan
    if plan.textmap is not textmap:
        plan = _plan = _Plan(textmap)
    if not plan.direct:
        textmap.inject(headers, context=trace.set_span_in_context(span, parent))
        return
    # A SpanContext is a tuple of these six (its declared type): unpacked,
    # it spares a property call for each.
    trace_id, span_id, _, flags, state, valid = span.get_span_context()
    if valid:  # else, as the propagator does, no trace to continue (baggage still goes)
        # TraceContextTextMapPropagator's format, version 00: the ids as 32
        # and 16 lowercase hex digits (bytes.hex costs half of format specs).
        headers["traceparent"] = (
            f"00-{trace_id.to_bytes(16, 'big').hex()}-{span_id.to_bytes(8, 'big').hex()}"
            f"-{_FLAGS[flags]}"
        )
        if state is not DEFAULT_TRACE_STATE and state:
            headers["tracestate"] = state.to_header()
    # ``parent`` holds a span: with nothing else in it, it holds no baggage
    # either, and the lookup (a third of this function's cost) is spared.
    if plan.baggage is not None and len(parent) > 1 and baggage.get_all(parent):
        plan.baggage.inject(headers, context=parent)
