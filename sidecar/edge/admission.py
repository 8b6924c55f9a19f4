"""Admission: may this client send this routed request now? Tenant tier rules,
daily budget, then rate and token limits, in that order; each either lets the
request through (possibly downgraded to a cheaper tier) or raises Denied."""

from __future__ import annotations

from typing import NamedTuple

from sidecar.access import budgets, clients, limits
from sidecar.access.clients import Client
from sidecar.denials import Denied
from sidecar.policy.compiled import Policy, Route


class Admitted(NamedTuple):
    route: Route
    admission: limits.Admission
    budget_micros: int
    spend_key: str = ""


def _allowed_below(policy: Policy, allowed, rank: int):
    """The highest allowed tier at or below `rank`, else the lowest allowed one."""
    tiers = sorted((t for t in policy.tiers if t.name in allowed), key=lambda t: t.rank)
    below = [t for t in tiers if t.rank <= rank]
    return below[-1] if below else tiers[0]


def admit(policy: Policy, client: Client, route: Route, feats, store, now_ns: int) -> Admitted:
    tenant = client.tenant
    allowed = tenant.tiers if tenant is not None else None
    if allowed is not None and route.endpoint.tier.name not in allowed:
        if tenant.above_allowed == "deny":
            raise Denied("tier_not_allowed", f"tenant '{tenant.name}' may not use tier "
                         f"'{route.endpoint.tier.name}'", status=403)
        tier = _allowed_below(policy, allowed, route.endpoint.tier.rank)
        route = policy.route_to_tier(tier, f"{route.rule}+tier-downgrade", feats, allowed)
    elif allowed is not None:
        route = route._replace(fallbacks=tuple(e for e in route.fallbacks if e.tier.name in allowed))

    admitted = _checked(policy, client, route, feats, store, now_ns)
    if admitted is not None:
        return admitted
    # Only the budget refused.
    if tenant.when_budget_spent == "downgrade":
        cheapest = min((t for t in policy.tiers if allowed is None or t.name in allowed),
                       key=lambda t: t.rank)
        route = policy.route_to_tier(cheapest, f"{route.rule}+budget-downgrade", feats, allowed)
        admitted = _checked(policy, client, route, feats, store, now_ns)
        if admitted is not None:
            return admitted
    raise Denied("budget_exceeded", f"tenant '{tenant.name}' has spent its daily budget of "
                 f"${tenant.budget_usd_per_day:g}; it renews at 00:00 UTC", status=429,
                 headers=(("Retry-After", str(budgets.seconds_to_midnight(now_ns))),), limit="budget")


def _checked(policy, client, route, feats, store, now_ns) -> Admitted | None:
    """Limits and budget for `route` in one store call; None if only the budget refused."""
    # Every choice may run to max_tokens: n = 8 can cost eight answers.
    completion = (feats.max_tokens or budgets.RESERVE_COMPLETION_TOKENS) * feats.choices
    tenant = client.tenant
    spend = None
    if tenant is not None and tenant.budget_usd_per_day > 0:
        spend = limits.Spend(budgets.spend_key(tenant.name, now_ns),
                             budgets.estimate_micros(route.endpoint, feats.tokens, completion),
                             round(tenant.budget_usd_per_day * 1_000_000), 2 * budgets.DAY)
    address = clients.limited_address(client.ip, policy.clients.ipv6_prefix) if client.ip else "-"
    values = {"client": client.id_at(address),
              "tenant": tenant.name if tenant else "-", "key": client.key_id or "-", "ip": address,
              "tier": route.endpoint.tier.name, "endpoint": route.endpoint.name}
    admission = limits.admit(store, policy.limits, values, route.endpoint.tier.name,
                             feats.tokens + completion, now_ns, spend)
    if admission is None:
        return None
    return Admitted(route, admission, spend.micros if spend else 0, spend.key if spend else "")
