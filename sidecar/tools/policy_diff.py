"""`python -m sidecar policy diff A B`: what routes differently, in words.

Two parts: what changed in the policy's own terms (tiers, endpoints, rules,
default, limits, model names), and what that does to requests: every golden
case of either policy is decided by both, and the cases whose tier, endpoint or
denial differ are listed."""

from __future__ import annotations

from pathlib import Path

import yaml

from sidecar.policy.spec import load_policy
from sidecar.tools import golden


def _named(items, key="name") -> dict:
    return {item.get(key): item for item in items or [] if isinstance(item, dict)}


def _changes(what: str, old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    parts = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return [f"{what}: " + "; ".join(parts)] if parts else []


def _members(kind: str, old: dict, new: dict, added, removed) -> list[str]:
    """Sentences for the named members of one section: added, removed, changed."""
    out = []
    for name in sorted(set(old) | set(new), key=str):
        if name not in new:
            out.append(f"{kind} {name} removed {removed(old[name])}".rstrip())
        elif name not in old:
            out.append(f"{kind} {name} added {added(new[name])}".rstrip())
        else:
            out += _changes(f"{kind} {name}", old[name], new[name])
    return out


def structure(a: dict, b: dict) -> list[str]:
    out = []
    out += _members("tier", a.get("tiers") or {}, b.get("tiers") or {},
                    lambda t: f"(rank {t.get('rank')})", lambda t: "")
    out += _members("endpoint", _named(a.get("endpoints")), _named(b.get("endpoints")),
                    lambda e: f"to tier {e.get('tier')} ({e.get('model')} at {e.get('url')})",
                    lambda e: f"(was in tier {e.get('tier')})")
    rules_a, rules_b = _named(a.get("rules")), _named(b.get("rules"))
    order_a = [r for r in rules_a if r in rules_b]
    order_b = [r for r in rules_b if r in rules_a]
    for i, name in enumerate(rules_b):
        if name not in rules_a:
            out.append(f"rule {name} added at position {i + 1}: when {rules_b[name].get('when', 'always')}"
                       f" -> {_action(rules_b[name])}")
    for name in rules_a:
        if name not in rules_b:
            out.append(f"rule {name} removed (was: when {rules_a[name].get('when', 'always')} -> "
                       f"{_action(rules_a[name])})")
        elif rules_a[name] != rules_b[name]:
            ra, rb = rules_a[name], rules_b[name]
            if ra.get("when") != rb.get("when"):
                out.append(f"rule {name}: condition {ra.get('when')} -> {rb.get('when')}")
            if _action(ra) != _action(rb):
                out.append(f"rule {name}: now {_action(rb)} (was {_action(ra)})")
    if order_a != order_b:
        out.append(f"rules reordered: {', '.join(order_a)} -> {', '.join(order_b)}")
    if a.get("default") != b.get("default"):
        out.append(f"default: {_action(a.get('default') or {})} -> {_action(b.get('default') or {})}")
    out += _members("limit", _named(a.get("limits")), _named(b.get("limits")),
                    lambda rule: f"{rule}", lambda rule: "")
    for key in ("constitutional_hash", "models", "cors", "retry_budget", "clients", "failover",
                "pass_headers", "previous_hashes", "shadow", "response_cache"):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def _action(rule: dict) -> str:
    for key in ("tier", "endpoint", "split"):
        if key in rule:
            return f"{key} {rule[key]}"
    if "deny" in rule:
        return f"deny {rule['deny'].get('status')} {rule['deny'].get('code')}"
    return "?"


def behaviour(path_a, path_b, suites=()) -> list[str]:
    a, b = load_policy(path_a, {}), load_policy(path_b, {})
    cases, seen = [], set()
    for suite in (*map(Path, suites), golden.suite_for(path_a), golden.suite_for(path_b)):
        if suite.exists():
            for case in (yaml.safe_load(suite.read_text()) or {}).get("cases") or []:
                if case.get("name") not in seen:
                    seen.add(case.get("name"))
                    cases.append(case)
    out = []
    for case in cases:
        request = case.get("request") or {}
        got_a, got_b = golden.outcome(a, request), golden.outcome(b, request)
        if got_a.get("deny") != got_b.get("deny") or got_a.get("tier") != got_b.get("tier"):
            out.append(f"'{case.get('name')}': {_said(got_a)} -> {_said(got_b)}")
    return out


def _said(outcome: dict) -> str:
    if "deny" in outcome:
        return f"refused {outcome['deny']['status']} {outcome['deny']['code']}"
    return f"tier {outcome['tier']} ({outcome['endpoint']}, rule {outcome['rule']})"


def diff(path_a, path_b, suites=()) -> str:
    a = yaml.safe_load(open(path_a, "rb")) or {}
    b = yaml.safe_load(open(path_b, "rb")) or {}
    changed = structure(a, b)
    moved = behaviour(path_a, path_b, suites)
    lines = [f"{path_a} -> {path_b}"]
    lines += ["policy:"] + [f"  {c}" for c in changed] if changed else ["policy: no change"]
    if moved:
        lines += [f"requests that route differently ({len(moved)} of the golden cases):"]
        lines += [f"  {m}" for m in moved]
    else:
        lines.append("requests: every golden case routes the same")
    return "\n".join(lines)
