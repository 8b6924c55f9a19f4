"""GCRA (the generic cell rate algorithm), exact, in integer arithmetic.

A limit is `rate` units per `period` seconds with a `burst` of units that may
arrive at once. Time is scaled by `rate` so that one unit costs exactly
`period` nanoseconds of "theoretical arrival time" (TAT): no float rounding can
admit one unit too many or refuse a schedule that conforms.

    admit cost c at now  iff  max(tat, now) + c*P - now <= burst*P
    then                 tat := max(tat, now) + c*P

Guarantees (tested with Hypothesis): over any interval Δt at most
burst + rate*Δt/period units are admitted; a schedule that never exceeds that
is never refused; Retry-After is the exact wait, rounded up to whole seconds.
"""

from __future__ import annotations

from typing import NamedTuple

NS = 1_000_000_000


class Rate(NamedTuple):
    rate: int        # units per period
    period: int      # seconds
    burst: int       # units admissible at once

    @property
    def unit(self) -> int:
        """Scaled nanoseconds one unit adds to the TAT."""
        return self.period * NS

    def scaled(self, now_ns: int) -> int:
        return now_ns * self.rate


class Outcome(NamedTuple):
    allowed: bool
    new_tat: int           # scaled; what to store if committed
    remaining: int         # units still admissible right now (after this request if allowed)
    retry_after: int       # whole seconds until this request would be admitted; -1: never
    reset: int             # whole seconds until the bucket is full again


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check(rate: Rate, tat: int | None, cost: int, now_ns: int) -> Outcome:
    """Decide one request without changing anything (the caller commits new_tat)."""
    now = rate.scaled(now_ns)
    base = now if tat is None or tat < now else tat
    unit = rate.unit
    capacity = rate.burst * unit
    scale = rate.rate * NS  # scaled ns per second
    new_tat = base + cost * unit
    if new_tat - now <= capacity:
        return Outcome(True, new_tat, (capacity - (new_tat - now)) // unit, 0,
                       _ceil_div(new_tat - now, scale))
    remaining = (capacity - (base - now)) // unit
    if cost > rate.burst:
        return Outcome(False, base, remaining, -1, _ceil_div(base - now, scale))
    wait = new_tat - now - capacity
    return Outcome(False, base, remaining, _ceil_div(wait, scale), _ceil_div(base - now, scale))


def refund(rate: Rate, tat: int, units: int, now_ns: int) -> int:
    """TAT after giving back `units` reserved but not used (never before now)."""
    return max(rate.scaled(now_ns), tat - units * rate.unit)
