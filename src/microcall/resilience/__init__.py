"""Resilient callables: HTTP's strategies, deadlines and budgets for any function.

A database query or a message publish fails and stalls like an HTTP call,
and deserves the same treatment: a deadline inherited from the request being
served, retries with jittered backoff (or hedges) that draw on the same retry
budget as the HTTP clients, one typed error listing every attempt, and the
same metrics and traces. :class:`Resilience` is that policy; it decorates a
function (blocking or async) or calls one (``call`` / ``acall``), and
:func:`resilient` is the decorator's short form::

    @microcall.resilient(strategy=microcall.retry(3), on=ConnectionError, timeout=1.0)
    async def find_user(user_id): ...

How it is built: a call runs the same per-call state machine as HTTP and
gRPC calls (:mod:`microcall._driver`); ``_driver`` adapts it to a callable
(its rules judge outcomes with the classifier in ``_classify``, and it
decides how the call ends); ``_async`` and ``_sync`` run its decisions with
tasks or on the caller's thread; ``_observe`` shows calls to the client
observers in HTTP's words. docs/callables.md is the user's guide.
"""

from microcall.resilience._classify import OutcomeClassifier, RetryOn
from microcall.resilience._resilience import DEFAULT_TIMEOUT, Resilience, resilient

__all__ = ["DEFAULT_TIMEOUT", "OutcomeClassifier", "Resilience", "RetryOn", "resilient"]
