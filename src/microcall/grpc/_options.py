"""ChannelOptions: how a microcall gRPC channel turns a stub's call into attempts."""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool

from microcall._clock import MONOTONIC, Clock
from microcall._durations import Seconds, to_seconds
from microcall._engine import DEFAULT_DEADLINE_FLOOR
from microcall._group import endpoint_policies
from microcall._validate import flag
from microcall.errors import ConfigurationError
from microcall.grpc._status import RETRYABLE_CODES
from microcall.policy.balancer import BalancerConfig
from microcall.policy.breaker import CircuitBreakerConfig
from microcall.policy.budget import RetryBudgetConfig
from microcall.policy.ejection import OutlierEjectionConfig
from microcall.policy.strategy import SINGLE, Strategy
from microcall.priority import Priority

# The same default deadline as an HTTP client's: a call nobody gave a deadline
# to still ends, and long enough for any ordinary call between services.
DEFAULT_TIMEOUT = 10.0

_NAME = re.compile(r"[A-Za-z_][\w.]*(?:/[A-Za-z_]\w*)?")
_SAFE_LEVELS = frozenset(
    {descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelOptions:
    """Settings of a :class:`~microcall.grpc.AsyncChannel` or :class:`~microcall.grpc.Channel`.

    timeout          deadline of a call when neither the caller nor the context gives one
    strategy         ``single()``, ``retry(...)`` or ``hedged(...)``, for idempotent unary calls
    priority         sent as ``x-request-priority`` unless the context or the call says
                     otherwise (default None: no priority sent, the server's default applies)
    idempotent       methods that may be sent more than once: full names
                     (``"bookstore.Recommendations/Recommend"``) or whole services
                     (``"bookstore.Recommendations"``); a method whose proto says
                     ``option idempotency_level = IDEMPOTENT`` (or ``NO_SIDE_EFFECTS``) is
                     idempotent without being listed
    retryable_codes  statuses another attempt may fix (default UNAVAILABLE, RESOURCE_EXHAUSTED)
    budget           retry budget shared by the channel's calls (None: unlimited)
    breaker          a circuit breaker per target (None: no breaker)
    balancer         how a target is chosen when there are several
    ejection         outlier ejection across targets (None: off)
    deadline_floor   no attempt starts with less than this left
    clock            the clock deadlines and policies read (tests pass a FakeClock)
    grpc_options     channel arguments for every underlying grpc channel
    credentials      the channels' credentials (None: TLS verified against the system's
                     roots, except for loopback and Unix-socket targets)
    insecure         True: plaintext to every target (a mesh whose sidecar does TLS);
                     never together with ``credentials``
    compression      the channels' default compression

    ::

        ChannelOptions(timeout=2.0, strategy=microcall.hedged(),
                       idempotent={"bookstore.Recommendations"})
    """

    timeout: Seconds = DEFAULT_TIMEOUT
    strategy: Strategy = SINGLE
    priority: Priority | str | None = None
    idempotent: Collection[str] = ()
    retryable_codes: Collection[grpc.StatusCode] = RETRYABLE_CODES
    budget: RetryBudgetConfig | None = field(default_factory=RetryBudgetConfig)
    breaker: CircuitBreakerConfig | None = None
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    ejection: OutlierEjectionConfig | None = field(default_factory=OutlierEjectionConfig)
    deadline_floor: Seconds = DEFAULT_DEADLINE_FLOOR
    clock: Clock = MONOTONIC
    grpc_options: Sequence[tuple[str, Any]] = ()
    credentials: grpc.ChannelCredentials | None = None
    insecure: bool = False
    compression: grpc.Compression | None = None

    def __post_init__(self) -> None:
        set_field = object.__setattr__
        set_field(self, "timeout", to_seconds(self.timeout, name="timeout"))
        set_field(self, "deadline_floor", to_seconds(self.deadline_floor, name="deadline_floor"))
        if not callable(getattr(self.strategy, "plan", None)):
            raise ConfigurationError(
                f"strategy must come from single(), retry() or hedged(), got {self.strategy!r}"
            )
        if self.priority is not None:
            set_field(self, "priority", Priority.parse(self.priority))
        set_field(self, "idempotent", _method_names(self.idempotent))
        codes = frozenset(self.retryable_codes)
        for code in codes:
            if not isinstance(code, grpc.StatusCode) or code in _NEVER_RETRYABLE:
                raise ConfigurationError(
                    f"retryable_codes must be grpc.StatusCode values other than OK and "
                    f"DEADLINE_EXCEEDED, got {code!r}"
                )
        set_field(self, "retryable_codes", codes)
        if self.budget is not None and not isinstance(self.budget, RetryBudgetConfig):
            raise ConfigurationError(f"budget must be a RetryBudgetConfig, got {self.budget!r}")
        endpoint_policies(self.balancer, self.breaker, self.ejection)
        if not callable(getattr(self.clock, "now", None)):
            raise ConfigurationError(f"clock must have a now() method, got {self.clock!r}")
        set_field(self, "grpc_options", tuple(self.grpc_options))
        flag("insecure", self.insecure)
        if self.insecure and self.credentials is not None:
            raise ConfigurationError("insecure=True and credentials contradict each other")

    def is_idempotent(self, full_name: str) -> bool:
        """Whether ``full_name`` (``/package.Service/Method``) may be sent more than once."""
        listed = self.idempotent
        name = full_name.lstrip("/")
        if listed and (name in listed or name.rpartition("/")[0] in listed):
            return True
        return declared_idempotent(name)


_NEVER_RETRYABLE = frozenset({grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED})


def _method_names(given: Collection[str]) -> frozenset[str]:
    names = (given,) if isinstance(given, str) else tuple(given)
    normalised = set()
    for name in names:
        text = name.lstrip("/") if isinstance(name, str) else None
        if text is None or _NAME.fullmatch(text) is None:
            raise ConfigurationError(
                "idempotent takes method names like 'package.Service/Method' or service "
                f"names like 'package.Service', got {name!r}"
            )
        normalised.add(text)
    return frozenset(normalised)


@functools.lru_cache(maxsize=1024)
def declared_idempotent(name: str) -> bool:
    """Whether the proto of ``package.Service/Method`` declares it free of side effects."""
    service, _, method = name.partition("/")
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{method}")
    except KeyError:  # a method whose generated module is not imported: not declared
        return False
    level: int = descriptor.GetOptions().idempotency_level
    return level in _SAFE_LEVELS
