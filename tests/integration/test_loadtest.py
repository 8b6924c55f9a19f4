"""The Locust kit cannot rot: a short headless run against the real stack must
finish without unexpected failures and write both reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_headless_run_writes_the_report(tmp_path):
    out = tmp_path / "report"
    # The demo policy with a response cache, and more repeats than the profile's: the
    # report must tell the cache's answers apart and price none of them.
    policy = tmp_path / "demo-cached.yaml"
    policy.write_text((ROOT / "policies" / "demo.yaml").read_text() + "\nresponse_cache: {ttl: 5m}\n")
    run = subprocess.run([sys.executable, "loadtests/run.py", "--stack", "--latency-scale", "0.1",
                          "--users", "6", "--duration", "20s", "--seed", "3", "--out", str(out),
                          "--policy", str(policy), "--repeat-share", "0.3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["routed"] > 50
    assert summary["hash_share"] == 1.0
    assert summary["edge_cases"] == summary["edge_cases_as_documented"]
    assert summary["error_rate"] == 0.0
    assert summary["usage_sources"].get("estimated", 0) == 0   # every routed answer reported usage
    cached = summary["response_cache"]
    assert cached["repeats"] > 0 and cached["hits"] > 0   # (a user may also draw a prompt twice)
    assert summary["usage_sources"]["response cache"] == cached["hits"]
    assert cached["hit_p50_ms"] < cached["endpoint_p50_ms"]
    assert summary["router_added_p50_ms"] is not None
    assert summary["cost_per_1k_usd"]["routed"] < summary["cost_per_1k_usd"]["all_premium"] \
        < summary["cost_per_1k_usd"]["all_expert"]
    served = {name for name, tier in summary["tiers"].items() if tier["requests"]}
    assert {"nano", "fast"} <= served
    # Every API the profile sends was answered with its usage read, and every
    # Responses follow-up reached the endpoint holding its conversation.
    assert set(summary["apis"]) == {"chat", "responses", "messages"}
    assert all(a["usage_reported"] == a["requests"] > 0 for a in summary["apis"].values())
    assert summary["followups"]["sent"] > 0
    assert summary["followups"]["kept_conversation"] == summary["followups"]["sent"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    for text in ("Per tier", "Cost per 1,000 requests", "constitutional hash"):
        assert text in page
    locust_page = (out / "locust.html").read_text()
    assert "TTFT" in locust_page and "nano" in locust_page and "(messages)" in locust_page
    assert "Per API" in page and "follow-ups" in page and "Response cache" in page
