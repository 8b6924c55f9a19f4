"""GCRA properties with an injected clock (Hypothesis)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sidecar.access.gcra import NS, Rate, check, refund

rates = st.builds(Rate, rate=st.integers(1, 50), period=st.integers(1, 120), burst=st.integers(1, 30))
gaps = st.lists(st.tuples(st.integers(0, 5 * NS), st.integers(1, 5)), min_size=1, max_size=60)


def run(rate, arrivals):
    """Admit greedily; returns [(time_ns, cost, allowed)]."""
    tat, now, log = None, 0, []
    for gap, cost in arrivals:
        now += gap
        out = check(rate, tat, cost, now)
        if out.allowed:
            tat = out.new_tat
        log.append((now, cost, out.allowed))
    return log


@settings(max_examples=400, deadline=None)
@given(rates, gaps)
def test_never_admits_more_than_burst_plus_rate_times_interval(rate, arrivals):
    admitted = [(t, c) for t, c, ok in run(rate, arrivals) if ok]
    for i in range(len(admitted)):
        total = 0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            dt = admitted[j][0] - admitted[i][0]
            # units admitted in [t_i, t_j] <= burst + rate * dt / period (exact rational check)
            assert total * rate.period * NS <= rate.burst * rate.period * NS + rate.rate * dt


@settings(max_examples=400, deadline=None)
@given(rates, gaps)
def test_a_conforming_schedule_is_never_refused(rate, arrivals):
    # Build a schedule that conforms by construction: space requests so the
    # bucket (burst, rate/period) never overflows, using exact arithmetic.
    level, now, schedule = 0, 0, []   # level in units * period * NS
    for gap, cost in arrivals:
        assume(cost <= rate.burst)
        now += gap
        level = max(0, level - rate.rate * gap)
        need = level + cost * rate.period * NS - rate.burst * rate.period * NS
        if need > 0:  # wait exactly long enough
            wait = -(-need // rate.rate)
            now += wait
            level = max(0, level - rate.rate * wait)
        level += cost * rate.period * NS
        schedule.append((now, cost))
    tat = None
    for t, cost in schedule:
        out = check(rate, tat, cost, t)
        assert out.allowed
        tat = out.new_tat


@settings(max_examples=400, deadline=None)
@given(rates, gaps, st.integers(1, 5))
def test_retry_after_is_exact(rate, arrivals, cost):
    assume(cost <= rate.burst)
    tat, now = None, 0
    for gap, c in arrivals:
        now += gap
        out = check(rate, tat, c, now)
        if out.allowed:
            tat = out.new_tat
    out = check(rate, tat, cost, now)
    if out.allowed:
        return
    wait = out.retry_after
    assert wait >= 1
    assert check(rate, tat, cost, now + wait * NS).allowed            # admitted after the wait
    assert not check(rate, tat, cost, now + (wait - 1) * NS).allowed  # not a second sooner


def test_a_cost_above_the_burst_is_never_retryable():
    out = check(Rate(10, 1, 5), None, 6, 0)
    assert not out.allowed and out.retry_after == -1


def test_remaining_and_reset():
    rate = Rate(1, 1, 3)  # 1 per second, burst 3
    first = check(rate, None, 1, 0)
    assert (first.allowed, first.remaining, first.reset) == (True, 2, 1)
    second = check(rate, first.new_tat, 2, 0)
    assert (second.allowed, second.remaining, second.reset) == (True, 0, 3)
    third = check(rate, second.new_tat, 1, 0)
    assert (third.allowed, third.retry_after) == (False, 1)


def test_refund_gives_back_unused_units_but_not_the_past():
    rate = Rate(10, 1, 100)
    out = check(rate, None, 50, 0)
    assert check(rate, refund(rate, out.new_tat, 40, 0), 90, 0).allowed
    assert refund(rate, out.new_tat, 500, 0) == rate.scaled(0)
