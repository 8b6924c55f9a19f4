"""The load-test report's arithmetic on records whose answers are known."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "loadtests"))

import report  # noqa: E402
from sidecar.policy.spec import load_policy  # noqa: E402

POLICY = load_policy(ROOT / "policies" / "demo.yaml", {})


def rec(tier, endpoint, ms, prompt=100, completion=50, hop=0, status=200, service=None, kind="chat",
        router=None, **kw):
    return {"t": 0.0, "kind": kind, "tier": tier, "endpoint": endpoint, "ms": ms, "hop": hop,
            "status": status, "hash": True, "service_ms": service, "router_ms": router,
            "ttft_ms": None, "itl_ms": None,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion}, "text_chars": 0, **kw}


def test_cost_against_premium_and_expert_uses_reported_usage_and_prices():
    rows = [rec("nano", "nano-qwen3-0-6b", 10), rec("expert", "expert-grok-4", 500)]
    s = report.summarise(rows, POLICY)
    nano, grok = POLICY.endpoint_by_name["nano-qwen3-0-6b"], POLICY.endpoint_by_name["expert-grok-4"]
    actual = 100 * nano.price_in + 50 * nano.price_out + 100 * grok.price_in + 50 * grok.price_out
    assert s["cost_per_1k_usd"]["routed"] == pytest.approx(1000 * actual / 2)
    assert s["cost_per_1k_usd"]["all_expert"] == pytest.approx(1000 * 2 * 150 * grok.price_in / 2)
    premium = [e for e in POLICY.endpoints if e.tier.name == "premium" and "chat" in e.serves]
    mean = sum(e.price_in for e in premium) / len(premium)
    assert s["cost_per_1k_usd"]["all_premium"] == pytest.approx(1000 * 2 * 150 * mean / 2)


def test_targets_fallbacks_fast_share_and_router_time():
    rows = [rec("nano", "nano-qwen3-0-6b", ms, service=ms - 1.5, router=0.4) for ms in (10, 20, 30, 80)]
    rows += [rec("fast", "fast-llama-3-1-8b", 150, hop=1), rec("fast", "fast-llama-3-1-8b", 90)]
    rows += [rec("not routed (412)", None, 2, status=412, kind="edge: bad hash", expected=True)]
    s = report.summarise(rows, POLICY)
    assert s["routed"] == 6 and s["edge_cases"] == 1 and s["edge_cases_as_documented"] == 1
    assert s["tiers"]["nano"]["within_target"] == 0.75          # 80 ms > 50 ms target
    assert s["tiers"]["fast"]["within_target"] == 0.5
    assert s["tier12_under_100ms"] == pytest.approx(5 / 6)
    assert s["fallback_rate"] == pytest.approx(1 / 6)
    assert s["router_added_p50_ms"] == pytest.approx(0.4)
    assert s["end_to_end_overhead_p50_ms"] == pytest.approx(1.5)


@pytest.mark.parametrize("header,ms", [("router;dur=0.4", 0.4), ("db;dur=3, router;dur=0012", 12.0),
                                       ("router", None), ("router;dur=x", None), ("", None)])
def test_the_routers_time_is_read_from_server_timing(header, ms):
    assert report.server_timing_ms(header) == ms


def test_each_api_is_summarised_and_priced_at_the_endpoints_that_serve_it():
    rows = [rec("premium", "premium-claude-sonnet", 40, api="messages"),
            rec("fast", "fast-llama-3-1-8b", 20, api="responses", followup=True),
            rec("nano", "nano-qwen3-0-6b", 10, api="responses", followup=True, status=404,
                usage={}),
            rec("nano", "nano-qwen3-0-6b", 10)]
    s = report.summarise(rows, POLICY)
    assert s["apis"]["messages"]["requests"] == 1 and s["apis"]["responses"]["requests"] == 2
    assert s["apis"]["responses"]["usage_reported"] == 1
    assert s["apis"]["chat"]["prompt_tokens"] == 100
    assert s["followups"] == {"sent": 2, "kept_conversation": 1, "lost_conversation": 1}
    assert s["usage_sources"] == {"provider": 3, "not answered": 1}
    # As premium, the Messages request costs what premium's Messages endpoints charge;
    # no expert endpoint serves Messages, so as expert it costs the expert tier's price.
    sonnet, grok = POLICY.endpoint_by_name["premium-claude-sonnet"], POLICY.endpoint_by_name["expert-grok-4"]
    premium_chat = [e for e in POLICY.endpoints if e.tier.name == "premium" and "chat" in e.serves]
    mean_in = sum(e.price_in for e in premium_chat) / len(premium_chat)
    mean_out = sum(e.price_out for e in premium_chat) / len(premium_chat)
    expected = (100 * sonnet.price_in + 50 * sonnet.price_out) + 2 * (100 * mean_in + 50 * mean_out)
    assert s["cost_per_1k_usd"]["all_premium"] == pytest.approx(1000 * expected / 4)
    assert s["cost_per_1k_usd"]["all_expert"] == pytest.approx(1000 * 3 * (100 * grok.price_in + 50 * grok.price_out) / 4)


def test_answers_from_the_response_cache_are_counted_apart_and_never_priced():
    nano = POLICY.endpoint_by_name["nano-qwen3-0-6b"]
    rows = [rec("nano", "nano-qwen3-0-6b", 400, cache="MISS"),
            rec("nano", "nano-qwen3-0-6b", 2, cache="HIT", repeat=True),
            rec("nano", "nano-qwen3-0-6b", 4, cache="HIT", repeat=True),
            rec("nano", "nano-qwen3-0-6b", 300, cache="MISS", repeat=True)]   # a repeat that missed
    s = report.summarise(rows, POLICY)
    assert s["response_cache"] == {"repeats": 3, "hits": 2, "hit_share": 0.5,
                                   "hit_p50_ms": report._pct([2, 4], .5),
                                   "endpoint_p50_ms": report._pct([400, 300], .5)}
    assert s["usage_sources"] == {"provider": 2, "response cache": 2}
    assert s["cost_per_1k_usd"]["routed"] == pytest.approx(1000 * 2 * (100 * nano.price_in + 50 * nano.price_out) / 4)
    assert "2 answers" in report.render_html(s, []) and "response_cache" in report.render_html(s, [])
