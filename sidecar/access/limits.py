"""Rate limits and budgets: which limits apply to a request, one check-all /
commit-if-all-pass step against a store, and the headers that tell a client
where it stands.

The algorithm is sidecar.access.gcra; the state lives in a store with one method,
`admit(checks, now_ns)`, so the in-process store here and the Redis store
(sidecar.access.redis_store) are interchangeable and share one conformance suite.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

from sidecar.access import gcra
from sidecar.denials import Denied

KEY_PARTS = ("client", "tenant", "key", "ip", "tier", "endpoint")


class Limit(NamedTuple):
    name: str
    parts: tuple[str, ...]         # from KEY_PARTS
    kind: str                      # requests | tokens
    rate: gcra.Rate
    shadow: bool                   # counted, never enforced
    tiers: frozenset | None        # only for these tiers; None: all

    @property
    def window(self) -> int:
        """Seconds for an empty bucket to refill: the w of RateLimit-Policy."""
        return math.ceil(self.rate.burst * self.rate.period / self.rate.rate)


class Check(NamedTuple):
    key: str
    rate: gcra.Rate
    cost: int
    enforced: bool


class Spend(NamedTuple):
    """A budget reservation: add `micros` to `key` unless that passes `cap`."""
    key: str          # tenant and UTC day
    micros: int
    cap: int
    ttl: int          # seconds the day's total must be kept


class MemoryStore:
    """In-process GCRA state. Synchronous and lock-free: the event loop runs one
    decision at a time, and nginx sends a given client to a given process."""

    name = "memory"

    def __init__(self, sweep_every: int = 10_000):
        self.tat: dict[str, int] = {}
        self.spent: dict[str, int] = {}
        self.sweep_every = sweep_every
        self.writes = 0

    def admit(self, checks: list[Check], now_ns: int, spend: Spend | None = None):
        """(all enforced limits pass and the budget holds, outcomes, budget holds);
        nothing is committed unless the first is true."""
        outcomes = [gcra.check(c.rate, self.tat.get(c.key), c.cost, now_ns) for c in checks]
        ok = all(o.allowed for o, c in zip(outcomes, checks) if c.enforced)
        budget_ok = spend is None or self.spent.get(spend.key, 0) + spend.micros <= spend.cap
        if ok and budget_ok:
            for o, c in zip(outcomes, checks):
                if o.allowed:
                    self.tat[c.key] = o.new_tat
            if spend is not None:
                self.spent[spend.key] = self.spent.get(spend.key, 0) + spend.micros
            self.writes += 1
            if self.writes % self.sweep_every == 0:
                self.sweep(now_ns)
        return ok and budget_ok, outcomes, budget_ok

    def refund_spend(self, key: str, micros: int) -> None:
        if key in self.spent:
            self.spent[key] = max(0, self.spent[key] - micros)

    def refund(self, key: str, rate: gcra.Rate, units: int, now_ns: int) -> None:
        tat = self.tat.get(key)
        if tat is not None:
            self.tat[key] = gcra.refund(rate, tat, units, now_ns)

    # Which endpoint served a Responses answer is shared between hosts only through
    # Redis (sidecar.edge.conversations keeps each process's own map).
    def remember_response(self, response_id: str, endpoint: str, tenant: str) -> None:
        pass

    def response_holder(self, response_id: str) -> tuple[str, str | None] | None:
        return None

    def sweep(self, now_ns: int) -> None:
        """Forget buckets that are full again (their TAT is in the past) and
        budgets of days that are over."""
        for key in [k for k, tat in self.tat.items() if tat <= now_ns * _rate_of(k)]:
            del self.tat[key]
        today = now_ns // 1_000_000_000 // 86_400
        for key in [k for k in self.spent if int(k.rsplit("|", 1)[1]) < today]:
            del self.spent[key]


def _rate_of(key: str) -> int:
    # Keys carry their rate so a sweep can compare scaled times: "name|rate|...".
    return int(key.split("|", 2)[1])


class Reservation(NamedTuple):
    """What a request reserved; settle it with the actual token usage later."""
    token_checks: tuple[Check, ...]
    reserved_tokens: int


class Admission(NamedTuple):
    headers: tuple[tuple[str, str], ...]
    reservation: Reservation
    shadow_denied: tuple[str, ...]   # shadow limits that would have refused


def state_key(limit: Limit, values: dict) -> str:
    # "name|rate|part values": the rate lets a sweep of the memory store compare times.
    return f"{limit.name}|{limit.rate.rate}|" + "|".join([values[p] for p in limit.parts])


def admit(store, limits: tuple[Limit, ...], values: dict, tier: str, tokens: int,
          now_ns: int, spend: Spend | None = None) -> Admission | None:
    """Check every applicable limit and the budget in one store call; commit only
    if all enforced limits pass and the budget holds. Raises Denied(429) for a
    limit; returns None when only the budget refused (the caller decides)."""
    applicable, checks = [], []
    for lim in limits:
        if lim.tiers is None or tier in lim.tiers:
            applicable.append(lim)
            checks.append(Check(state_key(lim, values), lim.rate,
                                tokens if lim.kind == "tokens" else 1, not lim.shadow))
    if not checks and spend is None:
        return Admission((), Reservation((), 0), ())
    _, outcomes, budget_ok = store.admit(checks, now_ns, spend)
    tightest, failed, shadow_denied = None, [], ()
    for lim, o in zip(applicable, outcomes):
        if lim.shadow:
            if not o.allowed:
                shadow_denied += (lim.name,)
        elif not o.allowed:
            failed.append((lim, o))
        elif tightest is None or o.remaining * tightest[0].rate.burst < tightest[1].remaining * lim.rate.burst:
            tightest = (lim, o)  # least remaining relative to its burst
    if failed:
        raise _too_many(failed)
    if not budget_ok:
        return None
    headers = _headers(*tightest) if tightest else ()
    token_checks = tuple(c for lim, c in zip(applicable, checks) if lim.kind == "tokens" and not lim.shadow)
    return Admission(headers, Reservation(token_checks, tokens), shadow_denied)


def settle(store, reservation: Reservation, used_tokens: int, now_ns: int) -> None:
    """Give back reserved tokens that were not used (prompt estimate + max_tokens
    reserved at admission vs. the usage the endpoint reported), or charge the
    ones used beyond the reservation (a negative refund)."""
    unused = reservation.reserved_tokens - used_tokens
    if unused:
        for check in reservation.token_checks:
            store.refund(check.key, check.rate, unused, now_ns)


@lru_cache(maxsize=1024)
def _policy_header(lim: Limit) -> str:
    return f'"{lim.name}";q={lim.rate.burst};w={lim.window}'


def _headers(lim: Limit, o) -> tuple[tuple[str, str], ...]:
    """RateLimit-Policy / RateLimit (IETF httpapi draft) for one limit."""
    return (("RateLimit-Policy", _policy_header(lim)),
            ("RateLimit", f'"{lim.name}";r={max(0, o.remaining)};t={o.reset}'))


def _too_many(failed) -> Denied:
    never = [lim for lim, o in failed if o.retry_after < 0]
    lim, o = max(failed, key=lambda pair: pair[1].retry_after)
    headers = list(_headers(lim, o))
    if never:
        return Denied("rate_limit_exceeded",
                      f"this request costs more than limit '{never[0].name}' allows at once "
                      f"({never[0].rate.burst} {never[0].kind}); retrying will not help",
                      status=429, headers=tuple(headers), limit=never[0].name)
    headers.append(("Retry-After", str(o.retry_after)))
    return Denied("rate_limit_exceeded",
                  f"rate limit '{lim.name}' exceeded; retry after {o.retry_after} s",
                  status=429, headers=tuple(headers), limit=lim.name)
