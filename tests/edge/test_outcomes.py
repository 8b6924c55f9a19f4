"""Outcome metrics from feedback entries: the served hop, times, tokens and cost."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from conftest import DEMO
from sidecar.edge.feedback import Feedback
from sidecar.edge.outcomes import Outcomes
from sidecar.policy.spec import load_policy

POLICY = load_policy(DEMO, {})


def entry(**kw):
    base = {"mode": "lua", "served": "fast-llama-3-1-8b", "hop": "0", "tier": "fast", "status": "200",
            "upstream_status": "200", "upstream_response_time": "0.080", "upstream_header_time": "0.030",
            "request_time": "0.081", "bytes_in": "400", "bytes_out": "900", "upstream_bytes": "800",
            "prompt_tokens": "100", "completion_tokens": "50", "endpoints": ["fast-llama-3-1-8b", "", ""]}
    base.update(kw)
    return base


def scrape(outcomes) -> dict:
    registry = CollectorRegistry()
    registry.register(outcomes)
    samples = {}
    for family in registry.collect():
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_usage_tokens_cost_latency_and_target_from_one_answer():
    o = Outcomes(lambda: POLICY)
    o.record(entry())
    s = scrape(o)
    e = POLICY.endpoint_by_name["fast-llama-3-1-8b"]
    assert s[("router_tokens_total", (("direction", "in"), ("source", "provider"), ("tenant", ""), ("tier", "fast")))] == 100
    assert s[("router_tokens_total", (("direction", "out"), ("source", "provider"), ("tenant", ""), ("tier", "fast")))] == 50
    assert s[("router_cost_usd_total", (("tenant", ""), ("tier", "fast")))] == pytest.approx(100 * e.price_in + 50 * e.price_out)
    assert s[("router_upstream_requests_total", (("endpoint", e.name), ("status_class", "2xx"), ("tier", "fast")))] == 1
    assert s[("router_upstream_duration_seconds_bucket", (("endpoint", e.name), ("le", "0.1"), ("tier", "fast")))] == 1
    assert s[("router_upstream_duration_seconds_bucket", (("endpoint", e.name), ("le", "0.05"), ("tier", "fast")))] == 0
    assert s[("router_upstream_ttfb_seconds_bucket", (("endpoint", e.name), ("le", "0.05"), ("tier", "fast")))] == 1
    assert s[("router_latency_target_total", (("result", "within"), ("tier", "fast")))] == 1   # 81 ms < 100


def test_the_served_hop_is_the_last_and_a_fallback_is_counted():
    o = Outcomes(lambda: POLICY)
    o.record(entry(served="balanced-qwen3-32b-b", hop="1", upstream_status="503 : 200",
                   upstream_response_time="0.004 : 0.300", request_time="0.305"))
    s = scrape(o)
    assert s[("router_fallback_hops_total", (("tier", "balanced"),))] == 1
    assert s[("router_latency_target_total", (("result", "over"), ("tier", "balanced")))] == 1   # 305 > 200
    assert s[("router_upstream_duration_seconds_sum", (("endpoint", "balanced-qwen3-32b-b"), ("tier", "balanced")))] == pytest.approx(0.3)


def test_without_usage_tokens_are_estimated_from_bytes_learned_where_usage_was_reported():
    o = Outcomes(lambda: POLICY)
    for _ in range(200):
        o.record(entry(upstream_bytes="1000", completion_tokens="50"))   # 20 bytes per token
    o.record(entry(mode="stock", prompt_tokens="", completion_tokens="", upstream_bytes="2000"))
    s = scrape(o)
    assert o.bytes_per_token == pytest.approx(20, rel=0.01)
    key = ("router_tokens_total", (("direction", "out"), ("source", "estimated"), ("tenant", ""), ("tier", "fast")))
    assert s[key] == pytest.approx(100, abs=1)


def test_not_forwarded_and_unknown_names_stay_out_of_the_labels():
    o = Outcomes(lambda: POLICY)
    o.record(entry(served="", status="429"))
    o.record(entry(tenant="someone-typed-this"))
    s = scrape(o)
    assert not any(k[0] == "router_upstream_requests_total" and ("status_class", "4xx") in k[1] for k in s)
    assert ("router_tokens_total", (("direction", "in"), ("source", "provider"), ("tenant", "unknown"), ("tier", "fast"))) in s


def test_the_channel_counts_unparsable_datagrams():
    o = Outcomes(lambda: POLICY)
    f = Feedback(lambda: POLICY.health, outcomes=o)
    f.datagram(b"<190>Nov 26 05:45:00 hir: {not json")
    f.datagram(b"garbage")
    import orjson
    f.datagram(b"<190>Nov 26 05:45:00 hir: " + orjson.dumps(entry()))
    assert o.datagrams == {"ok": 1, "unparsable": 2}
    key = ("router_feedback_datagrams_total", (("result", "dropped"),))
    assert key not in scrape(o)  # a unix socket: nginx itself logs what it could not send
    o.dropped = lambda: 7        # UDP: the kernel's count for the sidecar's socket
    assert scrape(o)[key] == 7
