"""One conformance suite for every limit store (in-process and Redis), then
what the Redis store does when Redis is refused, slow or flushed."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.access import gcra
from sidecar.access.limits import Check, Limit, MemoryStore, Spend, admit, settle
from sidecar.access.redis_store import CircuitBreaker, RedisStore

MS = 1_000_000
counter = iter(range(10**9))


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemoryStore()
    url = request.getfixturevalue("redis_url")
    # A fresh prefix per test: no state shared between tests.
    return RedisStore.from_url(url, deadline_ms=200, prefix=f"t{next(counter)}:", use_client_clock=True)


def check(key, rate, cost=1, enforced=True):
    return Check(key, rate, cost, enforced)


rates = st.builds(gcra.Rate, rate=st.integers(1, 20), period=st.integers(1, 60), burst=st.integers(1, 10))
steps = st.lists(st.tuples(st.integers(0, 3000), st.integers(1, 4)), min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rates, steps)
def test_decisions_match_the_reference_algorithm(store, rate, arrivals):
    key = f"k{next(counter)}"
    tat, now = None, 0
    for gap_ms, cost in arrivals:
        now += gap_ms * MS
        expected = gcra.check(rate, tat, cost, now)
        ok, (got,), _ = store.admit([check(key, rate, cost)], now)
        assert (ok, got.allowed, got.remaining, got.retry_after) == (
            expected.allowed, expected.allowed, expected.remaining, expected.retry_after)
        if expected.allowed:
            tat = expected.new_tat


def test_nothing_is_committed_unless_every_enforced_limit_passes(store):
    tight, loose = gcra.Rate(1, 60, 1), gcra.Rate(100, 60, 100)
    assert store.admit([check("a", tight), check("b", loose)], 0)[0]
    ok, outcomes, _ = store.admit([check("a", tight), check("b", loose)], MS)
    assert not ok and not outcomes[0].allowed and outcomes[1].allowed
    # "b" was not charged for the refused request: 99 more fit, not 98.
    ok, (b,), _ = store.admit([check("b", loose, cost=99)], 2 * MS)
    assert ok and b.remaining == 0


def test_shadow_limits_count_but_never_refuse(store):
    shadow = gcra.Rate(1, 60, 1)
    assert store.admit([check("s", shadow, enforced=False)], 0)[0]
    ok, (o,), _ = store.admit([check("s", shadow, enforced=False)], MS)
    assert ok and not o.allowed


def test_a_budget_is_checked_and_spent_with_the_limits(store):
    rate = gcra.Rate(100, 60, 100)
    ok, _, budget_ok = store.admit([check("l", rate)], 0, Spend("budget|t|1", 600, 1000, 60))
    assert (ok, budget_ok) == (True, True)
    ok, _, budget_ok = store.admit([check("l", rate)], MS, Spend("budget|t|1", 600, 1000, 60))
    assert (ok, budget_ok) == (False, False)                       # 600 + 600 > 1000
    ok, (lim,), budget_ok = store.admit([check("l", rate)], 2 * MS, Spend("budget|t|1", 400, 1000, 60))
    assert (ok, budget_ok, lim.remaining) == (True, True, 98)     # the refused call charged nothing
    tight = gcra.Rate(1, 3600, 1)
    assert store.admit([check("m", tight)], 0)[0]
    ok, _, budget_ok = store.admit([check("m", tight)], MS, Spend("budget|u|1", 10, 1000, 60))
    assert not ok and budget_ok                                    # a refused limit spends no budget
    ok, _, _ = store.admit([], 2 * MS, Spend("budget|u|1", 1000, 1000, 60))
    assert ok


def test_unused_tokens_are_given_back(store):
    limit = Limit("tok", ("client",), "tokens", gcra.Rate(1000, 60, 1000), False, None)
    first = admit(store, (limit,), {"client": "c"}, "nano", 800, 0)
    settle(store, first.reservation, used_tokens=100, now_ns=MS)
    second = admit(store, (limit,), {"client": "c"}, "nano", 800, 2 * MS)  # fits only after the refund
    assert second.headers[1][1].startswith('"tok";r=')


def test_a_hundred_concurrent_requests_against_a_limit_of_five_admit_exactly_five(store):
    rate = gcra.Rate(5, 3600, 5)
    results, start = [], threading.Barrier(100)

    def one():
        start.wait()
        results.append(store.admit([check("burst", rate)], 0)[0])
    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5


# --- Redis failure behaviour -------------------------------------------------

def test_refused_redis_degrades_within_the_deadline_and_the_breaker_opens(tmp_path):
    degraded = []
    store = RedisStore.from_url(f"unix://{tmp_path}/nothing.sock", deadline_ms=25,
                                on_degraded=degraded.append, use_client_clock=True)
    started = time.monotonic()
    for i in range(5):
        assert store.admit([check("x", gcra.Rate(10, 1, 10))], i * MS)[0]
    assert time.monotonic() - started < 0.5
    assert len(degraded) == 5 and degraded[-1] == "circuit open"
    assert store.breaker.opened_at is not None


def test_slow_redis_degrades_within_the_deadline_then_recovers(redis_url):
    clock = [0.0]
    breaker = CircuitBreaker(threshold=1, cooldown=5.0, clock=lambda: clock[0])
    store = RedisStore.from_url(redis_url, deadline_ms=25, breaker=breaker, prefix="slow:",
                                use_client_clock=True)
    blocker = threading.Thread(target=lambda: redis.Redis.from_url(redis_url).execute_command(
        "DEBUG", "SLEEP", "0.3"))
    blocker.start()
    time.sleep(0.05)  # let DEBUG SLEEP take the server (a real wait on a real server)
    started = time.monotonic()
    ok = store.admit([check("y", gcra.Rate(10, 1, 10))], 0)[0]
    assert ok and time.monotonic() - started < 0.15 and store.degraded == 1
    blocker.join()
    assert store.admit([check("y", gcra.Rate(10, 1, 10))], MS)[0] and store.degraded == 2  # still open
    clock[0] += 5.0                                                                         # cooldown over
    assert store.admit([check("y", gcra.Rate(10, 1, 10))], 2 * MS)[0] and store.degraded == 2
    assert breaker.opened_at is None


def test_flushed_redis_keeps_deciding(redis_url):
    store = RedisStore.from_url(redis_url, prefix="flush:", use_client_clock=True)
    rate = gcra.Rate(1, 3600, 1)
    assert store.admit([check("z", rate)], 0)[0]
    assert not store.admit([check("z", rate)], MS)[0]
    redis.Redis.from_url(redis_url).flushall()
    assert store.admit([check("z", rate)], 2 * MS)[0]  # state lost, decisions go on
    assert store.degraded == 0


def test_production_time_comes_from_redis(redis_url):
    store = RedisStore.from_url(redis_url, prefix="time:")  # no injected clock
    ok, (o,), _ = store.admit([check("t", gcra.Rate(1, 60, 2))], 0)
    assert ok and o.remaining == 1


def test_one_redis_round_trip_per_decision(redis_url):
    admin = redis.Redis.from_url(redis_url)
    store = RedisStore.from_url(redis_url, prefix="rtt:", use_client_clock=True)
    checks = [check("a", gcra.Rate(100, 60, 100)), check("b", gcra.Rate(1000, 60, 1000), cost=50),
              check("c", gcra.Rate(10, 1, 10), enforced=False)]
    store.admit(checks, 0)  # loads the script once
    admin.config_resetstat()
    for i in range(10):
        store.admit(checks, (i + 1) * MS)
    stats = admin.info("commandstats")
    calls = {name: v["calls"] for name, v in stats.items()}
    assert calls.pop("cmdstat_evalsha") == 10
    # Everything else is either this test's own admin calls or ran inside the script.
    inside_script = {"cmdstat_hmget", "cmdstat_hset", "cmdstat_pexpire"}
    assert {c for c in calls if not c.startswith(("cmdstat_config", "cmdstat_info"))} <= inside_script


def test_which_endpoint_served_a_response_is_shared_through_redis_only(store):
    store.remember_response("resp_1", "nano-a", "acme")
    store.remember_response("resp_2", "nano-b", "")
    redis = store.name == "redis"
    assert store.response_holder("resp_1") == (("nano-a", "acme") if redis else None)
    assert store.response_holder("resp_2") == (("nano-b", "") if redis else None)
    assert store.response_holder("resp_never") is None


def test_an_answer_filed_before_owners_were_recorded_has_no_owner(redis_url):
    store = RedisStore.from_url(redis_url, deadline_ms=200, prefix=f"t{next(counter)}:")
    store.client.set(f"{store.prefix}resp:resp_old", "nano-a")   # as the router before wrote it
    assert store.response_holder("resp_old") == ("nano-a", None)


def test_a_refused_redis_forgets_responses_quietly_within_the_deadline(tmp_path):
    store = RedisStore.from_url(f"unix://{tmp_path}/nothing.sock", deadline_ms=25)
    started = time.monotonic()
    for _ in range(5):
        store.remember_response("resp_1", "nano-a", "")
        assert store.response_holder("resp_1") is None
    assert time.monotonic() - started < 0.5 and store.breaker.opened_at is not None
