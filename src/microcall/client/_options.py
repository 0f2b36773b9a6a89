"""What a client is configured with, and what a call may override: typed once, for all front doors."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, TypedDict

from microcall._clock import Clock
from microcall._durations import Seconds
from microcall._limits import Limits
from microcall.deadline import Deadline
from microcall.policy.classify import Classifier
from microcall.policy.strategy import Strategy
from microcall.priority import Priority
from microcall.transports import Transport

QueryValue = str | int | float | bool | None
Params = Mapping[str, QueryValue | list[QueryValue]] | list[tuple[str, QueryValue]]


class ClientOptions(TypedDict, total=False):
    """Keyword arguments every front door's constructor takes.

    headers:          sent with every call (a call's own headers win)
    timeout:          default total deadline of a call, seconds (never infinite)
    strategy:         default strategy: ``single()``, ``retry(...)``, ``hedged(...)``
    priority:         default priority when neither call nor context gives one
    limits:           connection pool limits (total, per host, keep-alive)
    classifier:       ``classifier(response, error) -> Verdict``
    transport:        a Transport; default aiohttp with ``limits`` and ``verify``
    verify:           TLS verification: True (default), False, or an SSLContext
    follow_redirects: follow 3xx redirects (default True)
    deadline_floor:   no attempt starts with less than this left (default 5 ms)
    clock:            the clock policies read (tests pass a FakeClock)
    """

    headers: Mapping[str, str]
    timeout: Seconds
    strategy: Strategy
    priority: Priority | str
    limits: Limits
    classifier: Classifier
    transport: Transport
    verify: bool | ssl.SSLContext
    follow_redirects: bool
    deadline_floor: Seconds
    clock: Clock


class CallOptions(TypedDict, total=False):
    """Keyword arguments every call takes (``get``, ``post``, ... and ``request``).

    params:     query parameters, added to those already in the URL
    headers:    extra headers for this call
    json:       a value sent as a JSON body
    data:       a form (dict, url-encoded) or raw bytes / str
    content:    raw bytes / str body
    timeout:    this call's total deadline in seconds (instead of the client's default)
    deadline:   an explicit Deadline (shared with other calls, say)
    priority:   this call's priority
    strategy:   this call's strategy
    idempotent: True lets a POST / PATCH retry and hedge; False forbids it for any method
    """

    params: Params
    headers: Mapping[str, str]
    json: Any
    data: Mapping[str, Any] | bytes | str
    content: bytes | str
    timeout: Seconds
    deadline: Deadline
    priority: Priority | str
    strategy: Strategy
    idempotent: bool
