"""Balancing across replicas: power of two choices on peak-EWMA latency x outstanding.

Theory of operation (Finagle's and Linkerd's ``p2c`` + ``PeakEwma``).

Each endpoint keeps :class:`EndpointStats`: the attempts outstanding on it and
an estimate of its latency that is

* peak-sensitive: a latency above the estimate replaces it at once, so one
  slow answer makes an endpoint look slow immediately;
* otherwise a moving average with time constant ``decay_time`` (10 s): a
  latency below the estimate pulls it down with weight ``1 - exp(-Δ/τ)``,
  Δ being the time since the previous observation;
* forgetful: between observations the estimate decays toward zero with the
  same time constant, so an endpoint avoided for being slow is tried again
  after a while and can show it has recovered.

A failed attempt counts as a latency of at least ``FAILURE_PENALTY`` (1 s): a
replica that refuses connections answers in microseconds and would
otherwise look like the fastest of all, taking nearly every call until its
breaker or ejection took it out (and ejection takes out at most a tenth of
the replicas). Penalised, a failing replica is tried again once its
estimate has decayed below the others' (about a minute against replicas
answering in a few milliseconds, with the default decay time), so a dead
one costs about one attempt a minute of each client, and a recovered one
wins its traffic back within that. An attempt cancelled before its outcome
(a hedge that lost) is no failure: its elapsed time counts only when it
raises the estimate.

The cost of an endpoint is ``estimate x (outstanding + 1)``: latency times the
queue one more request would join. An endpoint with no measurement yet costs
nothing while idle (so it gets tried) and a large penalty while it has an
attempt outstanding (so a new replica is not flooded before it answers once).

``pick`` draws two distinct endpoints at random (``rng``, injected) and takes
the cheaper: nearly as good as scanning for the cheapest, without every
client herding onto the same one. ``mode="round_robin"`` cycles instead.

Which endpoints are candidates: those not in ``exclude`` (a hedge goes to a
different replica than the attempts it backs up) whose breaker admits
attempts and that are not ejected. When that leaves none, best effort, in
this order: usable endpoints even if excluded (a hedge on the same replica
beats one on a broken replica), then endpoints not excluded, then any.

Interface for the engine::

    endpoint = balancer.pick(now, exclude=running_endpoints)
    endpoint.stats.start(now)                         # the attempt is sent
    endpoint.stats.finish(latency, success, now)      # it ended with an outcome
    endpoint.stats.abandon(elapsed, now)              # or was cancelled (a loser)
    balancer.update(addresses, now)                   # after re-resolving DNS

``Endpoint.breaker`` (optional) is consulted through its side-effect-free
``available(now)``; the engine still calls ``breaker.allow`` and ``record``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from microcall._durations import to_seconds
from microcall.errors import ConfigurationError
from microcall.policy.breaker import CircuitBreaker
from microcall.policy.ejection import OutlierDetector

# Finagle's and Linkerd's default decay time for PeakEwma.
DEFAULT_DECAY_TIME = 10.0
# The cost of a busy endpoint never measured: above anything a measured one
# reaches in practice (10 s of latency with 10,000 outstanding is 1e5).
UNMEASURED_PENALTY = 1e6
# The least latency a failed attempt counts as (seconds): far above a
# healthy replica's, so a failing one is avoided until its estimate decays.
FAILURE_PENALTY = 1.0

BalancingMode = Literal["peak_ewma", "round_robin"]
_MODES = ("peak_ewma", "round_robin")


class EndpointStats:
    """Outstanding attempts and peak-EWMA latency of one endpoint."""

    __slots__ = ("_estimate", "_measured", "_stamp", "decay_time", "outstanding")

    def __init__(self, decay_time: float = DEFAULT_DECAY_TIME) -> None:
        self.decay_time = decay_time
        self.outstanding = 0
        """Attempts started and not yet finished."""
        self._estimate = 0.0
        self._stamp = 0.0
        self._measured = False

    def start(self, now: float) -> None:
        """An attempt was sent to this endpoint."""
        self.outstanding += 1

    def finish(self, latency: float, success: bool, now: float) -> None:
        """An attempt ended after ``latency`` seconds with an outcome (``success=False``: a failure)."""
        self._ended(latency if success else max(latency, FAILURE_PENALTY), success, now)

    def abandon(self, elapsed: float, now: float) -> None:
        """An attempt was cancelled after ``elapsed`` seconds, before its outcome (a losing hedge)."""
        self._ended(elapsed, False, now)

    def _ended(self, latency: float, pulls_down: bool, now: float) -> None:
        if self.outstanding > 0:
            self.outstanding -= 1
        if not math.isfinite(latency):
            return
        latency = max(latency, 0.0)
        if not self._measured:
            self._estimate = latency
            self._measured = True
        else:
            elapsed = max(now - self._stamp, 0.0)
            weight = math.exp(-elapsed / self.decay_time)
            # The estimate as of now: decayed toward zero since the last sample.
            current = self._estimate * weight
            if latency >= current:
                self._estimate = latency
            elif pulls_down:
                # The decay above is the old estimate's share; the sample gets
                # the rest. (Decaying ``current`` again would count the time
                # twice and settle a steady latency L at L / (1 + weight):
                # half of it for an endpoint sampled often, all of it for one
                # sampled rarely, which favours the busy endpoints.)
                self._estimate = current + latency * (1.0 - weight)
            else:
                self._estimate = current
        self._stamp = now

    def latency(self, now: float) -> float | None:
        """The latency estimate at ``now`` (None before the first measurement)."""
        if not self._measured:
            return None
        return self._estimate * math.exp(-max(now - self._stamp, 0.0) / self.decay_time)

    def cost(self, now: float) -> float:
        """The balancing cost: estimated latency x (outstanding + 1)."""
        if not self._measured:
            return 0.0 if self.outstanding == 0 else UNMEASURED_PENALTY + self.outstanding
        estimate = self._estimate * math.exp(-max(now - self._stamp, 0.0) / self.decay_time)
        return estimate * (self.outstanding + 1)


@dataclass(eq=False, slots=True)
class Endpoint:
    """One replica: its address (a base URL), its stats and, optionally, its breaker.

    Endpoints compare by identity, so a set of them can be passed as ``exclude``.
    """

    address: str
    stats: EndpointStats = field(default_factory=EndpointStats)
    breaker: CircuitBreaker | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BalancerConfig:
    """How a replica is chosen: ``"peak_ewma"`` (power of two choices) or ``"round_robin"``."""

    mode: BalancingMode = "peak_ewma"
    decay_time: float = DEFAULT_DECAY_TIME

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigurationError(
                f"balancing mode must be one of {', '.join(_MODES)}, got {self.mode!r}"
            )
        object.__setattr__(
            self, "decay_time", to_seconds(self.decay_time, name="balancer decay_time")
        )


EndpointFactory = Callable[[str], Endpoint]


class Balancer:
    """Chooses the endpoint for each attempt among a group of replicas.

    ``new_endpoint`` makes the :class:`Endpoint` for an address (the engine
    passes one that attaches a breaker); by default, stats only. ``outliers``,
    if given, is asked which endpoints are ejected and is kept in step with
    ``update``.
    """

    __slots__ = ("_cursor", "_endpoints", "_new_endpoint", "_rng", "config", "outliers")

    def __init__(
        self,
        addresses: Iterable[str],
        config: BalancerConfig | None = None,
        *,
        rng: random.Random | None = None,
        outliers: OutlierDetector | None = None,
        new_endpoint: EndpointFactory | None = None,
    ) -> None:
        self.config = config or BalancerConfig()
        self.outliers = outliers
        self._rng = rng or random.Random()
        self._new_endpoint = new_endpoint or self._default_endpoint
        self._cursor = 0
        self._endpoints: tuple[Endpoint, ...] = ()
        self._replace(addresses)

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The current endpoints, in the order given."""
        return self._endpoints

    def update(self, addresses: Iterable[str], now: float) -> None:
        """Replace the group (after DNS re-resolution); endpoints that stay keep their state.

        An empty list is refused with ConfigurationError: keep the previous
        group when a resolution comes back empty.
        """
        self._replace(addresses)
        if self.outliers is not None:
            self.outliers.update((e.address for e in self._endpoints), now)

    def pick(self, now: float, exclude: Collection[Endpoint] = ()) -> Endpoint:
        """The endpoint for the next attempt, avoiding ``exclude`` and unusable ones if it can."""
        endpoints = self._endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        usable = [e for e in endpoints if self._usable(e, now)]
        candidates = (
            [e for e in usable if e not in exclude]
            or usable
            or [e for e in endpoints if e not in exclude]
            or list(endpoints)
        )
        if self.config.mode == "round_robin":
            return self._next_in_turn(candidates)
        return self._cheaper_of_two(candidates, now)

    def _usable(self, endpoint: Endpoint, now: float) -> bool:
        breaker = endpoint.breaker
        if breaker is not None and not breaker.available(now):
            return False
        outliers = self.outliers
        return outliers is None or not outliers.is_ejected(endpoint.address, now)

    def _cheaper_of_two(self, candidates: Sequence[Endpoint], now: float) -> Endpoint:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        first = self._rng.randrange(count)
        second = self._rng.randrange(count - 1)
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        return a if a.stats.cost(now) <= b.stats.cost(now) else b

    def _next_in_turn(self, candidates: Sequence[Endpoint]) -> Endpoint:
        endpoints = self._endpoints
        count = len(endpoints)
        allowed = {id(e) for e in candidates}
        for step in range(count):
            index = (self._cursor + step) % count
            endpoint = endpoints[index]
            if id(endpoint) in allowed:
                self._cursor = (index + 1) % count
                return endpoint
        return candidates[0]  # unreachable: candidates are drawn from endpoints

    def _replace(self, addresses: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            raise ConfigurationError("a balancer needs at least one endpoint address")
        known = {e.address: e for e in self._endpoints}
        self._endpoints = tuple(known.get(a) or self._new_endpoint(a) for a in wanted)
        self._cursor %= len(self._endpoints)

    def _default_endpoint(self, address: str) -> Endpoint:
        return Endpoint(address, EndpointStats(self.config.decay_time))
