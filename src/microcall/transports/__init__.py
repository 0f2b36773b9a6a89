"""Transports: one job each, send a request and return a response or a transport error."""

from microcall.transports._base import Transport

__all__ = ["Transport"]
