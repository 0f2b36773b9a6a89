"""Direct calls: a blocking Client's plain calls, run in the calling thread.

A Client's calls run on its background loop, and crossing to that thread
and back is most of what a sequential call costs (docs/clients.md). A plain
call needs nothing of the loop: it runs here instead, through the engine's
direct runner (:mod:`microcall._direct_call`) over the default transport's
blocking pool (``transports/_h1_direct``). It is the same call: built by the
same code, under the same deadline, priority and observers, with the same
records and errors; only the thread differs.

A call is plain when all of these hold, and any other goes to the loop:

- the client: the default HTTP/1.1 transport (or an ``H1Transport``) with no
  proxy, no response cache, no cookie jar, no auth, no request hooks, and
  observers that say they may be called from any thread (``thread_safe =
  True``, as ``ClientMetrics`` and ``ClientTracing`` do);
- the call: attempts one after another (``single()`` or ``retry(...)``,
  never ``hedged(...)``) to a client's one endpoint, or to an absolute URL;
  no options beyond ``DIRECT_OPTIONS``; and a body held in memory of at most
  ``DIRECT_BODY_MAX`` bytes.

Hedges, calls balanced over replicas, streams, uploads read as they go,
caching, cookies and auth flows keep running on the loop, where the
engine's tasks and timers are.
"""

from __future__ import annotations

from yarl import URL

from microcall._direct_call import call_direct as engine_call_direct
from microcall._direct_call import takes_direct
from microcall._response import Response
from microcall.client._async import AsyncClient
from microcall.client._options import CallOptions
from microcall.context import inherit_deadline, inherit_priority
from microcall.errors import UsageError
from microcall.transports.h1 import DIRECT_BODY_MAX, DirectPool, H1Transport

# The call options a direct call takes; a call given any other goes to the loop.
DIRECT_OPTIONS = frozenset(
    {
        "params",
        "headers",
        "json",
        "data",
        "content",
        "timeout",
        "deadline",
        "priority",
        "strategy",
        "idempotent",
        "route",
    }
)

_SCHEMES = frozenset({"http", "https"})


def direct_pool(client: AsyncClient) -> DirectPool | None:
    """The pool ``client``'s direct calls use; None when none of its calls can be direct."""
    transport = client._engine.transport
    if not isinstance(transport, H1Transport) or client.cache is not None:
        return None
    if client._session.active:
        return None
    return transport.direct


def call_direct(
    client: AsyncClient, pool: DirectPool, method: str, url: str | URL, options: CallOptions
) -> Response | None:
    """Run the call in this thread if it is plain (see the module); None if it must go to the loop."""
    if type(method) is not str:
        raise UsageError(f"a method must be a str such as 'GET', got {method!r}")
    method = method.upper()
    if options:
        if not options.keys() <= DIRECT_OPTIONS:
            return None
        request = client._build(method, url, options)
        expires_at = client._expires_at(options)
        priority = client._priority_of(options)
        strategy = options.get("strategy", client._strategy)
    else:  # the common call, as AsyncClient.request makes it
        request = client._bare_request(method, url)
        expires_at = inherit_deadline(client._now() + client._timeout)
        priority = inherit_priority(client._priority)
        strategy = client._strategy
    body = request.body
    if (
        (body is not None and (type(body) is not bytes or len(body) > DIRECT_BODY_MAX))
        or request.url.scheme not in _SCHEMES
        or not takes_direct(client._engine, request, strategy)
    ):
        return None
    return engine_call_direct(client._engine, request, expires_at, priority, strategy, pool.send)


def close_direct(client: AsyncClient) -> None:
    """Close ``client``'s direct sockets, from any thread: a call blocked on one wakes at once.

    A client whose loop never started (every call was direct) has nothing
    else to close; otherwise the loop closes the rest.
    """
    direct = getattr(client._engine.transport, "direct", None)
    if isinstance(direct, DirectPool):
        direct.close()
