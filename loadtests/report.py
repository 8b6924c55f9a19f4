"""The report a load test run writes: per-tier latency and TTFT, each tier
against its latency target, routing mix, errors and fallbacks, hash coverage,
each API's share, latency and usage, Responses follow-ups that kept their
conversation, and cost per 1,000 requests against sending everything to the
premium or the expert tier (from endpoint prices and the usage the endpoints
reported).

    python loadtests/report.py DIR [--policy policies/demo.yaml]

DIR holds the records-*.jsonl files the locustfile wrote; out come
DIR/summary.json and DIR/report.html (charts embedded as PNG).
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.policy.spec import load_policy  # noqa: E402

FAST_TIER_RANKS = (1, 2)
FAST_MS = 100


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def load_records(out: Path) -> list[dict]:
    rows = []
    for path in sorted(out.glob("records-*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def _cost(usage: dict, price_in: float, price_out: float, text_chars: int) -> tuple[float, str]:
    if usage.get("prompt_tokens") is not None:
        return usage["prompt_tokens"] * price_in + usage.get("completion_tokens", 0) * price_out, "provider"
    return (text_chars / 4) * price_out, "estimated"


def _mean_price(endpoints, tier: str, api: str) -> tuple[float, float] | None:
    """What a request of `api` would cost a token on `tier`: the mean price of the
    tier's endpoints that serve that API, else of all the tier's endpoints (a
    request the tier cannot serve would go to the nearest tier that can)."""
    mine = [e for e in endpoints if e.tier.name == tier]
    serving = [e for e in mine if api in e.serves] or mine
    if not serving:
        return None
    return statistics.mean(e.price_in for e in serving), statistics.mean(e.price_out for e in serving)


def _per_api(routed: list[dict]) -> dict:
    out = {}
    for api in sorted({r.get("api", "chat") for r in routed}):
        mine = [r for r in routed if r.get("api", "chat") == api]
        ok = [r["ms"] for r in mine if r["status"] == 200]
        out[api] = {"requests": len(mine), "share": len(mine) / len(routed),
                    "p50_ms": _pct(ok, .5), "p95_ms": _pct(ok, .95),
                    "usage_reported": sum(r["usage"].get("prompt_tokens") is not None for r in mine),
                    "prompt_tokens": sum(r["usage"].get("prompt_tokens") or 0 for r in mine),
                    "completion_tokens": sum(r["usage"].get("completion_tokens") or 0 for r in mine)}
    return out


def _response_cache(routed: list[dict]) -> dict:
    """Repeats the kit sent, what the policy's response cache answered (X-Cache-Status:
    HIT) and how long those took against the answers endpoints made."""
    answered = [r for r in routed if r["status"] == 200]
    hits = [r["ms"] for r in answered if r.get("cache") == "HIT"]
    rest = [r["ms"] for r in answered if r.get("cache") != "HIT"]
    return {"repeats": sum(bool(r.get("repeat")) for r in routed), "hits": len(hits),
            "hit_share": len(hits) / len(answered) if answered else 0.0,
            "hit_p50_ms": _pct(hits, .5), "endpoint_p50_ms": _pct(rest, .5)}


def server_timing_ms(header: str) -> float | None:
    """The router's own time before forwarding, from `Server-Timing: router;dur=MS`."""
    for metric in header.split(","):
        name, _, params = metric.strip().partition(";")
        if name == "router" and params.startswith("dur="):
            try:
                return float(params[4:])
            except ValueError:
                return None
    return None


def _router_times(rows: list[dict]) -> list[float]:
    """The router's own time per request: nginx's Server-Timing `router` entry
    (body read + decision, before forwarding; millisecond resolution)."""
    return [r["router_ms"] for r in rows if r.get("router_ms") is not None]


def summarise(rows: list[dict], policy) -> dict:
    tiers = {t.name: t for t in policy.tiers}
    endpoints = policy.endpoint_by_name
    edge = [r for r in rows if str(r["kind"]).startswith("edge:")]
    routed = [r for r in rows if r["tier"] in tiers and not str(r["kind"]).startswith("edge:")]
    per_tier, actual, as_premium, as_expert, sources = {}, 0.0, 0.0, 0.0, Counter()
    for r in routed:
        if r["status"] != 200:  # refused or failed upstream: nothing generated, nothing billed
            sources["not answered"] += 1
            continue
        if r.get("cache") == "HIT":  # nginx's response cache answered: no endpoint was paid
            sources["response cache"] += 1
            continue
        e = endpoints.get(r["endpoint"])
        cost, source = _cost(r["usage"], e.price_in, e.price_out, r["text_chars"]) if e else (0.0, "none")
        sources[source] += 1
        actual += cost
        for name in ("premium", "expert"):
            price = _mean_price(endpoints.values(), name, r.get("api", "chat"))
            if price:
                c, _ = _cost(r["usage"], *price, r["text_chars"])
                if name == "premium":
                    as_premium += c
                else:
                    as_expert += c
    for name, tier in sorted(tiers.items(), key=lambda kv: kv[1].rank):
        mine = [r for r in routed if r["tier"] == name]
        ok = [r["ms"] for r in mine if r["status"] == 200]
        ttft = [r["ttft_ms"] for r in mine if r.get("ttft_ms") is not None]
        added = _router_times(mine)
        target = tier.latency_target_ms
        per_tier[name] = {
            "rank": tier.rank, "requests": len(mine), "share": len(mine) / len(routed) if routed else 0,
            "p50_ms": _pct(ok, .5), "p95_ms": _pct(ok, .95), "p99_ms": _pct(ok, .99),
            "mean_ms": statistics.mean(ok) if ok else None,
            "ttft_p50_ms": _pct(ttft, .5), "ttft_p95_ms": _pct(ttft, .95),
            "latency_target_ms": target,
            "within_target": sum(v <= target for v in ok) / len(ok) if ok and target else None,
            "mean_within_target": (statistics.mean(ok) <= target) if ok and target else None,
            "router_added_p50_ms": _pct(added, .5), "router_added_p99_ms": _pct(added, .99),
        }
    fast = [r["ms"] for r in routed if tiers[r["tier"]].rank in FAST_TIER_RANKS and r["status"] == 200]
    n = len(routed) or 1
    all_added = _router_times(routed)
    overhead = [r["ms"] - r["service_ms"] for r in routed if r.get("service_ms") is not None]
    return {
        "requests": len(rows), "routed": len(routed), "edge_cases": len(edge),
        "edge_cases_as_documented": sum(bool(r.get("expected")) for r in edge),
        "tiers": per_tier,
        "tier12_under_100ms": sum(v < FAST_MS for v in fast) / len(fast) if fast else None,
        "error_rate": sum(r["status"] >= 500 for r in routed) / n,
        "limited_rate": sum(r["status"] == 429 for r in routed) / n,
        "fallback_rate": sum(r.get("hop", 0) > 0 for r in routed) / n,
        "hash_share": sum(bool(r["hash"]) for r in rows) / len(rows) if rows else 0.0,
        "router_added_p50_ms": _pct(all_added, .5), "router_added_p99_ms": _pct(all_added, .99),
        "end_to_end_overhead_p50_ms": _pct(overhead, .5), "end_to_end_overhead_p99_ms": _pct(overhead, .99),
        "usage_sources": dict(sources),
        "apis": _per_api(routed),
        "followups": {"sent": sum(bool(r.get("followup")) for r in routed),
                      "kept_conversation": sum(bool(r.get("followup")) and r["status"] == 200 for r in routed),
                      "lost_conversation": sum(bool(r.get("followup")) and r["status"] == 404 for r in routed)},
        "response_cache": _response_cache(routed),
        "cost_per_1k_usd": {"routed": 1000 * actual / n, "all_premium": 1000 * as_premium / n,
                            "all_expert": 1000 * as_expert / n},
        "savings_vs_premium": as_premium / actual if actual else None,
        "savings_vs_expert": as_expert / actual if actual else None,
    }


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def charts(rows: list[dict], summary: dict) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = []
    tiers = [t for t in summary["tiers"] if summary["tiers"][t]["requests"]]
    start = min((r["t"] for r in rows), default=0)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for tier in tiers:
        by_second = defaultdict(list)
        for r in rows:
            if r["tier"] == tier and r["status"] == 200:
                by_second[int(r["t"] - start) // 5 * 5].append(r["ms"])
        xs = sorted(by_second)
        ax.plot(xs, [statistics.median(by_second[x]) for x in xs], marker=".", label=tier)
        target = summary["tiers"][tier]["latency_target_ms"]
        if target:
            ax.axhline(target, linestyle=":", linewidth=0.8, color=ax.lines[-1].get_color())
    ax.set(xlabel="seconds into the run", ylabel="p50 latency, ms (dotted: target)", yscale="log")
    ax.legend(fontsize=8)
    out.append(("Latency by tier over time", _png(fig)))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(tiers, [summary["tiers"][t]["share"] * 100 for t in tiers])
    ax.set(ylabel="% of routed requests")
    out.append(("Routing mix", _png(fig)))
    plt.close(fig)
    cost = summary["cost_per_1k_usd"]
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(["routed", "all premium", "all expert"], [cost["routed"], cost["all_premium"], cost["all_expert"]],
           color=["tab:green", "tab:orange", "tab:red"])
    ax.set(ylabel="USD per 1,000 requests")
    out.append(("Cost per 1,000 requests", _png(fig)))
    plt.close(fig)
    return out


def _fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return f"{v:.1f}{unit}" if isinstance(v, float) else f"{v}{unit}"


def render_html(summary: dict, images: list[tuple[str, str]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{t['requests']}</td><td>{_fmt(t['share'] * 100, '%')}</td>"
        f"<td>{_fmt(t['p50_ms'])}</td><td>{_fmt(t['p95_ms'])}</td><td>{_fmt(t['p99_ms'])}</td>"
        f"<td>{_fmt(t['ttft_p50_ms'])}</td><td>{_fmt(t['ttft_p95_ms'])}</td><td>{_fmt(t['latency_target_ms'])}</td>"
        f"<td>{_fmt(t['within_target'] * 100 if t['within_target'] is not None else None, '%')}</td>"
        f"<td>{_fmt(t['mean_within_target'])}</td></tr>" for name, t in summary["tiers"].items())
    per_api = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{a['requests']}</td><td>{_fmt(a['share'] * 100, '%')}</td>"
        f"<td>{_fmt(a['p50_ms'])}</td><td>{_fmt(a['p95_ms'])}</td><td>{a['usage_reported']}</td>"
        f"<td>{a['prompt_tokens']}</td><td>{a['completion_tokens']}</td></tr>"
        for name, a in summary["apis"].items())
    followups = summary["followups"]
    cached = summary["response_cache"]
    cost = summary["cost_per_1k_usd"]
    pct = lambda v: _fmt(v * 100 if v is not None else None, "%")  # noqa: E731
    figures = "".join(f"<h3>{html.escape(t)}</h3><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'>"
                      for t, b in images)
    return f"""<!doctype html><meta charset="utf-8"><title>Router load test</title>
<style>body{{font:14px sans-serif;margin:2em}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
table{{border-collapse:collapse}}</style>
<h1>Router load test</h1>
<p>{summary['requests']} requests ({summary['routed']} routed, {summary['edge_cases']} edge cases,
{summary['edge_cases_as_documented']} answered as documented). Locust's own report: <a href="locust.html">locust.html</a>.</p>
<h2>Per tier</h2><table><tr><th>tier</th><th>requests</th><th>share</th><th>p50 ms</th><th>p95 ms</th>
<th>p99 ms</th><th>TTFT p50</th><th>TTFT p95</th><th>target ms</th><th>within target</th><th>mean under target</th></tr>
{rows}</table>
<h2>Per API</h2><table><tr><th>API</th><th>requests</th><th>share</th><th>p50 ms</th><th>p95 ms</th>
<th>usage reported</th><th>prompt tokens</th><th>completion tokens</th></tr>
{per_api}</table>
<p>Responses follow-ups (<code>previous_response_id</code>): {followups['sent']} sent,
{followups['kept_conversation']} answered, {followups['lost_conversation']} lost their conversation (404).</p>
<p>Response cache: {cached['repeats']} repeated requests sent; {cached['hits']} answers
({pct(cached['hit_share'])}) came from the policy's <code>response_cache</code>, p50
{_fmt(cached['hit_p50_ms'], ' ms')} against {_fmt(cached['endpoint_p50_ms'], ' ms')} for the answers endpoints made
(none are priced).</p>
<h2>Edge</h2><ul>
<li>tier 1–2 requests under 100 ms: {pct(summary['tier12_under_100ms'])}</li>
<li>errors (5xx): {pct(summary['error_rate'])}; rate limited (429): {pct(summary['limited_rate'])};
 served by a fallback hop: {pct(summary['fallback_rate'])}</li>
<li>answers carrying the constitutional hash: {pct(summary['hash_share'])}</li>
<li>router's own time before forwarding (Server-Timing <code>router</code>, as nginx measured it): p50
 {_fmt(summary['router_added_p50_ms'], ' ms')}, p99 {_fmt(summary['router_added_p99_ms'], ' ms')};
 everything but the endpoint (client latency − the endpoint's own service time, which also counts the load
 generator and loopback): p50 {_fmt(summary['end_to_end_overhead_p50_ms'], ' ms')},
 p99 {_fmt(summary['end_to_end_overhead_p99_ms'], ' ms')}</li></ul>
<h2>Cost per 1,000 requests</h2><table><tr><th>routed</th><th>everything to premium</th><th>everything to expert</th></tr>
<tr><td>${cost['routed']:.4f}</td><td>${cost['all_premium']:.4f}</td><td>${cost['all_expert']:.4f}</td></tr></table>
<p>Routing costs {_fmt(summary['savings_vs_premium'], '×')} less than premium-only and
{_fmt(summary['savings_vs_expert'], '×')} less than expert-only, for the same reported usage
(usage from: {html.escape(json.dumps(summary['usage_sources']))}).</p>
{figures}
"""


def write(out: Path, policy_path: str) -> dict:
    rows = load_records(out)
    summary = summarise(rows, load_policy(policy_path, {}))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "report.html").write_text(render_html(summary, charts(rows, summary) if rows else []))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--policy", default=str(ROOT / "policies" / "demo.yaml"))
    args = parser.parse_args()
    summary = write(Path(args.dir), args.policy)
    print(json.dumps({k: v for k, v in summary.items() if k != "tiers"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
