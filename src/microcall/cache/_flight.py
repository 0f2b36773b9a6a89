"""Single flight: concurrent identical calls share one lookup and at most one request.

Theory of operation. The first call for a key becomes the **leader**: it
registers a :class:`Flight`, looks the key up, sends if it must, stores, and
then settles the flight. Calls with the same key that arrive meanwhile are
**followers**: they join the flight and wait for the leader's outcome,
each no longer than its own deadline. Settling hands every follower:

* the leader's Response (each follower makes its own copy),
* or the leader's CallError (shared: one request failed for all of them),
* or nothing (``None``), when the leader was cancelled, ran out of its own
  deadline, or hit a bug: its outcome says nothing about the followers'
  calls, so they start over and one of them leads.

The key covers everything the answer depends on (event loop, method, URL,
every request header, the call's cache policy), so only truly identical
calls share. The leader removes the flight before settling it, so a
follower that starts over never joins a flight that has ended.
"""

from __future__ import annotations

import asyncio

from microcall._response import Response
from microcall.errors import CallError

Outcome = Response | CallError | None


class Flight:
    """One leader's call in progress, and the followers waiting for it."""

    __slots__ = ("_waiters",)

    def __init__(self) -> None:
        self._waiters: list[asyncio.Future[Outcome]] | None = None

    def join(self) -> asyncio.Future[Outcome]:
        """A future for the leader's outcome (a follower awaits it)."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [future]
        else:
            self._waiters.append(future)
        return future

    @property
    def followers(self) -> int:
        return 0 if self._waiters is None else len(self._waiters)

    def settle(self, outcome: Outcome) -> None:
        """Hand ``outcome`` to every follower still waiting."""
        waiters, self._waiters = self._waiters, None
        for future in waiters or ():
            if not future.done():  # a follower whose deadline passed has gone
                future.set_result(outcome)
