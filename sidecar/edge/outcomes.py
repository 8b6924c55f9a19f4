"""What happened to each forwarded request, from the feedback log, as metrics:
requests by tier/endpoint/status class, upstream latency and time to first byte,
tokens and cost per tier and tenant, fallback hops, each tier's latency target,
and the feedback channel's own health.

Tokens come from the provider's `usage` where lua mode parsed it; otherwise
(stock mode, or an answer without usage) they are estimated (sidecar.edge.estimates),
and the series says so (`source="estimated"`). Counters are plain dicts
read at scrape time, like the hot-path metrics: feedback arrives once per request.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from sidecar.access.budgets import cost_usd
from sidecar.edge import estimates

MAX_ANSWER_TOKENS = 10_000_000   # beyond any model's context window today
# Searches one answer may be charged: a web search tool's max_uses is per request, and
# a provider that reports more is wrong (as for tokens, below).
MAX_WEB_SEARCHES = 1000
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.9, 1.5, 3, 6, 15, 60)


def _last_time(value: str) -> float | None:
    """The served hop's time: the last number of nginx's "0.01, 0.02 : 0.03"."""
    try:
        return float(value)  # one hop: the usual case, and the cheap one
    except ValueError:
        pass
    for part in reversed(value.replace(":", ",").split(",")):
        part = part.strip()
        if part and part != "-":
            try:
                return float(part)
            except ValueError:
                return None
    return None


def _last_time_status(value: str) -> str:
    """The last status in nginx's "502, 200 : 200"."""
    parts = [p.strip() for p in value.replace(":", ",").split(",") if p.strip() and p.strip() != "-"]
    return parts[-1] if parts else ""


class Usage(NamedTuple):
    prompt: int           # every input token
    completion: int
    cache_read: int = 0   # of `prompt`: what the provider's prompt cache served
    cache_write: int = 0  # of `prompt`: what it stored
    web_searches: int = 0  # searches the provider ran for the answer (Anthropic reports them)
    cache_write_1h: int = 0  # of `cache_write`: what it stored for an hour (Anthropic bills it higher)


def provider_usage(entry: dict, context_tokens: int = 0) -> Usage | None:
    """The usage the provider reported, as lua mode parsed it from the answer, each
    count at most the endpoint's context window (or MAX_ANSWER_TOKENS): a provider
    that reports more is wrong, and believing it would charge a client's token
    limits and budget without bound (1e30 tokens locked a client out for good)."""
    # Digit strings from nginx, or "" (stock mode, no usage): isdigit() first, since an
    # int() that raises costs a feedback line ~1 µs each.
    prompt, completion = entry.get("prompt_tokens"), entry.get("completion_tokens")
    if not (prompt and completion and prompt.isdigit() and completion.isdigit()):
        return None
    most = context_tokens or MAX_ANSWER_TOKENS
    prompt, completion = min(int(prompt), most), min(int(completion), most)
    read, write = entry.get("cache_read_tokens"), entry.get("cache_write_tokens")
    searches = entry.get("web_searches")
    if not (read or write or searches):
        return Usage(prompt, completion)
    read = min(int(read), prompt) if read and read.isdigit() else 0
    write = min(int(write), prompt - read) if write and write.isdigit() else 0
    searches = min(int(searches), MAX_WEB_SEARCHES) if searches and searches.isdigit() else 0
    hour = entry.get("cache_write_1h_tokens")
    hour = min(int(hour), write) if hour and hour.isdigit() else 0
    return Usage(prompt, completion, read, write, searches, hour)


class _Histogram:
    __slots__ = ("counts", "total")

    def __init__(self):
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds


class Outcomes:
    def __init__(self, policy_ref):
        self.policy_ref = policy_ref          # callable -> the live Policy
        self.requests: dict[tuple, int] = {}  # (tier, endpoint, status class)
        self.latency: dict[tuple, _Histogram] = {}
        self.ttfb: dict[tuple, _Histogram] = {}
        self.tokens: dict[tuple, int] = {}    # (tier, tenant, direction, source)
        self.cache_tokens: dict[tuple, int] = {}  # (tier, tenant, read|write)
        self.web_searches: dict[tuple, int] = {}  # (tier, tenant)
        self.cost: dict[tuple, float] = {}    # (tier, tenant)
        self.fallbacks: dict[str, int] = {}   # tier
        self.target: dict[tuple, int] = {}    # (tier, within|over)
        self.datagrams = {"ok": 0, "unparsable": 0}
        self.dropped = None                   # UDP feedback: callable -> the kernel's drop count
        self.estimates = estimates.TokenEstimates()
        self.failures: dict[str, int] = {}    # the health tracker's consecutive failures
        self.cooldowns: dict[str, int] = {}   # endpoint -> 429 cooldowns started
        self.retries = None                   # the retry budget, when there is one
        self.shadow_requests: dict[tuple, int] = {}   # (tier, endpoint, status class)
        self.shadow_latency: dict[tuple, _Histogram] = {}
        self.shadow_tokens: dict[tuple, int] = {}     # (tier, endpoint, direction)
        self.shadow_cost: dict[tuple, float] = {}     # (tier, endpoint)
        self.answers: dict[tuple, int] = {}    # (tier, the response cache's verdict)
        self.answers_saved: dict[tuple, float] = {}  # (tier, tenant): what its hits would have cost
        self._tenants: tuple[str, frozenset] = ("", frozenset())

    def _tenant_names(self, policy) -> frozenset:
        if self._tenants[0] != policy.version:
            names = frozenset(t.name for _, t in policy.clients.by_digest.values())
            self._tenants = (policy.version, names)
        return self._tenants[1]

    def _served(self, entry: dict):
        """(the endpoint that served `entry`, its tenant label), or (None, "")."""
        policy = self.policy_ref()
        endpoint = policy.endpoint_by_name.get(entry.get("served") or "")
        tenant = entry.get("tenant") or ""
        if tenant and tenant not in self._tenant_names(policy):
            tenant = "unknown"
        return endpoint, tenant

    def record(self, entry: dict) -> None:
        endpoint, tenant = self._served(entry)
        if endpoint is None:
            return  # not forwarded (denied, or the sidecar failed closed)
        tier = endpoint.tier
        verdict = entry.get("cache")
        if verdict:
            k = (tier.name, verdict.lower())
            self.answers[k] = self.answers.get(k, 0) + 1
            if verdict == "HIT":  # nginx answered: no endpoint was asked or paid
                self._within_target(entry, tier)
                usage = self._usage(entry, endpoint)[0]
                saved = (tier.name, tenant)
                self.answers_saved[saved] = self.answers_saved.get(saved, 0.0) + cost_usd(endpoint, *usage)
                return
        status = entry.get("status", "")
        key = (tier.name, endpoint.name)
        counted = (tier.name, endpoint.name, status[:1] + "xx")
        self.requests[counted] = self.requests.get(counted, 0) + 1
        total = _last_time(entry.get("upstream_response_time", ""))
        first = _last_time(entry.get("upstream_header_time", ""))
        if total is not None:
            latency = self.latency.get(key)
            if latency is None:
                latency = self.latency[key] = _Histogram()
            latency.observe(total)
        if first is not None:
            ttfb = self.ttfb.get(key)
            if ttfb is None:
                ttfb = self.ttfb[key] = _Histogram()
            ttfb.observe(first)
        if entry.get("hop", "0") not in ("0", ""):
            self.fallbacks[tier.name] = self.fallbacks.get(tier.name, 0) + 1
        self._within_target(entry, tier)
        if status.startswith("2") and not entry.get("deferred"):
            self._count_usage(entry, endpoint, tenant)

    def _within_target(self, entry: dict, tier) -> None:
        took = _last_time(entry.get("request_time", ""))
        if took is not None and tier.latency_target_ms:
            verdict = "within" if took * 1000 <= tier.latency_target_ms else "over"
            self.target[(tier.name, verdict)] = self.target.get((tier.name, verdict), 0) + 1

    def count_usage(self, entry: dict) -> None:
        """A request's tokens and cost alone: a background response's, once known."""
        endpoint, tenant = self._served(entry)
        if endpoint is not None:
            self._count_usage(entry, endpoint, tenant)

    def record_shadow(self, entry: dict) -> None:
        """A mirrored request's outcome (its answer went nowhere, but its tokens were
        spent: estimated from the prompt and the answer's bytes, since nginx reads a
        mirror's answer without passing it through the usage parser)."""
        endpoint = self.policy_ref().endpoint_by_name.get(entry.get("served") or "")
        if endpoint is None:
            return
        status = _last_time_status(entry.get("upstream_status", "")) or entry.get("status", "")
        key = (endpoint.tier.name, endpoint.name, status[:1] + "xx")
        self.shadow_requests[key] = self.shadow_requests.get(key, 0) + 1
        took = _last_time(entry.get("upstream_response_time", ""))
        if took is not None:
            h = self.shadow_latency.get(key[:2])
            if h is None:
                h = self.shadow_latency[key[:2]] = _Histogram()
            h.observe(took)
        if not status.startswith("2"):
            return   # a refusal or failure generated nothing
        prompt, completion = estimates.prompt_tokens(entry), self.estimates.completion_tokens(entry)
        for direction, n in (("in", prompt), ("out", completion)):
            k = (*key[:2], direction)
            self.shadow_tokens[k] = self.shadow_tokens.get(k, 0) + n
        self.shadow_cost[key[:2]] = self.shadow_cost.get(key[:2], 0.0) + cost_usd(endpoint, prompt, completion)

    def _usage(self, entry: dict, endpoint) -> tuple[Usage, str]:
        """(the answer's usage, "provider" or "estimated")."""
        usage = provider_usage(entry, endpoint.context_tokens)
        if usage is not None:
            return usage, "provider"
        return Usage(estimates.prompt_tokens(entry), self.estimates.completion_tokens(entry)), "estimated"

    def _count_usage(self, entry: dict, endpoint, tenant: str) -> None:
        usage, source = self._usage(entry, endpoint)
        if source == "provider":
            self.estimates.learn(entry, usage.completion)
        tier = endpoint.tier.name
        for direction, n in (("in", usage.prompt), ("out", usage.completion)):
            k = (tier, tenant, direction, source)
            self.tokens[k] = self.tokens.get(k, 0) + n
        if usage.cache_read or usage.cache_write:
            for op, n in (("read", usage.cache_read), ("write", usage.cache_write)):
                k = (tier, tenant, op)
                self.cache_tokens[k] = self.cache_tokens.get(k, 0) + n
        if usage.web_searches:
            self.web_searches[(tier, tenant)] = self.web_searches.get((tier, tenant), 0) + usage.web_searches
        usd = cost_usd(endpoint, *usage)
        self.cost[(tier, tenant)] = self.cost.get((tier, tenant), 0.0) + usd

    def collect(self):
        policy = self.policy_ref()
        yield _counter("router_upstream_requests", "Forwarded requests by serving tier, endpoint and "
                       "status class", ["tier", "endpoint", "status_class"], self.requests)
        yield _histogram("router_upstream_duration_seconds", "Endpoint response time (the hop that "
                         "served), by tier and endpoint", self.latency)
        yield _histogram("router_upstream_ttfb_seconds", "Endpoint time to first byte (for streams, "
                         "time to first token), by tier and endpoint", self.ttfb)
        yield _counter("router_tokens", "Tokens by tier, tenant, direction (in/out) and source "
                       "(provider-reported or estimated)", ["tier", "tenant", "direction", "source"],
                       self.tokens)
        yield _counter("router_prompt_cache_tokens", "Input tokens the provider's prompt cache read "
                       "or wrote (part of router_tokens direction=in), by tier, tenant and op",
                       ["tier", "tenant", "op"], self.cache_tokens)
        yield _counter("router_cost_usd", "Cost in USD from endpoint prices and usage, by tier and "
                       "tenant", ["tier", "tenant"], self.cost)
        yield _counter("router_web_searches", "Web searches providers reported running for answers "
                       "(priced at the endpoint's price.web_search in router_cost_usd), by tier and "
                       "tenant", ["tier", "tenant"], self.web_searches)
        yield _counter("router_fallback_hops", "Requests served by a fallback hop, by serving tier",
                       ["tier"], {(k,): v for k, v in self.fallbacks.items()})
        yield _counter("router_latency_target", "Requests within or over their tier's "
                       "latency_target_ms (nginx's request time)", ["tier", "result"], self.target)
        datagrams = {(k,): v for k, v in self.datagrams.items()}
        if self.dropped is not None:
            datagrams[("dropped",)] = self.dropped()
        yield _counter("router_feedback_datagrams", "Feedback log datagrams received, by result "
                       "(dropped: by the kernel, the sidecar's buffer full)", ["result"], datagrams)
        ratio = GaugeMetricFamily("router_bytes_per_token", "Answer body bytes per completion token "
                                  "the estimates use (learned where usage was reported), by API "
                                  "and streamed or not", labels=["api", "stream"])
        for api in estimates.APIS:
            if api in estimates.GENERATE_NOTHING:
                continue   # no completion to estimate
            for streamed in (False, True):
                ratio.add_metric([api, str(streamed).lower()], self.estimates.bytes_per_token(api, streamed))
        yield ratio
        up = GaugeMetricFamily("router_endpoint_up", "1 if the endpoint takes traffic (passive "
                               "health), 0 while marked down", labels=["endpoint", "tier"])
        for e in policy.endpoints:
            up.add_metric([e.name, e.tier.name], 1.0 if policy.health.is_up(e) else 0.0)
        yield up
        failing = GaugeMetricFamily("router_endpoint_consecutive_failures", "Failures in a row "
                                    "seen from the endpoint (it is marked down at the threshold)",
                                    labels=["endpoint"])
        for e in policy.endpoints:
            failing.add_metric([e.name], float(self.failures.get(e.name, 0)))
        yield failing
        yield _counter("router_shadow_requests", "Mirrored requests to the policy's shadow endpoint "
                       "(answers discarded), by tier, endpoint and status class",
                       ["tier", "endpoint", "status_class"], self.shadow_requests)
        yield _histogram("router_shadow_duration_seconds", "Shadow endpoint response time (the "
                         "whole answer)", self.shadow_latency)
        yield _counter("router_shadow_tokens", "Tokens the shadow endpoint was sent and generated "
                       "(estimated: prompt from the decision, answer from its bytes), by direction",
                       ["tier", "endpoint", "direction"], self.shadow_tokens)
        yield _counter("router_shadow_cost_usd", "What the shadow endpoint cost, from its prices and "
                       "the estimated tokens (not in router_cost_usd)", ["tier", "endpoint"],
                       self.shadow_cost)
        yield _counter("router_response_cache", "Buffered requests the response cache saw, by tier "
                       "and nginx's verdict (hit: answered from it; miss, expired: asked the endpoint "
                       "and kept the answer; bypass: not cacheable, or the client sent no-store or no-cache)",
                       ["tier", "result"], self.answers)
        yield _counter("router_response_cache_saved_usd", "What the endpoints would have cost for "
                       "the answers the response cache gave (not in router_cost_usd)",
                       ["tier", "tenant"], self.answers_saved)
        yield _counter("router_endpoint_cooldowns", "Times an endpoint was taken out of rotation "
                       "for its Retry-After after a 429", ["endpoint"],
                       {(k,): v for k, v in self.cooldowns.items()})
        if self.retries is not None:
            refused = CounterMetricFamily("router_retry_budget_exhausted", "Decisions sent without "
                                          "fallbacks because the retry budget was spent")
            refused.add_metric([], self.retries.refused)
            yield refused
        budget = GaugeMetricFamily("router_tenant_budget_usd", "Each tenant's daily budget from the "
                                   "policy (spent: increase(router_cost_usd_total[1d]))", labels=["tenant"])
        for _, tenant in {t.name: (None, t) for _, t in policy.clients.by_digest.values()}.values():
            if tenant.budget_usd_per_day:
                budget.add_metric([tenant.name], tenant.budget_usd_per_day)
        yield budget


def _counter(name, doc, labels, values):
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _histogram(name, doc, values):
    family = HistogramMetricFamily(name, doc, labels=["tier", "endpoint"])
    for key, h in sorted(values.items()):
        cumulative, buckets = 0, []
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), h.counts):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric(list(key), buckets, h.total)
    return family
