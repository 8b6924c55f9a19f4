"""Routing with a compiled policy: first match wins, weighted picks, health, fallbacks."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.denials import Denied
from sidecar.edge.features import Features
from sidecar.policy.compiled import Health
from sidecar.policy.spec import compile_policy

POLICY = b"""version: 1
tiers:
  low:  {rank: 1}
  mid:  {rank: 2}
  high: {rank: 3}
endpoints:
  - {name: low-a,  tier: low,  url: "http://127.0.0.1:9001/v1", model: small-a, weight: 3}
  - {name: low-b,  tier: low,  url: "http://127.0.0.1:9002/v1", model: small-b}
  - {name: mid-a,  tier: mid,  url: "http://127.0.0.1:9003/v1", model: mid}
  - {name: high-a, tier: high, url: "http://127.0.0.1:9004/v1", model: big-a}
  - {name: high-b, tier: high, url: "http://127.0.0.1:9005/v1", model: big-b}
rules:
  - {name: legacy, when: {model: {prefix: legacy-}}, deny: {status: 403, code: model_not_allowed, message: gone}}
  - {name: pinned, when: {headers: {x-pin: high-b}}, endpoint: high-b}
  - {name: hard, when: {complexity: ">= 0.7"}, tier: high}
  - {name: long-or-code, when: {any: [{tokens: "1000.."}, {code: true}]}, tier: mid}
  - {name: not-streamed-math, when: {all: [{math: true}, {not: {stream: true}}]}, tier: mid}
default: {tier: low}
"""


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def policy():
    return compile_policy(POLICY, "t.yaml", {})


def feats(**values) -> Features:
    f = Features("POST", "/v1/chat/completions", values.pop("headers", {}))
    for key, value in values.items():
        setattr(f, key, value)
    return f


@pytest.mark.parametrize("values,rule,tier", [
    ({}, "default", "low"),
    ({"complexity": 0.7}, "hard", "high"),
    ({"complexity": 0.69}, "default", "low"),
    ({"tokens": 1000}, "long-or-code", "mid"),
    ({"tokens": 999}, "default", "low"),
    ({"code": True, "complexity": 0.9}, "hard", "high"),  # first match wins
    ({"code": True}, "long-or-code", "mid"),
    ({"math": True}, "not-streamed-math", "mid"),
    ({"math": True, "stream": True}, "default", "low"),
    ({"headers": {"x-pin": "high-b"}}, "pinned", "high"),
])
def test_first_matching_rule_decides(policy, values, rule, tier):
    route = policy.route(feats(**values))
    assert (route.rule, route.endpoint.tier.name) == (rule, tier)


def test_a_deny_rule_raises_its_status_and_code(policy):
    with pytest.raises(Denied) as info:
        policy.route(feats(model="legacy-7"))
    assert (info.value.status, info.value.reason, info.value.message) == (403, "model_not_allowed", "gone")


def test_endpoints_are_picked_by_weight(policy):
    picks = Counter(policy.route(feats()).endpoint.name for _ in range(400))
    assert picks == {"low-a": 300, "low-b": 100}


def test_the_weighted_schedule_is_smooth(policy):
    # nginx's smooth weighted round robin interleaves instead of sending bursts.
    picks = [policy.route(feats()).endpoint.name for _ in range(8)]
    assert picks == ["low-a", "low-a", "low-b", "low-a"] * 2


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_a_cache_slot_always_picks_one_endpoint_and_slots_follow_the_weights(slot, down):
    """A cacheable request's repeats all go where its answer is kept; over many
    requests the tier's weights still hold, and a down endpoint is passed over."""
    policy = compile_policy(POLICY, "t.yaml", {})
    if down:
        policy.health.mark_down("low-a", 60)
    f = feats()
    f.cache_slot = slot
    chosen = {policy.route(f).endpoint.name for _ in range(5)}
    assert chosen == ({"low-b"} if down else chosen) and len(chosen) == 1
    every = Counter()
    for s in range(slot, slot + 4):     # one schedule's worth of consecutive slots
        f.cache_slot = s
        every[policy.route(f).endpoint.name] += 1
    assert every == ({"low-b": 4} if down else {"low-a": 3, "low-b": 1})


def test_fallbacks_are_the_rest_of_the_tier_then_the_tiers_above(policy):
    route = policy.route(feats(headers={"x-pin": "high-b"}))
    assert [e.name for e in route.fallbacks] == ["high-a"]
    low = policy.route(feats())
    chain = [e.name for e in low.fallbacks]
    assert chain[0] in ("low-a", "low-b") and chain[0] != low.endpoint.name
    assert chain[1] == "mid-a"


def test_endpoints_marked_down_are_skipped_until_their_deadline(policy):
    clock = Clock()
    policy.health = Health(clock)
    policy.health.mark_down("low-a", 30)
    assert {policy.route(feats()).endpoint.name for _ in range(10)} == {"low-b"}
    assert [e.name for e in policy.route(feats()).fallbacks] == ["mid-a", "high-a"]
    clock.now += 30
    assert "low-a" in {policy.route(feats()).endpoint.name for _ in range(10)}


def test_a_whole_tier_down_routes_to_the_tier_above(policy):
    policy.health = Health(Clock())
    policy.health.mark_down("low-a", 30)
    policy.health.mark_down("low-b", 30)
    assert policy.route(feats()).endpoint.name == "mid-a"


def test_a_pinned_endpoint_that_is_down_uses_its_fallback(policy):
    policy.health = Health(Clock())
    policy.health.mark_down("high-b", 30)
    route = policy.route(feats(headers={"x-pin": "high-b"}))
    assert route.endpoint.name == "high-a"


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({
    "model": st.sampled_from(["", "auto", "legacy-1", "legacy", "gpt"]),
    "tokens": st.integers(0, 3000), "complexity": st.floats(0, 1),
    "code": st.booleans(), "math": st.booleans(), "stream": st.booleans(),
    "headers": st.sampled_from([{}, {"x-pin": "high-b"}, {"x-pin": "other"}]),
}))
def test_the_generated_matcher_agrees_with_evaluating_rules_one_by_one(values):
    policy = compile_policy(POLICY, "t.yaml", {})
    f = feats(**values)
    expected = next((r for r in policy.rules if r.when.matches(f)), policy.default)
    assert policy.match(f) is expected
