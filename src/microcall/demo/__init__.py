"""Self-contained demos run by the ``microcall demo`` command.

Everything a demo needs (servers included) starts on 127.0.0.1 inside the one
process, so a demo runs with no set-up beyond installing microcall.

* :mod:`microcall.demo.tail`: a backend with a heavy latency tail, called with
  a single attempt, with retries and with hedging; the scenario returns rows
  of p50 / p99 / p99.9 and extra load, and :mod:`microcall.demo.table` prints them.
"""
