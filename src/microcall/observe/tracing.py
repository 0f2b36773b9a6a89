"""OpenTelemetry traces: a span per logical call, a child span per attempt, a span per request served.

Only ``opentelemetry-api`` is needed (the ``[otel]`` extra); the application
configures the SDK and exporters as it likes, or leaves tracing off, in
which case every span here is a cheap non-recording one and the inbound
trace context is still passed on::

    from microcall.observe.tracing import ClientTracing, ServerTracing

    client = microcall.AsyncClient(url, observers=[ClientTracing()])
    app = ASGIMiddleware(app, ServerOptions(observers=[ServerTracing()]))

What a trace shows. An HTTP call is an INTERNAL span named after its method
(or its ``route=`` template), parent of one CLIENT span per attempt sent.
The conventions make each physical request the HTTP client span and ask
for no HTTP client span around them, so the call span repeats none of its
attempts' attributes: it says how the call ended (``error.type`` and an
error status when it failed) and what it took. Attempts carry
``http.request.resend_count`` and ``microcall.attempt.kind`` (retry,
hedge) on every attempt after the first, ``microcall.hedge`` on hedges,
``microcall.attempt.cancelled`` and ``error.type`` ``cancelled`` on a hedge
that lost, and
``microcall.attempts`` on a call that made more than one. (A gRPC call's
span is the RPC's CLIENT span, with ``rpc.*``, as the RPC conventions
define it over internal retries.) Attempts the
retry budget or a breaker refused are events on the call span. Each attempt
carries its own span's W3C ``traceparent`` (what the global propagator
writes, so ``tracestate`` and baggage travel too, and a propagator the
application set is used instead), and a server middleware with
:class:`ServerTracing` continues the trace: a SERVER span named
``METHOD /route/{template}``, current while the handler runs, so the calls
the handler makes are its children.

What a span never holds: header values, query strings, URL user-info
(``url.full`` is scheme, host, port and path), exception messages (only
``error.type``, the class name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import Token
from types import MappingProxyType

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue
from yarl import URL

from microcall import __version__
from microcall._attempt import Attempt, AttemptKind
from microcall._redact import safe_path, safe_url
from microcall._request import Request
from microcall._response import Response
from microcall.observe._labels import (
    GRPC_CODE_NUMBERS,
    KNOWN_METHODS,
    OTHER,
    RPC_SYSTEMS,
    grpc_code_of,
    split_rpc_method,
)
from microcall.observe._propagation import inject
from microcall.observe.hooks import HeaderLookup, InboundRequest, ServerResult

__all__ = ["ClientTracing", "ServerTracing"]

INSTRUMENTATION = "microcall"

# A method outside the known set is recorded as _OTHER, with the original
# beside it (as the conventions say), cut to this length.
_MAX_METHOD = 32

_REFUSAL_EVENT = "microcall.attempt.refused"


def _tracer(provider: TracerProvider | None) -> Tracer:
    if provider is None:
        # The global provider, looked up through a proxy: an SDK installed
        # after this object was built is still used.
        return trace.get_tracer(INSTRUMENTATION, __version__)
    return provider.get_tracer(INSTRUMENTATION, __version__)


def _method_attributes(method: str, attributes: dict[str, AttributeValue]) -> str:
    if method in KNOWN_METHODS:
        attributes["http.request.method"] = method
        return method
    attributes["http.request.method"] = OTHER
    attributes["http.request.method_original"] = method[:_MAX_METHOD]
    return "HTTP"  # the span name the conventions give an unknown method


# Calls to one method and server share their span's attributes, and attempts
# to one URL theirs: the dicts are built once, kept read-only, and handed to
# the SDK as they are (it copies what it keeps). Each cache is emptied when
# full, so ever new servers or paths cost a rebuild, never memory.
MAX_SHAPES = 64
MAX_URLS = 64  # per shape

_STATUS = "http.response.status_code"


class ClientTracing:
    """Client spans: pass it in a client's ``observers=`` (share it between clients).

    ``tracer_provider``: default, the global one. The trace context goes out
    through OpenTelemetry's global propagator (W3C ``traceparent`` unless
    the application set another).
    """

    __slots__ = ("_last", "_shapes", "_tracer")

    # Its caches and series may be used from many threads at once: a
    # Client's direct calls call it in their own threads (observe/hooks).
    thread_safe = True

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = _tracer(tracer_provider)
        self._shapes: dict[tuple[object, ...], _Shape] = {}
        # The last call's URL and method, with their shape. A client reuses
        # one URL object for each path it is given as a string, so a
        # service's calls mostly find their shape here by identity, without
        # a key built and hashed. One tuple, swapped whole: a thread never
        # reads one call's URL beside another's shape.
        self._last: tuple[URL, str, _Shape] | None = None

    def call_started(self, request: Request) -> _CallSpan:
        url = request.url
        last = self._last
        if last is not None and last[0] is url and last[1] is request.method:
            shape = last[2]
        else:
            shape = self._shape(request)
            self._last = (url, request.method, shape)
        span = self._tracer.start_span(
            request.route or shape.name,
            kind=shape.kind,
            attributes=shape.attributes,
        )
        return _CallSpan(self._tracer, span, shape)

    def _shape(self, request: Request) -> _Shape:
        url = request.url
        scheme = url.scheme
        # The endpoint (host:port) is the request's own, worked out once per URL.
        key: tuple[object, ...] = (request.method, scheme, request.endpoint)
        if scheme in RPC_SYSTEMS:
            key = (*key, url.raw_path)
        shapes = self._shapes
        shape = shapes.get(key)
        if shape is None:
            shape = _Shape(request)
            if len(shapes) >= MAX_SHAPES:
                shapes.clear()
            shapes[key] = shape
        return shape


class _Shape:
    """What the spans of every call of one method to one server share."""

    __slots__ = ("attributes", "grpc", "kind", "last", "methods", "name", "rpc", "urls")

    def __init__(self, request: Request) -> None:
        url = request.url
        self.rpc = url.scheme in RPC_SYSTEMS
        # A wrapped callable is an RPC of its own system, with no gRPC status.
        self.grpc = RPC_SYSTEMS.get(url.scheme) == "grpc"
        attributes: dict[str, AttributeValue] = {}
        if self.rpc:
            service, method = split_rpc_method(url.raw_path)
            attributes["server.address"] = url.raw_host or ""
            attributes["server.port"] = url.port or 0
            attributes["rpc.system"] = RPC_SYSTEMS[url.scheme]
            attributes["rpc.service"] = service
            attributes["rpc.method"] = method
            self.name = f"{service}/{method}"
            self.kind = SpanKind.CLIENT
            self.methods: dict[str, AttributeValue] = {}
        else:
            # Each attempt is the HTTP client span, and carries what the
            # conventions require of one; the call span around them is
            # internal and repeats none of it (every attribute costs the SDK
            # a validation, on every call).
            self.methods = {}
            self.name = _method_attributes(request.method, self.methods)
            self.kind = SpanKind.INTERNAL
        self.attributes: Mapping[str, AttributeValue] = MappingProxyType(attributes)
        self.urls: dict[URL, Mapping[str, AttributeValue]] = {}
        # The URL an attempt was last sent to, with its attributes, found by
        # identity as the shape itself is (ClientTracing._last); from the
        # start, the URL of the call that made the shape.
        self.last: tuple[URL, Mapping[str, AttributeValue]]
        self.attempt_attributes(url)

    def attempt_attributes(self, url: URL) -> Mapping[str, AttributeValue]:
        """What every attempt sent to ``url`` starts with (read-only: copy it to add more)."""
        attributes = self.urls.get(url)
        if attributes is None:
            built: dict[str, AttributeValue] = {
                "server.address": url.raw_host or "",
                "server.port": url.port or 0,
            }
            if not self.rpc:
                built.update(self.methods)
                built["url.full"] = safe_url(url)
            attributes = MappingProxyType(built)
            urls = self.urls
            if len(urls) >= MAX_URLS:
                urls.clear()
            urls[url] = attributes
        self.last = (url, attributes)
        return attributes


class _EndsAttempt:
    """Ends the span of an attempt, in ``_attempt``, as the attempt ended."""

    __slots__ = ()
    _attempt: Span | None

    def attempt_ended(self, attempt: Attempt) -> None:
        span = self._attempt
        assert span is not None  # set when the attempt started
        status = attempt.status
        if (
            status is not None
            and status < 400
            and attempt.error is None
            and not attempt.cancelled
            and type(attempt) is Attempt  # not a gRPC attempt, which has a code
        ):
            # The common attempt: one attribute, set without a dict (on a
            # span the sampler dropped, a call that does nothing).
            span.set_attribute(_STATUS, status)
        elif span.is_recording():
            _attempt_outcome(span, attempt)
        span.end()


class _CallSpan(_EndsAttempt):
    """A call's span, and the scope of its first attempt: one object a call, not two."""

    __slots__ = ("_attempt", "_context", "_shape", "_span", "_tracer")

    def __init__(self, tracer: Tracer, span: Span, shape: _Shape) -> None:
        self._tracer = tracer
        self._span = span
        self._shape = shape
        self._context: Context | None = None
        self._attempt = None

    def attempt_started(
        self, index: int, kind: AttemptKind, url: URL, headers: dict[str, str]
    ) -> _EndsAttempt | None:
        span = self._span
        parent = self._context
        if parent is None:
            parent = self._context = trace.set_span_in_context(span)
        if not span.is_recording():
            # The sampler dropped this trace, so it would drop an attempt's
            # span too: the call's own context goes out instead (not
            # sampled, so the next hop records nothing either), and the SDK
            # is spared a span per attempt on most calls of a sampled service.
            inject(headers, span, parent)
            return None
        shape = self._shape
        last = shape.last
        attributes = last[1] if last[0] is url else shape.attempt_attributes(url)
        if index:
            # Every attribute costs the SDK a validation: the common first
            # attempt carries only what the conventions require.
            attributes = {
                **attributes,
                "http.request.resend_count": index,
                "microcall.attempt.kind": str(kind),
            }
            if kind is AttemptKind.HEDGE:
                attributes["microcall.hedge"] = True
        attempt = self._tracer.start_span(
            shape.name,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        inject(headers, attempt, parent)
        if index or self._attempt is not None:
            return _AttemptSpan(attempt)
        self._attempt = attempt
        return self

    def call_ended(
        self,
        response: Response | None,
        error: BaseException | None,
        attempts: Sequence[Attempt],
    ) -> None:
        span = self._span
        if (
            response is not None
            and response.status_code < 400
            and len(attempts) == 1
            and not self._shape.rpc
        ):
            # The common call: its one attempt's span says it all.
            span.end()
            return
        if span.is_recording():
            self._ended(span, response, error, attempts)
        span.end()

    def _ended(
        self,
        span: Span,
        response: Response | None,
        error: BaseException | None,
        attempts: Sequence[Attempt],
    ) -> None:
        attributes: dict[str, AttributeValue] = {}
        if self._shape.rpc:
            code = None
            if self._shape.grpc:
                code = response.status_code if response is not None else grpc_code_of(error)
            _rpc_status(span, code, error, attributes)
        elif response is not None:
            if response.status_code >= 400:  # the status itself is on the last attempt's span
                attributes["error.type"] = str(response.status_code)
                span.set_status(StatusCode.ERROR)
        elif error is not None:
            attributes["error.type"] = type(error).__name__
            span.set_status(StatusCode.ERROR, type(error).__name__)
        if len(attempts) > 1:
            attributes["microcall.attempts"] = len(attempts)
        span.set_attributes(attributes)  # one lock and one pass, not one per attribute
        for attempt in attempts:
            if not attempt.sent:
                span.add_event(
                    _REFUSAL_EVENT,
                    {
                        "microcall.attempt.kind": str(attempt.kind),
                        "microcall.refused": attempt.error or "",
                    },
                )


class _AttemptSpan(_EndsAttempt):
    """The scope of an attempt after the first (a retry or a hedge)."""

    __slots__ = ("_attempt",)

    def __init__(self, span: Span) -> None:
        self._attempt = span


def _attempt_outcome(span: Span, attempt: Attempt) -> None:
    attributes: dict[str, AttributeValue] = {}
    code = getattr(attempt, "code", None)  # a gRPC attempt's status name
    if attempt.cancelled:
        # The same word the metrics use. The status stays unset: an
        # attempt stopped because another answered is not a failure.
        attributes["microcall.attempt.cancelled"] = True
        attributes["error.type"] = "cancelled"
    elif code is not None:
        _rpc_status(span, GRPC_CODE_NUMBERS.get(code), None, attributes)
    elif attempt.status is not None:
        _status(span, attempt.status, attributes)
    elif attempt.error is not None:
        name = attempt.error.partition(":")[0]
        name = name if name.isidentifier() else OTHER
        attributes["error.type"] = name
        span.set_status(StatusCode.ERROR, name)
    span.set_attributes(attributes)


def _rpc_status(
    span: Span,
    code: int | None,
    error: BaseException | None,
    attributes: dict[str, AttributeValue],
) -> None:
    # A client span fails on every status but OK (OpenTelemetry's RPC conventions).
    if code is not None:
        attributes["rpc.grpc.status_code"] = code
    if error is not None:
        attributes["error.type"] = type(error).__name__
        span.set_status(StatusCode.ERROR, type(error).__name__)
    elif code:
        attributes["error.type"] = str(code)
        span.set_status(StatusCode.ERROR)


def _status(span: Span, status: int, attributes: dict[str, AttributeValue]) -> None:
    attributes[_STATUS] = status
    if status >= 400:  # a client span fails on 4xx and 5xx alike
        attributes["error.type"] = str(status)
        span.set_status(StatusCode.ERROR)


# ------------------------------------------------------------------ server


class _HeaderGetter(Getter[HeaderLookup]):
    """Reads propagation headers through the middleware's lookup function."""

    def get(self, carrier: HeaderLookup, key: str) -> list[str] | None:
        value = carrier(key)
        return None if value is None else [value]

    def keys(self, carrier: HeaderLookup) -> list[str]:
        return []  # the propagators in use ask for their fields by name


_GETTER = _HeaderGetter()


class ServerTracing:
    """Server spans: pass it in ``ServerOptions(observers=[...])``.

    Continues the caller's trace from its ``traceparent`` (through the global
    propagator) and makes the request's span current while the handler runs.
    """

    __slots__ = ("_tracer",)

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = _tracer(tracer_provider)

    def request_started(self, request: InboundRequest) -> _ServerSpan:
        parent = propagate.get_global_textmap().extract(request.header, getter=_GETTER)
        attributes: dict[str, AttributeValue] = {"url.scheme": request.scheme}
        if request.protocol == "grpc":
            attributes["rpc.system"] = "grpc"
            name = "grpc"  # named after the method once the interceptor knows it exists
        else:
            name = _method_attributes(request.method, attributes)
            attributes["url.path"] = safe_path(request.path)
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return _ServerSpan(span, name, request.protocol, token)


class _ServerSpan:
    __slots__ = ("_method", "_protocol", "_span", "_token")

    def __init__(self, span: Span, method: str, protocol: str, token: Token[Context]) -> None:
        self._span = span
        self._method = method
        self._protocol = protocol
        self._token: Token[Context] | None = token

    def handler_done(self) -> None:
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)

    def request_ended(self, result: ServerResult) -> None:
        span = self._span
        if span.is_recording():
            if self._protocol == "grpc":
                self._grpc_ended(span, result)
            else:
                self._http_ended(span, result)
            if result.refused is not None:
                span.set_attribute("microcall.refused", result.refused)
            if result.priority is not None:
                span.set_attribute("microcall.priority", result.priority)
        span.end()

    def _http_ended(self, span: Span, result: ServerResult) -> None:
        if result.route:
            span.set_attribute("http.route", result.route)
            span.update_name(f"{self._method} {result.route}")
        status = result.status
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        if result.error is not None:
            span.set_attribute("error.type", result.error)
            span.set_status(StatusCode.ERROR, result.error)
        elif status is not None and status >= 500:  # 4xx is the caller's problem, not ours
            span.set_attribute("error.type", str(status))
            span.set_status(StatusCode.ERROR)

    def _grpc_ended(self, span: Span, result: ServerResult) -> None:
        service, method = split_rpc_method(result.route)
        span.set_attribute("rpc.service", service)
        span.set_attribute("rpc.method", method)
        if service != OTHER:
            span.update_name(f"{service}/{method}")
        if result.status is not None:
            span.set_attribute("rpc.grpc.status_code", result.status)
        if result.error is not None:
            span.set_attribute("error.type", result.error)
            span.set_status(StatusCode.ERROR, result.error)
        elif result.status in _GRPC_SERVER_ERRORS:
            span.set_status(StatusCode.ERROR)


# The gRPC codes that mean the server failed (OpenTelemetry's RPC conventions):
# UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})
