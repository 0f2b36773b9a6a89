"""ObserverAdapter: a client observer (metrics, tracing, your own) follows gRPC calls.

There is one observer interface underneath, the one HTTP calls report to
(:class:`microcall.observe.Observer`); :class:`ObserverAdapter` wraps any such
observer so a gRPC channel can report to it, by putting each call in that
interface's words:

* a call is a ``Request`` ``POST grpc://<authority>/package.Service/Method``
  made relative to the channel, so metrics label it with the channel's
  target (``server_address``, ``server_port``) and the method's service and
  name (``rpc_service``, ``rpc_method``), and a tracer names its span
  ``package.Service/Method``;
* each attempt goes to ``grpc://<target>/package.Service/Method``, and what
  the observer writes into the attempt's ``headers`` (``traceparent``,
  ``tracestate``, ``baggage``) is appended to the attempt's metadata, names
  lower-cased as gRPC requires;
* the call ends with a response whose ``status_code`` is the numeric gRPC
  status (0 for OK), or with the error (``GrpcStatusError`` keeps its
  ``code``; ``DeadlineExceeded`` counts as DEADLINE_EXCEEDED).

The attempts are the channel's own :class:`RpcAttempt` records, handed on
as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from yarl import URL

from microcall._attempt import AttemptKind
from microcall._request import Request
from microcall._response import Response
from microcall.grpc._observe import Metadata, RpcAttempt, RpcMethod
from microcall.observe.hooks import AttemptScope, CallScope, Observer

# URLs are built once per target and method: a fixed set in a real
# application, capped against a proxy that forwards whatever names arrive.
_MAX_CACHED_URLS: Final = 4096


class ObserverAdapter:
    """An :class:`~microcall.grpc.RpcObserver` made of a client :class:`~microcall.observe.Observer`.

    ::

        metrics, tracing = ClientMetrics(), ClientTracing()
        channel = AsyncChannel(target, observers=[ObserverAdapter(metrics),
                                                  ObserverAdapter(tracing)])

    Share one adapter (and its observer) between channels as you would the observer.
    """

    __slots__ = ("_urls", "observer")

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self._urls: dict[tuple[str, str], URL] = {}

    def __repr__(self) -> str:
        return f"ObserverAdapter({self.observer!r})"

    def url(self, address: str, full_name: str) -> URL:
        """``grpc://address/package.Service/Method`` (no host when ``address`` is no host:port)."""
        key = (address, full_name)
        url = self._urls.get(key)
        if url is None:
            url = _url(address, full_name)
            if len(self._urls) < _MAX_CACHED_URLS:
                self._urls[key] = url
        return url

    def call_started(self, method: RpcMethod) -> _CallScope | None:
        url = self.url(method.authority, method.full_name)
        request = Request(
            "POST",
            url,
            {},
            replayable=method.idempotent,
            path=method.full_name,
            endpoint=method.authority,
        )
        scope = self.observer.call_started(request)
        return None if scope is None else _CallScope(self, scope, request, method.full_name)


class _CallScope:
    __slots__ = ("_adapter", "_full_name", "_request", "_scope")

    def __init__(
        self, adapter: ObserverAdapter, scope: CallScope, request: Request, full_name: str
    ) -> None:
        self._adapter = adapter
        self._scope = scope
        self._request = request
        self._full_name = full_name

    def attempt_started(
        self, index: int, kind: AttemptKind, target: str, metadata: Metadata
    ) -> AttemptScope | None:
        headers: dict[str, str] = {}
        scope = self._scope.attempt_started(
            index, kind, self._adapter.url(target, self._full_name), headers
        )
        for name, value in headers.items():
            metadata.append((name.lower(), value))
        return scope

    def call_ended(
        self, response: object | None, error: BaseException | None, attempts: Sequence[RpcAttempt]
    ) -> None:
        answer = None
        if error is None:
            # A unary call's message, or None for a stream that ended well: OK either way.
            request = self._request
            answer = Response(
                status_code=0, headers={}, content=b"", url=request.url, request=request
            )
        self._scope.call_ended(answer, error, attempts)


def _url(address: str, full_name: str) -> URL:
    path = "/" + full_name.lstrip("/")
    try:
        url = URL(f"grpc://{address}{path}")
    except ValueError:
        url = None
    if url is None or url.raw_path != path:
        # A target grpc resolves itself (dns:///name, unix:path): no host to name.
        return URL.build(scheme="grpc", path=path)
    return url
