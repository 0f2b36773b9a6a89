"""Self-contained demos.

Everything a demo needs (servers included) starts on 127.0.0.1 from the one
command, so a demo runs with no set-up beyond installing microcall.

* :mod:`microcall.demo.tail` (``microcall demo``, :mod:`microcall.cli.demo`):
  a backend with a heavy latency tail (:mod:`microcall.demo.backend`, its own
  process), or one's own service, called with a single attempt, with retries
  and with hedging; the scenario returns rows of p50 / p99 / p99.9 and extra
  load, and :mod:`microcall.demo.table` prints them.
* :mod:`microcall.demo.bookstore`: the seeds' bookstore (``make demo``).
"""
