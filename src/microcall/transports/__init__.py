"""Transports: one job each, send a request and return a response or a transport error."""

from microcall.transports._base import Transport
from microcall.transports._default import default_transport

__all__ = ["Transport", "default_transport"]
