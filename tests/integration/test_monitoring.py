"""The closed loop, for real: traffic through nginx (both modes) → feedback →
the sidecar's /metrics on its admin address → a real Prometheus (Debian's)
scraping it, evaluating the shipped alert rules and every dashboard query."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import Client, Mocks, free_port, shifted_policy, user, wait_until
from sidecar.access.clients import digest
from sidecar.tools.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "router-dashboard.json").read_text())
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
KEY = "hir-monitoring-test-key-0123456789"
EXTRA = (f"clients:\n  require_key: false\n  trusted_proxies: [\"127.0.0.1/32\"]\n  tenants:\n"
         f"    acme: {{keys: [\"{digest(KEY)}\"], budget_usd_per_day: 5}}\n"
         "limits:\n  - {name: per-client, per: [client], requests: {rate: 6000, per: 1m, burst: 1000}}\n"
         "  - {name: nano-per-ip, per: [ip], requests: {rate: 1, per: 1h, burst: 10}, tiers: [nano]}\n"
         # Half the routed requests also go to a shadow endpoint: its panel has data too.
         "shadow: {endpoint: premium-deepseek-v3, share: 0.5}\n"
         # Embeddings only, so the repeats below that test other things reach their endpoints.
         "response_cache: {apis: [embeddings]}\n"
         # A provider-run tool: its panel has data too.
         "provider_tools: {allow: [web_search]}\n")


def test_the_alert_rules_pass_promtool_and_their_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(["promtool", "test", "rules", str(ALERTS.with_name("alerts_test.yml"))],
                           capture_output=True, text=True)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    import yaml
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    tested = set(re.findall(r"alertname: (\w+)", ALERTS.with_name("alerts_test.yml").read_text()))
    assert {r["alert"] for r in rules} == tested   # every alert has a unit test


def test_every_alert_names_a_dashboard_panel_and_every_panel_has_queries():
    import yaml
    titles = {p["title"] for p in DASHBOARD["panels"]}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["annotations"]["dashboard_panel"] in titles, rule["alert"]
    for panel in DASHBOARD["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["type"] == "prometheus"


@pytest.fixture(scope="module", params=["lua", "stock"])
def monitored(request, tmp_path_factory):
    if not shutil.which("prometheus"):
        pytest.fail("prometheus is not installed (scripts/setup installs it)")
    tmp = tmp_path_factory.mktemp(f"monitoring-{request.param}")
    policy, ports = shifted_policy(tmp, extra=EXTRA)
    admin = f"127.0.0.1:{free_port()}"
    st = Stack(policy, tmp / "run", mode=request.param, listen=f"127.0.0.1:{free_port()}",
               latency_scale=0.05, admin_listen=admin)
    st.start()
    st.client, st.mocks = Client(int(st.listen.rpartition(":")[2])), Mocks(ports)
    prom_port = free_port()
    config = tmp / "prometheus.yml"
    shutil.copy(ALERTS, tmp / "alerts.yml")
    config.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [alerts.yml]\n"
                      f"scrape_configs:\n  - job_name: router\n    static_configs: [{{targets: ['{admin}']}}]\n")
    prom = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "wb"))
    st.prometheus = f"http://127.0.0.1:{prom_port}"
    st.admin_url = f"http://{admin}"
    try:
        assert wait_until(lambda: _ready(st.prometheus), 30), (tmp / "prometheus.log").read_text()[-2000:]
        st.seen = _traffic(st)
        yield st
    finally:
        prom.terminate()
        prom.wait(10)
        st.stop()


def _ready(base: str) -> bool:
    try:
        return urllib.request.urlopen(f"{base}/-/ready", timeout=1).status == 200
    except OSError:
        return False


def _traffic(st) -> dict:
    """Buffered and streamed answers on several tiers, a tenant, a fallback, denials.
    Returns the usage the endpoints reported, as the clients saw it."""
    seen = {"prompt": 0, "completion": 0, "by_tier": {}, "routed": 0}
    key = {"Authorization": f"Bearer {KEY}"}
    st.mocks.fault("fast-llama-3-1-8b", "status=503")
    for i, (model, stream, headers) in enumerate([("nano", False, {}), ("fast", False, key), ("balanced", True, {}),
                                                  ("premium", False, key), ("expert", True, key)] * 3):
        body = {"model": model, "messages": [{"role": "user", "content": f"hello {i}"}]}
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        if model == "fast":
            headers = {**headers, "X-Test-Pin": "fast-llama-3-1-8b"}   # fails: the fallback serves
        status, got, raw = st.client.chat(body, headers=headers)
        assert status == 200, raw
        seen["routed"] += 1
        usage = _usage(raw, stream)
        seen["prompt"] += usage["prompt_tokens"]
        seen["completion"] += usage["completion_tokens"]
        tier = got["X-Route-Tier"]
        seen["by_tier"][tier] = seen["by_tier"].get(tier, 0) + usage["completion_tokens"]
    st.mocks.fault("fast-llama-3-1-8b", "")
    shared = "Background the provider caches, the same in both requests. " * 120   # ~1,800 tokens
    for _ in range(2):   # the second is served partly from the endpoint's prompt cache
        status, got, raw = st.client.chat(
            {"model": "balanced", "messages": [{"role": "system", "content": shared},
                                               {"role": "user", "content": "Summarise it."}]},
            headers={"X-Test-Pin": "balanced-qwen3-32b"})
        assert status == 200, raw
        seen["routed"] += 1
        usage = _usage(raw, False)
        seen["prompt"] += usage["prompt_tokens"]
        seen["completion"] += usage["completion_tokens"]
        seen["by_tier"]["balanced"] = seen["by_tier"].get("balanced", 0) + usage["completion_tokens"]
        seen["cache_read"] = seen.get("cache_read", 0) + usage["prompt_tokens_details"]["cached_tokens"]
    assert seen["cache_read"] > 0
    for _ in range(3):
        st.client.chat(user("hi"), headers={"X-Constitutional-Hash": "f" * 16})   # denied: 412
    statuses = []
    for _ in range(12):                                                          # 2+ refused by nano-per-ip
        status, got, raw = st.client.chat({"model": "nano", "messages": [{"role": "user", "content": "x"}]},
                                          headers={"X-Forwarded-For": "10.1.1.1"})
        statuses.append(status)
        if status == 200:
            seen["routed"] += 1
            usage = _usage(raw, False)
            seen["prompt"] += usage["prompt_tokens"]
            seen["completion"] += usage["completion_tokens"]
            seen["by_tier"]["nano"] += usage["completion_tokens"]
    assert statuses.count(429) >= 2
    # A tenant's request whose web search tool the provider runs twice (Anthropic).
    status, got, raw = st.client.chat(
        {"model": "auto", "max_tokens": 32, "messages": [{"role": "user", "content": "news?"}],
         "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]},
        path="/v1/messages", headers={**key, "anthropic-version": "2023-06-01"})
    assert status == 200, raw
    seen["routed"] += 1
    usage = json.loads(raw)["usage"]
    assert usage["server_tool_use"]["web_search_requests"] == 2
    seen["prompt"] += (usage["input_tokens"] + usage["cache_read_input_tokens"]
                       + usage["cache_creation_input_tokens"])
    seen["cache_read"] += usage["cache_read_input_tokens"]
    seen["completion"] += usage["output_tokens"]
    tier = got["X-Route-Tier"]
    seen["by_tier"][tier] = seen["by_tier"].get(tier, 0) + usage["output_tokens"]
    seen["web_searches"] = seen.get("web_searches", 0) + 2
    for _ in range(2):   # a repeat, answered by the response cache (the first ever one asks)
        status, got, raw = st.client.chat({"model": "text-embedding-3-small", "input": "cache me"},
                                          path="/v1/embeddings")
        assert status == 200 and got["X-Cache-Status"] in ("MISS", "HIT"), raw
        if got["X-Cache-Status"] == "MISS":
            seen["routed"] += 1
            seen["prompt"] += json.loads(raw)["usage"]["prompt_tokens"]
    return seen


def _usage(raw: bytes, stream: bool) -> dict:
    if not stream:
        return json.loads(raw)["usage"]
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    return next(e["usage"] for e in events if e.get("usage"))


def _metrics(st) -> str:
    return urllib.request.urlopen(f"{st.admin_url}/metrics", timeout=5).read().decode()


def _sample_sum(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _query(st, expr: str) -> dict:
    url = f"{st.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    return json.loads(urllib.request.urlopen(url, timeout=5).read())


def test_tokens_and_cost_match_what_the_endpoints_reported(monitored):
    st = monitored
    # Every routed request's line is in (the shadow's lines arrive too, apart).
    assert wait_until(lambda: _sample_sum(_metrics(st), "router_upstream_requests_total") >= st.seen["routed"], 10)
    text = _metrics(st)
    source = "provider" if st.mode == "lua" else "estimated"
    tokens_out = _sample_sum(text, "router_tokens_total", direction="out", source=source)
    if st.mode == "lua":   # lua mode reads usage from the answers: exact
        assert tokens_out == st.seen["completion"]
        assert _sample_sum(text, "router_tokens_total", direction="in", source="provider") == st.seen["prompt"]
        assert _sample_sum(text, "router_prompt_cache_tokens_total", op="read") == st.seen["cache_read"]
        for tier, completion in st.seen["by_tier"].items():
            assert _sample_sum(text, "router_tokens_total", direction="out", tier=tier) == completion, tier
        assert _sample_sum(text, "router_web_searches_total", tenant="acme") == st.seen["web_searches"]
    else:                  # stock mode cannot read bodies: estimated from bytes, and labelled so
        assert tokens_out > 0 and _sample_sum(text, "router_tokens_total", source="provider") == 0
    assert _sample_sum(text, "router_cost_usd_total", tenant="acme") > 0
    assert _sample_sum(text, "router_fallback_hops_total", tier="fast") == 3
    assert _sample_sum(text, "router_upstream_ttfb_seconds_count", tier="expert") == 3
    # 10 under nano-per-ip, and the embeddings (one from the response cache)
    assert _sample_sum(text, "router_latency_target_total", tier="nano") == 3 + 10 + 2
    assert _sample_sum(text, "router_response_cache_total", result="hit") == 1
    assert _sample_sum(text, "router_response_cache_saved_usd_total") > 0
    assert _sample_sum(text, "router_limit_refusals_total", limit="nano-per-ip") >= 2
    assert _sample_sum(text, "router_unpriced_requests_total", setting="provider_tools",
                       value="web_search") == 1


def test_metrics_are_on_the_admin_address_only(monitored):
    status, _, body = monitored.client.request("GET", "/metrics")
    assert status == 404 and b"router_" not in body


def test_prometheus_evaluates_every_dashboard_query_and_alert(monitored):
    st = monitored
    assert wait_until(lambda: _query(st, "router_tokens_total")["data"]["result"], 15)
    time.sleep(2.5)   # a few scrapes, so rate() has two points in every window
    st.seen_again = _traffic(st)
    time.sleep(2.5)
    empty = []
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            answer = _query(st, target["expr"])
            assert answer["status"] == "success", (panel["title"], answer)
            if not answer["data"]["result"]:
                empty.append(f"{panel['title']}: {target['expr']}")
    # The store never degrades here, and a healthy sidecar has no errors: those two
    # series exist only once something went wrong.
    allowed_empty = ("router_limit_store_degraded_total", "router_errors_total")
    if st.mode == "stock":   # nginx alone cannot read the answers that report cache tokens
        allowed_empty += ("router_prompt_cache_tokens_total", "router_web_searches_total")
    assert [e for e in empty if not any(m in e for m in allowed_empty)] == []
    rules = json.loads(urllib.request.urlopen(f"{st.prometheus}/api/v1/rules", timeout=5).read())
    loaded = [r for g in rules["data"]["groups"] for r in g["rules"]]
    assert len(loaded) == 7 and all(r["health"] == "ok" for r in loaded), loaded
    for rule in loaded:
        for name in set(re.findall(r"router_[a-z_]+", rule["query"])) - set(allowed_empty):
            assert _query(st, f"count({{__name__=\"{name}\"}})")["data"]["result"], (rule["name"], name)
