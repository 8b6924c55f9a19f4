"""What-if replay: `python -m sidecar replay --policy CANDIDATE [--current POLICY] FILE`.

Runs recorded requests through the current and the candidate policy and reports
how many move between tiers, what that does to cost, which would now be refused,
and examples of each move. FILE is JSON lines of either kind:

- the router's access log (RUN_DIR/access.log): each line carries the decision's
  features (`features`: API, tokens, messages, max_tokens, complexity, tier hint,
  flags, model) and the provider's usage; the prompt text and headers are not
  logged, so `prompt:` and `headers:` conditions see nothing (the report says
  when a policy has such rules). Cost uses the recorded usage on each policy's
  endpoint prices.
- request bodies: `{"path": ..., "headers": {...}, "body": {...}}` or a bare body
  (chat completions). Decided exactly as the server would (hash, model names,
  windows); cost is estimated (prompt estimate + max_tokens, 256 if unset).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from sidecar.access.budgets import cost_usd
from sidecar.denials import Denied
from sidecar.edge.features import Features
from sidecar.policy.compiled import Health
from sidecar.policy.spec import load_policy
from sidecar.tools import golden

DEFAULT_COMPLETION = 256
FLAGS = {"s": "system_prompt", "c": "code", "m": "math", "t": "tools", "r": "stream"}


def parse_features(text: str) -> Features | None:
    """The decision's X-Route-Features as logged: api;tokens;messages;max_tokens;
    complexity;tier_hint;flags;model (sidecar.edge.decision.features_header)."""
    parts = text.split(";", 7)
    if len(parts) != 8:
        return None
    api, tokens, messages, max_tokens, score, hint, flags, model = parts
    path = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
            "embeddings": "/v1/embeddings", "responses": "/v1/responses",
            "messages": "/v1/messages"}.get(api)
    if path is None:
        return None
    f = Features("POST", path, {})
    try:
        f.tokens, f.messages, f.max_tokens = int(tokens), int(messages), int(max_tokens)
        f.complexity, f.tier_hint = float(score), int(hint)
    except ValueError:
        return None
    f.model = model
    for letter, name in FLAGS.items():
        setattr(f, name, letter in flags)
    return f


def _route(policy, feats):
    policy.health = Health()
    try:
        route = policy.route(feats)
    except Denied as denied:
        return {"deny": {"status": denied.status, "code": denied.reason}}
    e = route.endpoint
    return {"tier": e.tier.name, "endpoint": e.name, "rule": route.rule}


def _cost(policy, outcome, prompt: int, completion: int) -> float:
    if "deny" in outcome:
        return 0.0
    e = policy.endpoint_by_name[outcome["endpoint"]]
    return cost_usd(e, prompt, completion)


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def records(path: str):
    """(label, kind, payload) per line: kind "log" with Features + usage, or "body"."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if not isinstance(row, dict):
                continue
            if "features" in row:
                feats = parse_features(row.get("features") or "")
                if feats is not None:
                    yield row.get("request_id") or f"line {n}", "log", (feats, row)
            elif "body" in row or "messages" in row or "input" in row or "prompt" in row:
                request = row if "body" in row else {"body": row}
                yield f"line {n}", "body", request


def replay(current_path: str, candidate_path: str, log_path: str, examples: int = 3) -> dict:
    current, candidate = load_policy(current_path, {}), load_policy(candidate_path, {})
    moves, denials, samples = Counter(), Counter(), defaultdict(list)
    cost_now = cost_then = 0.0
    n = blind = 0
    for label, kind, payload in records(log_path):
        if kind == "log":
            feats, row = payload
            a, b = _route(current, feats), _route(candidate, feats)
            prompt = _int(row.get("prompt_tokens"))
            completion = _int(row.get("completion_tokens"))
            if prompt is None or completion is None:
                prompt, completion = feats.tokens, feats.max_tokens or DEFAULT_COMPLETION
            text = f"{feats.api}, {feats.tokens} tokens, complexity {feats.complexity:.2f}"
        else:
            a, b = golden.outcome(current, payload), golden.outcome(candidate, payload)
            body = payload.get("body") or {}
            text = json.dumps(body)[:80]
            prompt = len(json.dumps(body)) // 4
            asked = body.get("max_tokens") if isinstance(body, dict) else None
            completion = asked if isinstance(asked, int) and asked > 0 else DEFAULT_COMPLETION
        n += 1
        blind += kind == "log"
        cost_now += _cost(current, a, prompt, completion)
        cost_then += _cost(candidate, b, prompt, completion)
        before = a.get("tier") or f"refused {a['deny']['code']}"
        after = b.get("tier") or f"refused {b['deny']['code']}"
        if "deny" in b and "deny" not in a:
            denials[b["deny"]["code"]] += 1
        if before != after:
            moves[(before, after)] += 1
            if len(samples[(before, after)]) < examples:
                samples[(before, after)].append(f"{label}: {text}")
    unseen = [name for name, doc in ((current_path, current), (candidate_path, candidate))
              if _reads_text(name)]
    return {"requests": n, "moved": sum(moves.values()),
            "moves": [{"from": f, "to": t, "count": c, "examples": samples[(f, t)]}
                      for (f, t), c in moves.most_common()],
            "new_denials": dict(denials), "cost_usd": {"current": cost_now, "candidate": cost_then},
            "from_log": blind, "unseen_conditions_in": unseen if blind else []}


def _reads_text(path: str) -> bool:
    """Whether a policy's rules look at prompt text or headers (not in the log)."""
    import yaml
    doc = yaml.safe_load(open(path, "rb")) or {}
    text = json.dumps(doc.get("rules") or [])
    return '"prompt"' in text or '"headers"' in text


def report(result: dict) -> str:
    n, moved = result["requests"], result["moved"]
    cost = result["cost_usd"]
    lines = [f"{n} requests replayed; {moved} ({100 * moved / n if n else 0:.1f}%) route to another tier"]
    for move in result["moves"]:
        lines.append(f"  {move['from']} -> {move['to']}: {move['count']}")
        lines += [f"      e.g. {e}" for e in move["examples"]]
    delta = cost["candidate"] - cost["current"]
    pct = f" ({100 * delta / cost['current']:+.1f}%)" if cost["current"] else ""
    lines.append(f"cost: ${cost['current']:.6f} now, ${cost['candidate']:.6f} with the candidate: "
                 f"{'+' if delta >= 0 else '-'}${abs(delta):.6f}{pct}")
    if result["new_denials"]:
        lines.append("newly refused: " + ", ".join(f"{c} {k}" for k, c in result["new_denials"].items()))
    else:
        lines.append("newly refused: none")
    if result["unseen_conditions_in"]:
        lines.append("note: the access log keeps no prompt text or headers; the `prompt:`/`headers:` "
                     f"rules of {', '.join(result['unseen_conditions_in'])} saw none")
    return "\n".join(lines)
