"""`explain`: how the policy routes one request, rule by rule."""

from __future__ import annotations

from multidict import CIMultiDict

from sidecar.complexity import complexity
from sidecar.edge import constitution, features
from sidecar.denials import Denied
from sidecar.policy.compiled import DenyAction, Policy, RouteAction


def explain(policy: Policy, raw: bytes, *, path: str = "/v1/chat/completions",
            headers: dict | None = None) -> str:
    hdrs = CIMultiDict({"Content-Type": "application/json",
                        constitution.HEADER: policy.constitutional_hash})
    hdrs.update(headers or {})
    lines = [f"policy {policy.source} version {policy.version}"]
    try:
        body = features.parse_body(raw, hdrs.get("Content-Type", ""))
        feats = features.extract(features.Features("POST", path, hdrs), body)
    except Denied as denied:
        return "\n".join(lines + [f"denied before routing: {denied.status} {denied.reason}: "
                                  f"{denied.message}"])
    lines.append("features:")
    for name in ("model", "tokens", "messages", "system_prompt", "code", "math", "tools",
                 "stream", "max_tokens", "complexity", "tier_hint"):
        value = getattr(feats, name)
        lines.append(f"  {name:14} {value:.3f}" if isinstance(value, float)
                     else f"  {name:14} {value!r}")
    model = complexity.default_model()
    moved = ", ".join(f"{name} {value:+.2f}" for name, value in model.contributions(feats.text, feats.messages))
    lines.append(f"  complexity moved most by: {moved}")
    lines.append("rules (first match wins):")
    chosen = None
    for rule in (*policy.rules, policy.default):
        matched = rule.when.matches(feats)
        lines.append(f"  {'MATCH' if matched else 'no   '} {rule.name}")
        for text, ok in rule.when.explain(feats):
            lines.append(f"          {'✓' if ok else '✗'} {text}")
        if matched:
            chosen = rule
            break
    if isinstance(chosen.action, DenyAction):
        a = chosen.action
        lines.append(f"decision: deny {a.status} {a.code}: {a.message}")
        return "\n".join(lines)
    try:
        route = policy.route(feats)
    except Denied as denied:  # model names, the API or the context window
        lines.append(f"decision: deny {denied.status} {denied.reason}: {denied.message}")
        return "\n".join(lines)
    e = route.endpoint
    lines.append(f"decision: tier {e.tier.name} (rank {e.tier.rank}), endpoint {e.name} "
                 f"(model {e.model}) by rule {route.rule}")
    action = chosen.action
    wanted = (action.tier or action.endpoint.tier) if isinstance(action, RouteAction) else e.tier
    if route.rule == chosen.name and e.tier != wanted:
        lines.append(f"  (tier {wanted.name} has no endpoint for {feats.api} that is up and holds "
                     f"{feats.tokens + feats.max_tokens} tokens: the nearest tier that does)")
    lines.append("fallback: " + (" -> ".join(f.name for f in route.fallbacks) or "none"))
    return "\n".join(lines)
