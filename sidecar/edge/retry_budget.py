"""A retry budget, so a provider outage does not multiply the load on the rest.

Fallback hops are retries. Over a sliding window, retries may be at most `ratio`
of the decisions made plus `floor` per second (Finagle's RetryBudget, Envoy's
retry_budget): while the budget is spent, decisions carry no fallbacks and a
failing endpoint's error goes to the client. nginx makes the retries; the
feedback log says how many it made (`spend`), so the count lags by about one
request time, which the floor absorbs.
"""

from __future__ import annotations

import time

WINDOW_S = 10
_BUCKETS = WINDOW_S  # one per second


class RetryBudget:
    __slots__ = ("ratio", "floor", "clock", "requests", "retries", "second", "total_requests",
                 "total_retries", "refused")

    def __init__(self, ratio: float = 0.2, floor: float = 10.0, clock=time.monotonic):
        self.ratio = ratio
        self.floor = floor
        self.clock = clock
        self.requests = [0] * _BUCKETS
        self.retries = [0] * _BUCKETS
        self.second = int(clock())
        self.total_requests = 0      # sums over the window, kept in step with the buckets
        self.total_retries = 0
        self.refused = 0             # decisions sent without fallbacks (a counter for metrics)

    def _advance(self) -> int:
        now = int(self.clock())
        if now != self.second:
            for s in range(self.second + 1, min(now, self.second + _BUCKETS) + 1):
                i = s % _BUCKETS
                self.total_requests -= self.requests[i]
                self.total_retries -= self.retries[i]
                self.requests[i] = self.retries[i] = 0
            self.second = now
        return now % _BUCKETS

    def allow(self) -> bool:
        """Count one decision; True if it may carry fallbacks."""
        i = self._advance()
        self.requests[i] += 1
        self.total_requests += 1
        if self.total_retries < self.ratio * self.total_requests + self.floor * WINDOW_S:
            return True
        self.refused += 1
        return False

    def spend(self, retries: int) -> None:
        """nginx made `retries` fallback hops for one request."""
        if retries > 0:
            i = self._advance()
            self.retries[i] += retries
            self.total_retries += retries
