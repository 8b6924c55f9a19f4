"""The limit store in Redis, for several hosts: one atomic Lua script per
decision (check every limit and the tenant's daily budget, commit only if all
enforced limits pass and the budget holds), time from Redis TIME. When Redis is slow or down, decisions fall back to the in-process
store within a short deadline, a circuit breaker stops hammering Redis, and
every degraded decision is counted and logged.

Lua numbers are doubles, exact only below 2**53, so the script keeps each
bucket as (debt, last_ms): debt in rate-scaled milliseconds (one unit costs
`period` ms), at most burst*period*1000 — exact for any sane limit. Decisions
match sidecar.access.gcra exactly at millisecond resolution.
"""

from __future__ import annotations

import logging
import time

import redis

from sidecar.access import gcra
from sidecar.access.limits import Check, MemoryStore, Spend

log = logging.getLogger("sidecar.access.redis_store")

SCRIPT = """
local now_ms
if ARGV[1] ~= '' then
  now_ms = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local n = tonumber(ARGV[2])
local results = {}
local all_ok = true
local debts = {}
local budget_ok = true
local spend = tonumber(ARGV[3])
if spend then
  local spent = tonumber(redis.call('GET', KEYS[n + 1]) or '0')
  budget_ok = spent + spend <= tonumber(ARGV[4])
end
for i = 1, n do
  local base = 5 + (i - 1) * 5
  local rate, period, burst, cost, enforced =
    tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]),
    tonumber(ARGV[base + 4]), ARGV[base + 5] == '1'
  local unit = period * 1000
  local state = redis.call('HMGET', KEYS[i], 'd', 't')
  local debt = tonumber(state[1]) or 0
  if debt < 0 then debt = 0 end
  local last = tonumber(state[2]) or now_ms
  if now_ms > last then
    local elapsed = (now_ms - last) * rate
    if elapsed >= debt then debt = 0 else debt = debt - elapsed end
  end
  local capacity = burst * unit
  local new_debt = debt + cost * unit
  local ok = new_debt <= capacity
  if not ok and enforced then all_ok = false end
  debts[i] = {debt, new_debt, ok, unit, capacity, rate}
end
for i = 1, n do
  local d = debts[i]
  local debt, new_debt, ok, unit, capacity, rate = d[1], d[2], d[3], d[4], d[5], d[6]
  local stored = debt
  if all_ok and budget_ok and ok then stored = new_debt end
  redis.call('HSET', KEYS[i], 'd', stored, 't', now_ms)
  redis.call('PEXPIRE', KEYS[i], math.ceil(stored / rate) + 1000)
  results[i] = {ok and 1 or 0, debt, new_debt}
end
if spend and all_ok and budget_ok then
  redis.call('INCRBY', KEYS[n + 1], spend)
  redis.call('EXPIRE', KEYS[n + 1], tonumber(ARGV[5]))
end
return {(all_ok and budget_ok) and 1 or 0, budget_ok and 1 or 0, results}
"""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _outcome(rate: gcra.Rate, cost: int, ok: bool, debt: int, new_debt: int) -> gcra.Outcome:
    unit = rate.period * 1000
    capacity = rate.burst * unit
    scale = rate.rate * 1000  # scaled ms per second
    if ok:
        return gcra.Outcome(True, 0, (capacity - new_debt) // unit, 0, _ceil_div(new_debt, scale))
    remaining = (capacity - debt) // unit
    if cost > rate.burst:
        return gcra.Outcome(False, 0, remaining, -1, _ceil_div(debt, scale))
    return gcra.Outcome(False, 0, remaining, _ceil_div(new_debt - capacity, scale), _ceil_div(debt, scale))


RESPONSE_TTL_S = 30 * 86_400   # OpenAI keeps a stored response for 30 days


class CircuitBreaker:
    """Open after `threshold` consecutive failures; half-open after `cooldown` s."""

    def __init__(self, threshold: int = 3, cooldown: float = 5.0, clock=time.monotonic):
        self.threshold, self.cooldown, self.clock = threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None

    def allow(self) -> bool:
        return self.opened_at is None or self.clock() - self.opened_at >= self.cooldown

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock()


class RedisStore:
    name = "redis"

    def __init__(self, client: redis.Redis, *, prefix: str = "hir:", fallback: MemoryStore | None = None,
                 breaker: CircuitBreaker | None = None, use_client_clock: bool = False, on_degraded=None):
        self.client = client
        self.prefix = prefix
        self.fallback = fallback if fallback is not None else MemoryStore()
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.script = client.register_script(SCRIPT)
        self.use_client_clock = use_client_clock  # tests inject time; production uses Redis TIME
        self.on_degraded = on_degraded or (lambda reason: None)
        self.degraded = 0

    @classmethod
    def from_url(cls, url: str, deadline_ms: int = 25, **kw) -> "RedisStore":
        # A deadline of tens of ms, never the client library's default (none).
        client = redis.Redis.from_url(url, socket_timeout=deadline_ms / 1000,
                                      socket_connect_timeout=deadline_ms / 1000, retry_on_timeout=False)
        return cls(client, **kw)

    def admit(self, checks: list[Check], now_ns: int, spend: Spend | None = None):
        if not self.breaker.allow():
            return self._degrade("circuit open", checks, now_ns, spend)
        keys = [self.prefix + c.key for c in checks]
        args = [str(now_ns // 1_000_000) if self.use_client_clock else "", len(checks)]
        if spend is not None:
            keys.append(self.prefix + spend.key)
            args += [spend.micros, spend.cap, spend.ttl]
        else:
            args += ["", "", ""]
        for c in checks:
            args += [c.rate.rate, c.rate.period, c.rate.burst, c.cost, 1 if c.enforced else 0]
        try:
            all_ok, budget_ok, results = self.script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            self.breaker.failure()
            return self._degrade(type(exc).__name__, checks, now_ns, spend)
        self.breaker.success()
        outcomes = [_outcome(c.rate, c.cost, bool(ok), int(debt), int(new_debt))
                    for c, (ok, debt, new_debt) in zip(checks, results)]
        return bool(all_ok), outcomes, bool(budget_ok)

    def _degrade(self, reason: str, checks, now_ns, spend):
        self.degraded += 1
        self.on_degraded(reason)
        log.warning("limit store degraded to in-process (%s)", reason)
        return self.fallback.admit(checks, now_ns, spend)

    def remember_response(self, response_id: str, endpoint: str, tenant: str) -> None:
        """Which endpoint served a Responses answer, and for which tenant ("" for a
        client without a key), for every host: a follow-up or a retrieve may reach
        another one (kept as long as OpenAI keeps an answer)."""
        if not self.breaker.allow():
            return
        try:
            self.client.set(f"{self.prefix}resp:{response_id}", f"{endpoint}\n{tenant}",
                            ex=RESPONSE_TTL_S)
        except (redis.RedisError, OSError):
            self.breaker.failure()
            return
        self.breaker.success()

    def response_holder(self, response_id: str) -> tuple[str, str | None] | None:
        """(endpoint, tenant) of a Responses answer; the tenant is None for an answer
        filed before owners were recorded."""
        if not self.breaker.allow():
            return None
        try:
            value = self.client.get(f"{self.prefix}resp:{response_id}")
        except (redis.RedisError, OSError):
            self.breaker.failure()
            return None
        self.breaker.success()
        if not value:
            return None
        endpoint, newline, tenant = value.decode().partition("\n")
        return endpoint, (tenant if newline else None)

    def refund_spend(self, key: str, micros: int) -> None:
        try:
            self.client.decrby(self.prefix + key, micros)
        except (redis.RedisError, OSError):
            self.fallback.refund_spend(key, micros)

    def refund(self, key: str, rate: gcra.Rate, units: int, now_ns: int) -> None:
        try:
            k = self.prefix + key
            self.client.hincrby(k, "d", -units * rate.period * 1000)
        except (redis.RedisError, OSError):
            self.fallback.refund(key, rate, units, now_ns)
