"""The compiled policy: frozen, slotted objects the hot path reads, and `route()`.

Built once by `sidecar.policy.spec.load_policy` from YAML; swapped whole on reload.
"""

from __future__ import annotations

import time
from typing import NamedTuple

from sidecar.access.clients import NO_CLIENTS
from sidecar.denials import Denied
from sidecar.policy.matchers import compile_rules

MAX_FALLBACKS = 2


class Tier(NamedTuple):
    name: str
    rank: int
    latency_target_ms: int
    description: str


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

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def authorization(self) -> str:
        return f"Bearer {self.api_key}" if self.api_key else ""


class RouteAction(NamedTuple):
    tier: Tier | None
    endpoint: Endpoint | None


class DenyAction(NamedTuple):
    status: int
    code: str
    message: str


class Rule(NamedTuple):
    name: str
    when: object         # a matcher (sidecar.policy.matchers)
    action: RouteAction | DenyAction


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

    def pick(self, health: Health) -> Endpoint | None:
        schedule = self.schedule
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
                 pass_response_headers: tuple[str, ...] = ()):
        self.source = source
        self.version = version
        self.constitutional_hash = constitutional_hash
        self.previous_hashes = previous_hashes
        self.tiers = tiers
        self.endpoints = endpoints
        self.endpoint_by_name = {e.name: e for e in endpoints}
        self.rules = rules
        self.default = default
        self._first_match = compile_rules([rule.when for rule in rules])
        self.failover = failover
        self.clients = clients if clients is not None else NO_CLIENTS
        self.limits = limits
        # Header names nginx lets through beyond the protocol's own (lowercase).
        self.pass_request_headers = pass_request_headers
        self.pass_response_headers = pass_response_headers
        self.missing_env = missing_env
        self.health = health or Health()
        self.pools = {t.name: TierPool(tuple(e for e in endpoints if e.tier == t)) for t in tiers}
        # For each endpoint: where to go if it fails (rest of its tier, then tiers above).
        ranked = sorted(tiers, key=lambda t: t.rank)
        self.chains: dict[str, tuple[Endpoint, ...]] = {}
        for e in endpoints:
            same = self.pools[e.tier.name].endpoints
            i = same.index(e)
            chain = list(same[i + 1:] + same[:i])
            for t in ranked:
                if t.rank > e.tier.rank:
                    chain.extend(self.pools[t.name].endpoints)
            self.chains[e.name] = tuple(chain)

    def match(self, features) -> Rule:
        i = self._first_match(features)
        return self.rules[i] if i >= 0 else self.default

    def route(self, features) -> Route:
        rule = self.match(features)
        action = rule.action
        if isinstance(action, DenyAction):
            raise Denied(action.code, action.message, status=action.status)
        endpoint = action.endpoint or self.pick_in_tier(action.tier)
        if not self.health.is_up(endpoint):
            endpoint = next((e for e in self.chains[endpoint.name] if self.health.is_up(e)), endpoint)
        return Route(rule.name, endpoint, self.fallbacks_for(endpoint))

    def pick_in_tier(self, tier: Tier) -> Endpoint:
        endpoint = self.pools[tier.name].pick(self.health)
        if endpoint is not None:
            return endpoint
        # Whole tier down: the tiers above, else try the tier anyway (nginx falls back).
        for e in self.chains[self.pools[tier.name].endpoints[-1].name]:
            if e.tier.rank > tier.rank and self.health.is_up(e):
                return e
        return self.pools[tier.name].schedule[0]

    def route_to_tier(self, tier: Tier, rule: str, allowed=None) -> Route:
        """A route to `tier` (a downgrade), with fallbacks kept inside `allowed` tiers."""
        endpoint = self.pick_in_tier(tier)
        return Route(rule, endpoint, self.fallbacks_for(endpoint, allowed))

    def tier_by_name(self, name: str) -> Tier:
        return next(t for t in self.tiers if t.name == name)

    def fallbacks_for(self, endpoint: Endpoint, allowed=None) -> tuple[Endpoint, ...]:
        out = []
        for e in self.chains[endpoint.name]:
            if allowed is not None and e.tier.name not in allowed:
                continue
            if self.health.is_up(e):
                out.append(e)
                if len(out) == MAX_FALLBACKS:
                    break
        return tuple(out)
