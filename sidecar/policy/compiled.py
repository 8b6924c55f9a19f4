"""The compiled policy: frozen, slotted objects the hot path reads, and `route()`.

Built once by `sidecar.policy.spec.load_policy` from YAML; swapped whole on reload.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import xxhash

from sidecar.access.clients import NO_CLIENTS
from sidecar.denials import Denied
from sidecar.policy.apis import APIS, DEFAULT_SERVES
from sidecar.policy.matchers import compile_rules

MAX_FALLBACKS = 2
UNLIMITED = 1 << 62


class Tier(NamedTuple):
    name: str
    rank: int
    latency_target_ms: int
    description: str
    first_byte_timeout_ms: int = 0   # an endpoint silent this long: next hop (0: nginx's 300 s)
    max_stream_s: int = 0            # a stream longer than this is ended with an error event


# Every 5xx an endpoint, or the CDN in front of it, answers: 500-511 (RFC 9110 and the
# registered extensions), Cloudflare's 520-527 and 530 (OpenAI and many others sit
# behind it, and its pages are HTML), and Anthropic's 529 overloaded_error. Named one
# by one because nginx's error_page is: a status missing here reached the client as
# the endpoint sent it, with no fallback and no mark against the endpoint's health.
SERVER_ERRORS = frozenset((*range(500, 512), *range(520, 528), 529, 530))
# A redirect (or a bodiless 304) from an endpoint: an API call is never redirected, so
# the endpoint's URL is wrong (http for https, a moved path). Passed on, the client
# got a 3xx it could not follow (the router hides Location) and the endpoint's body.
REDIRECTS = frozenset((300, 301, 302, 303, 304, 305, 307, 308))
# Endpoint statuses that move a request to the next hop unless the endpoint says otherwise.
# 401/403: the endpoint refused the router's credential (revoked, rotated, unset),
# which another endpoint's may not be.
FAILOVER_STATUSES = frozenset({401, 403, 429}) | REDIRECTS | SERVER_ERRORS


class Endpoint(NamedTuple):
    name: str            # also the nginx upstream name
    tier: Tier
    scheme: str          # http | https
    host: str            # host name or address (SNI and Host header)
    port: int
    base_path: str       # path prefix, no trailing slash ("/openai/v1")
    model: str           # upstream model id
    price_in: float      # USD per prompt token
    price_out: float     # USD per completion token
    weight: int
    api_key: str         # resolved from the environment; never logged
    down: bool           # marked down in the policy
    serves: frozenset = frozenset(DEFAULT_SERVES)   # API names (sidecar.policy.apis)
    auth: str = "bearer"                             # bearer | x-api-key
    context_tokens: int = 0                          # prompt + completion window; 0: unknown
    failover_on: frozenset = FAILOVER_STATUSES       # statuses that move on to the next hop
    price_cache_read: float = 0.0                    # USD per input token read from the prompt cache
    price_cache_write: float = 0.0                   # USD per input token written to it
    price_web_search: float = 0.0                    # USD per search the provider ran for an answer
    price_cache_write_1h: float = 0.0                # USD per input token written to it for an hour

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def authorization(self) -> str:
        """The credential header's value nginx sends (Authorization or x-api-key)."""
        if not self.api_key:
            return ""
        return self.api_key if self.auth == "x-api-key" else f"Bearer {self.api_key}"


class RouteAction(NamedTuple):
    tier: Tier | None
    endpoint: Endpoint | None


class SplitAction(NamedTuple):
    """A canary: one of several routes by weight, the same one for a client every
    time (a hash of the client and the rule), so a conversation stays on one side."""
    arms: tuple          # ((RouteAction, label, cumulative weight), ...)
    total: int


class DenyAction(NamedTuple):
    status: int
    code: str
    message: str


class Rule(NamedTuple):
    name: str
    when: object         # a matcher (sidecar.policy.matchers)
    action: RouteAction | DenyAction


class Models(NamedTuple):
    """What model names mean: `auto`, the tier names and the aliases are known;
    any other name is routed by the rules, or refused (`unknown: reject`)."""
    reject_unknown: bool = False
    status: int = 404                       # for an unknown name: 404 or 400
    aliases: tuple = ()                     # (name, Tier | None, Endpoint | None)


class Cors(NamedTuple):
    origins: tuple = ()                     # exact origins, or ("*",)
    headers: tuple = ()                     # request headers a browser may send
    expose: tuple = ()                      # response headers a page may read
    max_age: int = 600
    credentials: bool = False


class ResponseCache(NamedTuple):
    """Answers nginx keeps and gives again to an exact repeat of a request
    (policy `response_cache`): same client (unless shared), API, body and the
    headers that change an answer, and the same endpoint and model."""
    ttl_s: int
    max_size_mb: int
    apis: frozenset
    shared: bool = False                    # every client gets every client's answers


class Failover(NamedTuple):
    """What nginx does when the sidecar is down, slow or answers garbage."""
    path: str            # "" for the default
    endpoint: str        # "" means fail closed (503)


class Route(NamedTuple):
    rule: str
    endpoint: Endpoint
    fallbacks: tuple[Endpoint, ...]


class Health:
    """Endpoints known to be failing, until a deadline. Fed by the feedback channel."""

    __slots__ = ("down_until", "clock")

    def __init__(self, clock=time.monotonic):
        self.down_until: dict[str, float] = {}
        self.clock = clock

    def mark_down(self, name: str, seconds: float) -> None:
        self.down_until[name] = self.clock() + seconds

    def down_now(self) -> list[str]:
        now = self.clock()
        return sorted(name for name, until in self.down_until.items() if until > now)

    def is_up(self, endpoint: Endpoint) -> bool:
        if endpoint.down:
            return False
        if not self.down_until:
            return True
        until = self.down_until.get(endpoint.name)
        if until is None:
            return True
        if self.clock() >= until:
            del self.down_until[endpoint.name]
            return True
        return False


class TierPool:
    """The endpoints of one tier and a smooth weighted round-robin schedule over them
    (precomputed once, so picking is O(1) whatever the weights)."""

    __slots__ = ("endpoints", "schedule", "cursor")

    def __init__(self, endpoints: tuple[Endpoint, ...]):
        self.endpoints = endpoints
        self.schedule = _smooth_weighted_schedule(endpoints)
        self.cursor = 0

    def pick(self, health: Health, slot: int | None = None) -> Endpoint | None:
        """The next endpoint that is up, or the first one up from a fixed `slot` of
        the schedule (weighted alike over many slots; the same one for one slot)."""
        schedule = self.schedule
        if slot is not None:
            for i in range(len(schedule)):
                endpoint = schedule[(slot + i) % len(schedule)]
                if health.is_up(endpoint):
                    return endpoint
            return None
        for _ in range(len(schedule)):
            endpoint = schedule[self.cursor]
            self.cursor = (self.cursor + 1) % len(schedule)
            if health.is_up(endpoint):
                return endpoint
        return None


def _smooth_weighted_schedule(endpoints) -> tuple[Endpoint, ...]:
    # nginx's smooth weighted round robin, unrolled over one full cycle.
    current = [0] * len(endpoints)
    total = sum(e.weight for e in endpoints)
    order = []
    for _ in range(total):
        for i, e in enumerate(endpoints):
            current[i] += e.weight
        best = max(range(len(endpoints)), key=lambda i: current[i])
        current[best] -= total
        order.append(endpoints[best])
    return tuple(order)


class Policy:
    """A compiled policy. `route(features)` is the whole hot-path decision."""

    def __init__(self, *, source: str, version: str, constitutional_hash: str,
                 previous_hashes: tuple[tuple[str, float], ...] = (),
                 tiers: tuple[Tier, ...], endpoints: tuple[Endpoint, ...],
                 rules: tuple[Rule, ...], default: Rule, failover: tuple[Failover, ...],
                 missing_env: tuple[str, ...] = (), health: Health | None = None,
                 clients=None, limits: tuple = (),
                 pass_request_headers: tuple[str, ...] = (),
                 pass_response_headers: tuple[str, ...] = (),
                 models: Models = Models(), cors: Cors | None = None,
                 retry_budget: tuple[float, float] = (0.2, 10.0), shadow=None,
                 response_cache: ResponseCache | None = None,
                 reject_unknown_conversations: bool = False,
                 provider_tools: frozenset = frozenset(), service_tier: frozenset = frozenset()):
        self.source = source
        self.version = version
        self.created = int(time.time())     # the model list's `created`
        self.constitutional_hash = constitutional_hash
        self.previous_hashes = previous_hashes
        self.tiers = tiers
        self.endpoints = endpoints
        self.endpoint_by_name = {e.name: e for e in endpoints}
        self.rules = rules
        self.default = default
        self._first_match = compile_rules([rule.when for rule in rules])
        self.models = models
        self.known_models = frozenset({"auto", *(t.name for t in tiers),
                                       *(name for name, _, _ in models.aliases)})
        self.alias_routes = {name: RouteAction(tier, endpoint) for name, tier, endpoint in models.aliases}
        self.cors = cors
        self.retry_budget = retry_budget    # (share of requests, retries per second floor)
        self.shadow = shadow                # (Endpoint, share) mirrored, or None
        self.response_cache = response_cache
        # A follow-up naming an answer the router never saw: refused (True) or routed.
        self.reject_unknown_conversations = reject_unknown_conversations
        # Tools a provider runs and bills itself that clients may ask for (families).
        self.provider_tools = provider_tools
        # Processing tiers priced above the standard one that clients may ask for.
        self.service_tier = service_tier
        self.failover = failover
        self.clients = clients if clients is not None else NO_CLIENTS
        self.limits = limits
        # Header names nginx lets through beyond the protocol's own (lowercase).
        self.pass_request_headers = pass_request_headers
        self.pass_response_headers = pass_response_headers
        self.missing_env = missing_env
        self.health = health or Health()
        self.ranked = tuple(sorted(tiers, key=lambda t: t.rank))
        # Per (tier, API): the tier's endpoints that serve the API. A tier with none
        # for an API sends it to the nearest tier that has some (above first).
        self.pools: dict[tuple[str, str], TierPool] = {}
        for t in tiers:
            for api in APIS:
                members = tuple(e for e in endpoints if e.tier == t and api in e.serves)
                if members:
                    self.pools[(t.name, api)] = TierPool(members)
        self.tier_order = {(t.name, api): self._nearest_tiers(t, api) for t in tiers for api in APIS}
        # Per (endpoint, API): where to go if it fails (rest of its tier, then the
        # tiers above), only endpoints that serve the API.
        self.chains: dict[tuple[str, str], tuple[Endpoint, ...]] = {}
        for e in endpoints:
            for api in APIS:
                pool = self.pools.get((e.tier.name, api))
                same = pool.endpoints if pool else ()
                chain = list(same[same.index(e) + 1:] + same[:same.index(e)]) if e in same else list(same)
                for t in self.ranked:
                    if t.rank > e.tier.rank and (t.name, api) in self.pools:
                        chain.extend(self.pools[(t.name, api)].endpoints)
                self.chains[(e.name, api)] = tuple(chain)
        # The smallest context window among an API's endpoints: a request that fits
        # it fits everywhere, and the per-endpoint check is skipped (the usual case).
        self.min_context = {api: min((e.context_tokens or UNLIMITED for e in endpoints
                                      if api in e.serves), default=UNLIMITED) for api in APIS}
        self.served_apis = frozenset(api for api in APIS if any(api in e.serves for e in endpoints))

    def _nearest_tiers(self, tier: Tier, api: str) -> tuple[Tier, ...]:
        """`tier` and then the others that serve `api`: above by rank, then below."""
        above = [t for t in self.ranked if t.rank > tier.rank]
        below = [t for t in reversed(self.ranked) if t.rank < tier.rank]
        return tuple(t for t in (tier, *above, *below) if (t.name, api) in self.pools)

    def match(self, features) -> Rule:
        i = self._first_match(features)
        return self.rules[i] if i >= 0 else self.default

    def check_model_name(self, model: str, rewritten: bool = True) -> None:
        """Refuse a name the router does not know, under `unknown: reject`, or always
        when the body is forwarded as the client wrote it (`rewritten` False: stock
        mode). An unknown name is routed by the rules only because the body is then
        rewritten to the routed endpoint's model; sent as written, the endpoint would
        serve whatever the client named (any model its provider account has), not the
        one the router chose, priced and allowed this client."""
        if model and model not in self.known_models and (self.models.reject_unknown or not rewritten):
            raise Denied("model_not_found", f"the model '{model}' does not exist; GET /v1/models "
                         "lists the models this router serves", status=self.models.status)

    def route(self, features) -> Route:
        model = features.model
        self.check_model_name(model)
        alias = self.alias_routes.get(model) if self.alias_routes else None
        if alias is not None:
            rule, action = f"alias:{features.model}", alias
            if alias.endpoint is not None and features.api not in alias.endpoint.serves:
                # An embedding model asked to chat is the client's mistake: say so.
                raise Denied("invalid_request", f"the model '{model}' does not serve "
                             f"{APIS[features.api]}")
        else:
            matched = self.match(features)
            rule, action = matched.name, matched.action
            if isinstance(action, DenyAction):
                raise Denied(action.code, action.message, status=action.status)
            if isinstance(action, SplitAction):
                point = xxhash.xxh3_64_intdigest(f"{rule}|{features.sticky}".encode()) % action.total
                action, label = next((a, l) for a, l, upto in action.arms if point < upto)
                rule = f"{rule}:{label}"
        api = features.api
        if action.endpoint is not None and api in action.endpoint.serves:
            endpoint = action.endpoint
        else:  # a pinned endpoint that does not serve this API: its tier's that do
            endpoint = self.pick_in_tier(action.tier or action.endpoint.tier, api, features.cache_slot)
        need = features.tokens + features.max_tokens
        if need > self.min_context[api]:
            endpoint = self._fitting(endpoint, api, need)
        elif not self.health.is_up(endpoint):
            endpoint = next((e for e in self.chains[(endpoint.name, api)] if self.health.is_up(e)),
                            endpoint)
        return Route(rule, endpoint, self.fallbacks_for(endpoint, api, need))

    def pick_in_tier(self, tier: Tier, api: str = "chat", slot: int | None = None) -> Endpoint:
        order = self.tier_order[(tier.name, api)]
        if not order:
            raise Denied("api_not_served", f"no endpoint of this router serves {APIS[api]}",
                         status=404)
        for t in order:
            endpoint = self.pools[(t.name, api)].pick(self.health, slot)
            if endpoint is not None:
                return endpoint
        # Every candidate is down: try the first anyway (nginx falls back).
        return self.pools[(order[0].name, api)].schedule[0]

    def _fitting(self, endpoint: Endpoint, api: str, need: int) -> Endpoint:
        """The first endpoint, from `endpoint` along its chain and then any other that
        serves `api`, whose context window holds `need` tokens (up ones first)."""
        rest = sorted((e for e in self.endpoints if api in e.serves),
                      key=lambda e: (e.tier.rank < endpoint.tier.rank, abs(e.tier.rank - endpoint.tier.rank)))
        candidates = [e for e in (endpoint, *self.chains[(endpoint.name, api)], *rest) if fits(e, need)]
        if not candidates:
            largest = max((e.context_tokens for e in self.endpoints if api in e.serves), default=0)
            raise Denied("context_length_exceeded", f"the request needs about {need} tokens (prompt "
                         f"estimate + max_tokens); the largest context window here is {largest}")
        return next((e for e in candidates if self.health.is_up(e)), candidates[0])

    def route_to_tier(self, tier: Tier, rule: str, features, allowed=None) -> Route:
        """A route to `tier` (a downgrade), with fallbacks kept inside `allowed` tiers."""
        need = features.tokens + features.max_tokens
        endpoint = self.pick_in_tier(tier, features.api, features.cache_slot)
        if need > self.min_context[features.api]:
            endpoint = self._fitting(endpoint, features.api, need)
        return Route(rule, endpoint, self.fallbacks_for(endpoint, features.api, need, allowed))

    def tier_by_name(self, name: str) -> Tier:
        return next(t for t in self.tiers if t.name == name)

    def fallbacks_for(self, endpoint: Endpoint, api: str = "chat", need: int = 0,
                      allowed=None) -> tuple[Endpoint, ...]:
        out = []
        check_fit = need > self.min_context[api]
        for e in self.chains[(endpoint.name, api)]:
            if allowed is not None and e.tier.name not in allowed:
                continue
            if check_fit and not fits(e, need):
                continue
            if self.health.is_up(e):
                out.append(e)
                if len(out) == MAX_FALLBACKS:
                    break
        return tuple(out)


def fits(endpoint: Endpoint, need: int) -> bool:
    return not endpoint.context_tokens or need <= endpoint.context_tokens
