"""The options every calling subcommand shares: strategy, deadline, priority, replicas, URL.

``--strategy`` spells a strategy as one word, so it fits on a command line
and in ``--compare``::

    single          one attempt
    retry           retry(3)            retry:N      retry(N)
    hedged          hedged() (learned delay, 5% extra load at most)
    hedged:0.02     hedged(0.02): a second copy after 20 ms
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from yarl import URL

import microcall
from microcall.cli._common import CliError
from microcall.errors import ConfigurationError
from microcall.priority import Priority

STRATEGY_SPELLINGS = "single, retry, retry:N, hedged, hedged:SECONDS"
# The client's own default: a call never waits forever.
DEFAULT_DEADLINE = 10.0


def parse_strategy(text: str) -> microcall.Strategy:
    """``"hedged:0.02"`` -> ``hedged(0.02)``; anything else unknown raises :class:`CliError`."""
    name, _, argument = text.strip().partition(":")
    try:
        if name == "single" and not argument:
            return microcall.single()
        if name == "retry":
            return microcall.retry(int(argument) if argument else 3)
        if name == "hedged":
            return microcall.hedged(float(argument)) if argument else microcall.hedged()
    except (ValueError, ConfigurationError) as error:
        raise CliError(f"bad strategy {text!r}: {error}") from None
    raise CliError(f"unknown strategy {text!r}; known: {STRATEGY_SPELLINGS}")


def parse_url(text: str) -> URL:
    """An absolute http(s) URL; ``:8080/path`` and ``host/path`` get ``http://`` as in httpie."""
    if text.startswith(":"):
        text = "http://localhost" + text
    elif "://" not in text:
        text = "http://" + text
    try:
        url = URL(text)
        port = url.port  # a non-numeric port raises here
    except ValueError:
        raise CliError(f"bad URL {text!r}") from None
    if url.scheme not in ("http", "https") or not url.host or port is None:
        raise CliError(f"bad URL {text!r}: expected http(s)://host[:port]/path")
    return url


def seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def priority(text: str) -> str:
    """An argparse type: high, normal or low."""
    try:
        return Priority.parse(text).value
    except (ConfigurationError, ValueError):
        raise argparse.ArgumentTypeError(
            f"unknown priority {text!r}; known: high, normal, low"
        ) from None


def add_call_options(parser: argparse.ArgumentParser) -> None:
    """The options of a call: ``--deadline``, ``--priority``, ``--strategy``, ``--replica``."""
    group = parser.add_argument_group("call options")
    group.add_argument(
        "--deadline",
        type=seconds,
        default=DEFAULT_DEADLINE,
        metavar="SECONDS",
        help="total time for the call, every attempt included; what is left goes "
        "downstream as X-Request-Timeout (default %(default)s)",
    )
    group.add_argument(
        "--priority", type=priority, help="high, normal or low: sent as X-Request-Priority"
    )
    group.add_argument(
        "--strategy",
        default="single",
        help=f"how the call becomes attempts: {STRATEGY_SPELLINGS} (default %(default)s)",
    )
    group.add_argument(
        "--replica",
        action="append",
        default=[],
        metavar="URL",
        help="another base URL serving the same paths (repeatable): calls are balanced "
        "over the URL's own and these, retries and hedges go where the balancer says",
    )
    group.add_argument(
        "--idempotent",
        action="store_true",
        help="let a POST or PATCH be retried or hedged (other methods are idempotent already)",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where a call goes: the base URLs the client balances over and the path it asks for."""

    bases: tuple[str, ...]
    path: str

    @classmethod
    def of(cls, url: URL, replicas: list[str]) -> Target:
        bases = [str(url.origin())]
        for replica in replicas:
            base = parse_url(replica)
            if base.path not in ("", "/") or base.query_string:
                raise CliError(f"bad replica {replica!r}: give a base URL, without a path")
            bases.append(str(base.origin()))
        return cls(bases=tuple(bases), path=url.raw_path_qs)
