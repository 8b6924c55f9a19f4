"""Prometheus metrics, declared once on an injected registry. Labels are bounded
to names known when the policy loads (tier, endpoint, rule, reason, limit).

The per-request ones (routed, denied, decision time, feature cache) are plain
integers the hot path bumps and a collector reads at scrape time:
prometheus_client's Counter.inc and Histogram.observe take a lock each and cost
several microseconds per request (py-spy: 8% of a decision). The event loop is
single-threaded, so plain integers are exact here.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, GCCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.errors = Counter("router_errors_total", "Unexpected errors in the sidecar (bugs)",
                              registry=registry)
        self.reloads = Counter("router_policy_reloads_total", "Policy reloads, by result",
                               ["result"], registry=registry)
        self.shadow_denied = Counter("router_shadow_limit_denied_total",
                                     "Requests a shadow limit would have refused", ["limit"],
                                     registry=registry)
        self.store_degraded = Counter("router_limit_store_degraded_total",
                                      "Decisions made by the in-process store because Redis was "
                                      "slow, down or circuit-broken", ["reason"], registry=registry)
        self.routed: dict[tuple[str, str, str], int] = {}
        self.denied: dict[str, int] = {}
        self.limit_refusals: dict[str, int] = {}   # limit name (from the policy) or "budget"
        # (setting, name) of what a routed request asked a provider for beside tokens: an
        # allowed tool or processing tier (names from the policy's allow lists).
        self.unpriced: dict[tuple[str, str], int] = {}
        self.decision_buckets = [0] * (len(BUCKETS) + 1)
        self.decision_sum = 0.0
        self.cache = None
        registry.register(_HotCollector(self))
        # The standard process_* and python_gc_* series (memory, CPU, collections
        # per generation): what a throughput drift is diagnosed with.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)

    def watch_cache(self, cache) -> None:
        self.cache = cache

    def count_routed(self, tier: str, endpoint: str, rule: str) -> None:
        key = (tier, endpoint, rule)
        self.routed[key] = self.routed.get(key, 0) + 1

    def count_denied(self, reason: str, limit: str = "") -> None:
        self.denied[reason] = self.denied.get(reason, 0) + 1
        if limit:
            self.limit_refusals[limit] = self.limit_refusals.get(limit, 0) + 1

    def count_unpriced(self, setting: str, name: str) -> None:
        key = (setting, name)
        self.unpriced[key] = self.unpriced.get(key, 0) + 1

    def observe_decision(self, seconds: float) -> None:
        self.decision_buckets[bisect_left(BUCKETS, seconds)] += 1
        self.decision_sum += seconds


class _HotCollector:
    def __init__(self, metrics: Metrics):
        self.m = metrics

    def collect(self):
        m = self.m
        routed = CounterMetricFamily("router_routed", "Requests routed, by tier, endpoint and rule",
                                     labels=["tier", "endpoint", "rule"])
        for key, value in sorted(m.routed.items()):
            routed.add_metric(list(key), value)
        yield routed
        denied = CounterMetricFamily("router_denied", "Requests refused by the sidecar, by reason",
                                     labels=["reason"])
        for reason, value in sorted(m.denied.items()):
            denied.add_metric([reason], value)
        yield denied
        refusals = CounterMetricFamily("router_limit_refusals", "Requests refused by a limit (its "
                                       "policy name) or a budget (\"budget\")", labels=["limit"])
        for limit, value in sorted(m.limit_refusals.items()):
            refusals.add_metric([limit], value)
        yield refusals
        unpriced = CounterMetricFamily(
            "router_unpriced_requests", "Routed requests that asked the provider for what it bills "
            "beside the tokens and the policy allows (a tool it runs, a processing tier above the "
            "standard one), by policy setting and value: counted, not priced", labels=["setting", "value"])
        for key, value in sorted(m.unpriced.items()):
            unpriced.add_metric(list(key), value)
        yield unpriced
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), m.decision_buckets):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily("router_decision_seconds",
                                    "Time the sidecar spends deciding one request",
                                    buckets=buckets, sum_value=m.decision_sum)
        if m.cache is not None:
            lookups = CounterMetricFamily("router_feature_cache_lookups",
                                          "Feature cache lookups, by result", labels=["result"])
            lookups.add_metric(["hit"], m.cache.hits)
            lookups.add_metric(["miss"], m.cache.misses)
            yield lookups
            yield GaugeMetricFamily("router_feature_cache_bytes", "Memory the feature cache may hold "
                                    "at most (its entries' upper bounds; capped at its budget)",
                                    value=m.cache.held)
