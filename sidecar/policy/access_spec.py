"""Who may call and how much (`previous_hashes`, `clients`, `limits`) in the
policy → compiled objects for sidecar.access.clients and sidecar.access.limits."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone

from sidecar.access.clients import NO_CLIENTS, Clients, Tenant
from sidecar.access.gcra import Rate
from sidecar.access.limits import KEY_PARTS, Limit
from sidecar.policy.apis import CLIENT_RUN_TOOLS, STANDARD_SERVICE_TIERS, ALLOWED_NAME, tool_family
from sidecar.policy.strict_yaml import join, mapping, show, typed

HASH = re.compile(r"^[0-9a-f]{16}$")


def previous_hashes(ctx, value, active, path="previous_hashes"):
    """[{hash, until}] → ((hash, epoch seconds), ...): old hashes accepted until then."""
    if not isinstance(value, list):
        raise ctx.error(path, f"expected a list of {{hash, until}}, got {show(value)}")
    out = []
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = mapping(ctx, spec, where, required=("hash", "until"))
        old = spec["hash"]
        if not isinstance(old, str) or not HASH.match(old):
            raise ctx.error(join(where, "hash"), f"expected 16 lowercase hex digits, got {show(old)}")
        if old == active:
            raise ctx.error(join(where, "hash"), "is the active constitutional_hash")
        until = spec["until"]
        if isinstance(until, str):
            try:
                until = datetime.fromisoformat(until.replace("Z", "+00:00"))
            except ValueError:
                until = None
        if isinstance(until, datetime):
            if until.tzinfo is None:  # an unquoted YAML timestamp without zone is UTC
                until = until.replace(tzinfo=timezone.utc)
            out.append((old, until.timestamp()))
            continue
        raise ctx.error(join(where, "until"),
                        f'expected a UTC time like "2026-12-31T00:00:00Z", got {show(spec["until"])}')
    return tuple(out)


DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
DURATION = re.compile(r"^(\d+)\s*(s|m|h|d)$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _tier_list(ctx, value, tiers, path):
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise ctx.error(path, f"expected a non-empty list of tier names, got {show(value)}")
    for t in value:
        if t not in tiers:
            raise ctx.error(path, f"unknown tier {show(t)}; defined tiers: {', '.join(tiers)}")
    return frozenset(value)


# The allow lists of what a provider bills beside the tokens (sidecar.edge.unpriced), in
# the policy and per tenant: setting -> (what a list holds, how a name is read, the
# names always allowed, and why listing one is an error).
UNPRICED_SETTINGS = {
    "provider_tools": ("tool types like web_search, code_execution, file_search, mcp", tool_family,
                       CLIENT_RUN_TOOLS, "is a tool the client runs; those are always allowed"),
    "service_tier": ("processing tiers like priority", str, STANDARD_SERVICE_TIERS,
                     "is billed at the standard price or below; it is always allowed"),
}


def unpriced_allowed(ctx, setting: str, value, path) -> frozenset:
    """One UNPRICED_SETTINGS list → the names it allows, as the edge reads them."""
    holds, read, always, why = UNPRICED_SETTINGS[setting]
    if not isinstance(value, list) or not all(isinstance(t, str) and ALLOWED_NAME.match(t) for t in value):
        raise ctx.error(path, f"expected a list of {holds}; got {show(value)}")
    for name in value:
        if read(name) in always:
            raise ctx.error(path, f"{show(name)} {why}")
    return frozenset(map(read, value))


def _choice(ctx, value, options, path):
    if value not in options:
        raise ctx.error(path, f"expected one of {', '.join(options)}, got {show(value)}")
    return value


def clients(ctx, value, tiers, path="clients"):
    if value is None:
        return NO_CLIENTS
    spec = mapping(ctx, value, path, optional=("require_key", "trusted_proxies", "tenants", "ipv6_prefix"))
    require = typed(ctx, spec.get("require_key", False), bool, "true or false", join(path, "require_key"))
    trusted = []
    for i, net in enumerate(spec.get("trusted_proxies") or []):
        try:
            trusted.append(ipaddress.ip_network(str(net), strict=False))
        except ValueError:
            raise ctx.error(f"{path}.trusted_proxies[{i}]",
                            f"expected an address or CIDR range, got {show(net)}") from None
    by_digest = {}
    tenants = spec.get("tenants") or {}
    if not isinstance(tenants, dict):
        raise ctx.error(join(path, "tenants"), f"expected a mapping of tenant name to tenant, got {show(tenants)}")
    for name, t in tenants.items():
        where = f"{path}.tenants.{name}"
        t = mapping(ctx, t, where, required=("keys",), optional=(
            "tiers", "above_allowed", "budget_usd_per_day", "when_budget_spent", *UNPRICED_SETTINGS))
        allowed = _tier_list(ctx, t["tiers"], tiers, join(where, "tiers")) if "tiers" in t else None
        budget = t.get("budget_usd_per_day", 0)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
            raise ctx.error(join(where, "budget_usd_per_day"), f"expected USD as a number, got {show(budget)}")
        tenant = Tenant(str(name), allowed,
                        _choice(ctx, t.get("above_allowed", "deny"), ("deny", "downgrade"), join(where, "above_allowed")),
                        float(budget),
                        _choice(ctx, t.get("when_budget_spent", "deny"), ("deny", "downgrade"),
                                join(where, "when_budget_spent")),
                        **{s: unpriced_allowed(ctx, s, t[s], join(where, s)) if s in t else None
                           for s in UNPRICED_SETTINGS})
        keys = t["keys"]
        if not isinstance(keys, list) or not keys:
            raise ctx.error(join(where, "keys"), "expected a non-empty list of key digests")
        for i, d in enumerate(keys):
            if not isinstance(d, str) or not DIGEST.match(d):
                raise ctx.error(f"{where}.keys[{i}]", "expected a key digest like sha256:<64 hex digits> "
                                "(make one with `python -m sidecar key-digest`), never a key")
            if d in by_digest:
                raise ctx.error(f"{where}.keys[{i}]", f"this key digest already belongs to tenant "
                                f"'{by_digest[d][1].name}'")
            by_digest[d] = (d, tenant)
    prefix = spec.get("ipv6_prefix", 64)
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 32 <= prefix <= 128:
        raise ctx.error(join(path, "ipv6_prefix"), "expected the length of the IPv6 network limits "
                        f"count as one client, 32 to 128 (64: a host's own /64), got {show(prefix)}")
    return Clients(require, tuple(trusted), by_digest, prefix)


def duration(ctx, value, path) -> int:
    """Seconds, from a number or a string like "30s", "1m", "1h" or "1d"."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if match and int(match.group(1)) > 0:
        return int(match.group(1)) * UNITS[match.group(2)]
    raise ctx.error(path, f'expected a duration like 60, "30s", "1m", "1h" or "1d", got {show(value)}')


def limits(ctx, value, tiers, path="limits"):
    if not isinstance(value, list):
        raise ctx.error(path, f"expected a list of limits, got {show(value)}")
    out, names = [], set()
    for i, spec in enumerate(value):
        where = f"{path}[{i}]"
        spec = mapping(ctx, spec, where, required=("name", "per"),
                        optional=("requests", "tokens", "shadow", "tiers"))
        name = typed(ctx, spec["name"], str, "a string", join(where, "name"))
        if not re.match(r"^[a-z][a-z0-9_-]{0,62}$", name):
            raise ctx.error(join(where, "name"), f"limit names are lowercase letters, digits, '-' and '_', got {show(name)}")
        if name in names:
            raise ctx.error(join(where, "name"), f"duplicate limit name '{name}'")
        names.add(name)
        parts = spec["per"]
        if isinstance(parts, str):
            parts = [parts]
        if not isinstance(parts, list) or not parts or any(p not in KEY_PARTS for p in parts):
            raise ctx.error(join(where, "per"), f"expected a list of: {', '.join(KEY_PARTS)}; got {show(spec['per'])}")
        kinds = [k for k in ("requests", "tokens") if k in spec]
        if len(kinds) != 1:
            raise ctx.error(where, "expected exactly one of: requests, tokens")
        kind = kinds[0]
        r = mapping(ctx, spec[kind], join(where, kind), required=("rate", "per"), optional=("burst",))
        rate = typed(ctx, r["rate"], int, "a whole number of units", join(where, f"{kind}.rate"))
        burst = typed(ctx, r.get("burst", rate), int, "a whole number of units", join(where, f"{kind}.burst"))
        if rate < 1 or burst < 1:
            raise ctx.error(join(where, kind), "rate and burst must be at least 1")
        period = duration(ctx, r["per"], join(where, f"{kind}.per"))
        shadow = typed(ctx, spec.get("shadow", False), bool, "true or false", join(where, "shadow"))
        scope = _tier_list(ctx, spec["tiers"], tiers, join(where, "tiers")) if "tiers" in spec else None
        out.append(Limit(name, tuple(parts), kind, Rate(rate, period, burst), shadow, scope))
    return tuple(out)
