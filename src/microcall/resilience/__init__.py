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

How it is built: ``_driver`` is the per-call state machine (no I/O, no
clock: the plan and the budgets from :mod:`microcall._call`, the records,
the classification of outcomes in ``_classify``); ``_async`` and ``_sync``
run its decisions with tasks or on the caller's thread; ``_observe`` tells
the client observers. docs/callables.md is the user's guide.
"""

from microcall.resilience._classify import OutcomeClassifier, RetryOn
from microcall.resilience._resilience import DEFAULT_TIMEOUT, Resilience, resilient

__all__ = ["DEFAULT_TIMEOUT", "OutcomeClassifier", "Resilience", "RetryOn", "resilient"]
