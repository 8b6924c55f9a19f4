"""The retry budget: fallbacks for at most `ratio` of decisions plus a floor per
second over a sliding 10 s window, with an injected clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.edge.retry_budget import WINDOW_S, RetryBudget


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_an_outage_is_capped_at_the_ratio_plus_the_floor():
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor=1.0, clock=clock)
    allowed = 0
    for _ in range(1000):                  # every request fails and would retry twice
        if budget.allow():
            allowed += 1
            budget.spend(2)
    # retries <= 0.2 * 1000 + 1/s * 10 s, each allowed decision spending 2
    assert allowed * 2 <= 0.2 * 1000 + WINDOW_S + 2
    assert budget.refused == 1000 - allowed > 0


def test_the_budget_refills_as_the_window_slides():
    clock = Clock()
    budget = RetryBudget(ratio=0.0, floor=0.1, clock=clock)
    assert budget.allow()
    budget.spend(1)
    assert not budget.allow()
    clock.now += WINDOW_S - 1
    assert not budget.allow()
    clock.now += 1                         # the second that held the retry left the window
    assert budget.allow()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3), st.integers(0, 3)), min_size=1, max_size=300),
       st.floats(0, 1), st.floats(0, 5))
def test_window_sums_always_equal_the_buckets(steps, ratio, floor):
    clock = Clock()
    budget = RetryBudget(ratio=ratio, floor=floor, clock=clock)
    for dt, retries in steps:
        clock.now += dt
        if budget.allow():
            # Allowed only while the window's retries are under its bound.
            assert budget.total_retries < ratio * budget.total_requests + floor * WINDOW_S
            budget.spend(retries)
        assert budget.total_requests == sum(budget.requests)
        assert budget.total_retries == sum(budget.retries)
