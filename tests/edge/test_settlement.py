"""Settling reservations from real usage: refund or charge the difference, once,
in the in-process store and in Redis; estimates when usage never came."""

from __future__ import annotations

import uuid

import pytest

from conftest import DEMO
from sidecar.access import budgets, gcra
from sidecar.access.limits import Check, MemoryStore, Reservation, Spend
from sidecar.access.redis_store import RedisStore
from sidecar.edge.estimates import TokenEstimates
from sidecar.edge.settlement import MAX_PENDING, TIMEOUT_NS, Pending, Settlements
from sidecar.policy.spec import load_policy

POLICY = load_policy(DEMO, {})
S = 1_000_000_000
RATE = gcra.Rate(rate=1000, period=1, burst=1000)   # tokens: 1000 a second
ENDPOINT = POLICY.endpoint_by_name["premium-deepseek-v3"]
ESTIMATES = TokenEstimates()


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        return MemoryStore()
    # A generous deadline: these tests are about settling, not about a slow Redis
    # (tests/access cover that), and 200 ms was once missed on a loaded box.
    # A fresh prefix per test: id(request) was used once, and CPython reuses a freed
    # object's address, so a test could inherit the previous test's spent tokens.
    return RedisStore.from_url(request.getfixturevalue("redis_url"), deadline_ms=2000,
                               prefix=f"settle-{uuid.uuid4().hex}:", use_client_clock=True)


class Clock:
    def __init__(self):
        self.now = 100 * S

    def __call__(self):
        return self.now


def reserve(store, clock, tokens=600, prompt=100):
    """Admit one request that reserves `tokens` and its estimate in USD."""
    check = Check("tok|1000|t", RATE, tokens, True)
    micros = budgets.estimate_micros(ENDPOINT, prompt, tokens - prompt)
    ok, (outcome,), budget_ok = store.admit([check], clock(), Spend("budget|t|1", micros, 10**9, 3600))
    assert ok and budget_ok
    return Pending(Reservation((check,), tokens), "budget|t|1", micros, ENDPOINT.name, prompt, clock()), outcome


def remaining(store, clock):
    _, (o,), _ = store.admit([Check("tok|1000|t", RATE, 0, True)], clock())
    return o.remaining


def _spent(store):
    if isinstance(store, MemoryStore):
        return store.spent.get("budget|t|1", 0)
    return int(store.client.get(store.prefix + "budget|t|1") or 0)


def entry(**kw):
    return {"internal_id": "r1", "served": ENDPOINT.name, "status": "200", **kw}


def test_unused_tokens_and_dollars_come_back_once(store):
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    before = remaining(store, clock)
    assert s.settle(entry(prompt_tokens="100", completion_tokens="50"), POLICY, ESTIMATES)
    assert remaining(store, clock) == before + 450      # reserved 600, used 150
    assert _spent(store) == budgets.estimate_micros(ENDPOINT, 100, 50)
    assert not s.settle(entry(prompt_tokens="100", completion_tokens="50"), POLICY, ESTIMATES)  # a repeat
    assert remaining(store, clock) == before + 450


def test_using_more_than_reserved_is_charged(store):
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock, tokens=300)
    s.hold("r1", held)
    before = remaining(store, clock)
    s.settle(entry(prompt_tokens="100", completion_tokens="400"), POLICY, ESTIMATES)
    assert remaining(store, clock) == before - 200
    assert _spent(store) == budgets.estimate_micros(ENDPOINT, 100, 400)


def test_cached_input_counts_as_input_and_is_spent_at_its_own_price(store):
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock, tokens=900, prompt=800)
    s.hold("r1", held)
    before = remaining(store, clock)
    cheap_reads = ENDPOINT._replace(price_cache_read=ENDPOINT.price_in / 10, price_cache_write=ENDPOINT.price_in * 1.25)
    policy = type("P", (), {"endpoint_by_name": {ENDPOINT.name: cheap_reads}})()
    s.settle(entry(prompt_tokens="800", completion_tokens="50", cache_read_tokens="500",
                   cache_write_tokens="200"), policy, ESTIMATES)
    assert remaining(store, clock) == before + 900 - 850    # every input token counts toward limits
    spent = _spent(store)
    assert spent == budgets.estimate_micros(cheap_reads, 800, 50, 500, 200)
    assert spent < budgets.estimate_micros(cheap_reads, 800, 50)   # reads at a tenth of the price


def test_reported_web_searches_are_spent_from_the_budget_not_the_token_limits(store):
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    before = remaining(store, clock)
    searching = ENDPOINT._replace(price_web_search=0.01)
    policy = type("P", (), {"endpoint_by_name": {ENDPOINT.name: searching}})()
    s.settle(entry(prompt_tokens="100", completion_tokens="50", web_searches="3"), policy, ESTIMATES)
    assert remaining(store, clock) == before + 450          # a search is no token
    assert _spent(store) == budgets.estimate_micros(searching, 100, 50, 0, 0, 3)
    assert _spent(store) - budgets.estimate_micros(searching, 100, 50) == 30_000   # 3 x $0.01


def test_a_stream_cut_short_pays_for_what_was_produced_not_zero(store):
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    before = remaining(store, clock)
    cut = entry(status="200", prompt_tokens="", completion_tokens="", stream="1", upstream_body_bytes="8000",
                features="chat;100;1;500;0.5000;0;r;auto")
    s.settle(cut, POLICY, ESTIMATES)
    produced = ESTIMATES.completion_tokens(cut)
    assert produced == 8000 / ESTIMATES.bytes_per_token("chat", True) == 40
    assert remaining(store, clock) == before + 600 - (100 + produced)   # the prompt estimate + what was produced


def test_a_request_that_failed_gets_its_reservation_back(store):
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    before = remaining(store, clock)
    s.settle(entry(status="502", served=""), POLICY, ESTIMATES)
    assert remaining(store, clock) == before + 600
    assert _spent(store) == 0


def test_an_answer_from_the_response_cache_gives_the_whole_reservation_back(store):
    """No endpoint did any work: the usage the kept answer carries is not spent again."""
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    before = remaining(store, clock)
    s.settle(entry(prompt_tokens="100", completion_tokens="50", cache="HIT", upstream_status=""),
             POLICY, ESTIMATES)
    assert remaining(store, clock) == before + 600
    assert _spent(store) == 0


def test_feedback_that_never_comes_leaves_the_estimate_and_expires():
    clock, store = Clock(), MemoryStore()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    clock.now += TIMEOUT_NS + 1
    s.expire()
    assert s.pending == {} and s.expired == 1
    assert not s.settle(entry(prompt_tokens="1", completion_tokens="1"), POLICY, ESTIMATES)


def test_the_table_is_bounded():
    clock, store = Clock(), MemoryStore()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    for i in range(MAX_PENDING + 10):
        s.hold(f"r{i}", held)
    assert len(s.pending) == MAX_PENDING and s.expired == 10


@pytest.mark.parametrize("reported", ["1" + "0" * 30, str(2**63), "9" * 400])
def test_a_providers_absurd_usage_is_charged_at_most_the_endpoints_window(store, reported):
    """Believing 1e30 tokens locked the client out for good in memory, and in Redis
    overflowed the counter so the charge silently went to the fallback store."""
    clock = Clock()
    s = Settlements(lambda: store, clock)
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    s.settle(entry(prompt_tokens=reported, completion_tokens=reported, cache_read_tokens=reported),
             POLICY, ESTIMATES)
    window = ENDPOINT.context_tokens
    assert window > 0
    assert _spent(store) == budgets.estimate_micros(ENDPOINT, window, window, window, 0)
    clock.now += (2 * window // RATE.rate + 1) * S   # the charge (2 windows) drains at the limit's rate
    assert remaining(store, clock) == RATE.burst


def test_a_background_request_is_settled_from_the_retrieve_that_reports_its_usage(store):
    """Its own answer (`queued`) reports nothing: settling from it would refund the
    whole reservation of a request whose tokens are still being spent."""
    from sidecar.edge.conversations import Conversations
    from sidecar.edge.feedback import Feedback
    clock = Clock()
    s = Settlements(lambda: store, clock)
    f = Feedback(lambda: POLICY.health, settlements=s, policy_ref=lambda: POLICY,
                 conversations=Conversations(clock_ns=clock))
    held, _ = reserve(store, clock)
    s.hold("r1", held)
    before = remaining(store, clock)
    f.record(entry(features="responses;100;1;500;0.1000;1;b;auto", response_id="resp_bg",
                   prompt_tokens="", completion_tokens="", upstream_body_bytes="1500"))
    assert "r1" in s.pending and remaining(store, clock) == before      # still reserved
    f.record(entry(internal_id="r2", features="stored;0;0;0;0.0000;1;;", response_id="resp_bg",
                   prompt_tokens="100", completion_tokens="50"))
    assert "r1" not in s.pending and remaining(store, clock) == before + 450   # used 150 of 600
    assert _spent(store) == budgets.estimate_micros(ENDPOINT, 100, 50)
