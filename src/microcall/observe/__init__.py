"""Observability: the observer interface every metrics and tracing backend plugs into."""

from microcall.observe.hooks import AttemptScope, CallScope, Observer

__all__ = ["AttemptScope", "CallScope", "Observer"]
