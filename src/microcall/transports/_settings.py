"""What every HTTP transport is given, checked once at construction for all of them."""

from __future__ import annotations

import ssl

from microcall._limits import Limits
from microcall.errors import ConfigurationError


def checked_settings(
    limits: Limits | None, verify: bool | ssl.SSLContext, follow_redirects: bool
) -> Limits:
    """Refuse settings of the wrong kind now, not at the first call; return the limits to use."""
    if limits is not None and not isinstance(limits, Limits):
        raise ConfigurationError(f"limits must be a microcall.Limits, got {limits!r}")
    if not isinstance(verify, (bool, ssl.SSLContext)):
        raise ConfigurationError(f"verify must be a bool or an ssl.SSLContext, got {verify!r}")
    if not isinstance(follow_redirects, bool):
        raise ConfigurationError(f"follow_redirects must be a bool, got {follow_redirects!r}")
    return limits or Limits()
