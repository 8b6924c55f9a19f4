"""Prometheus metrics, declared once on an injected registry. Labels are bounded
to names known when the policy loads (tier, endpoint, rule, reason)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily

BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.routed = Counter("router_routed_total", "Requests routed, by tier, endpoint and rule",
                              ["tier", "endpoint", "rule"], registry=registry)
        self.denied = Counter("router_denied_total", "Requests refused by the sidecar, by reason",
                              ["reason"], registry=registry)
        self.errors = Counter("router_errors_total", "Unexpected errors in the sidecar (bugs)",
                              registry=registry)
        self.decision_seconds = Histogram("router_decision_seconds",
                                          "Time the sidecar spends deciding one request",
                                          buckets=BUCKETS, registry=registry)
        self.reloads = Counter("router_policy_reloads_total", "Policy reloads, by result",
                               ["result"], registry=registry)
        self.shadow_denied = Counter("router_shadow_limit_denied_total",
                                     "Requests a shadow limit would have refused", ["limit"],
                                     registry=registry)
        self.store_degraded = Counter("router_limit_store_degraded_total",
                                      "Decisions made by the in-process store because Redis was "
                                      "slow, down or circuit-broken", ["reason"], registry=registry)
        self._routed_children: dict = {}
        self._denied_children: dict = {}

    def watch_cache(self, cache) -> None:
        """Export the feature cache's own hit/miss counts at scrape time (no
        per-request metric work for the cache)."""
        class CacheCollector:
            def collect(self):
                family = CounterMetricFamily("router_feature_cache_lookups",
                                             "Feature cache lookups, by result", labels=["result"])
                family.add_metric(["hit"], cache.hits)
                family.add_metric(["miss"], cache.misses)
                yield family
        self.registry.register(CacheCollector())

    def count_routed(self, tier: str, endpoint: str, rule: str) -> None:
        key = (tier, endpoint, rule)
        child = self._routed_children.get(key)
        if child is None:
            child = self._routed_children[key] = self.routed.labels(*key)
        child.inc()

    def count_denied(self, reason: str) -> None:
        child = self._denied_children.get(reason)
        if child is None:
            child = self._denied_children[reason] = self.denied.labels(reason)
        child.inc()
