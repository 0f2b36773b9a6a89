"""Pure policy: decisions about attempts, taking ``now`` from an injected clock.

Nothing in this package sleeps, reads the clock or touches a socket; the
engine tells a policy what happened and asks it what to do next.
"""
