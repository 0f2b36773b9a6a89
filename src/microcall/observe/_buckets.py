"""Histogram buckets: OpenTelemetry's advice for request durations."""

from __future__ import annotations

from typing import Final

# The explicit bucket boundaries OpenTelemetry's semantic conventions advise
# for http.client.request.duration and http.server.request.duration (and
# the RPC call durations): 5 ms to 10 s, in seconds.
DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
