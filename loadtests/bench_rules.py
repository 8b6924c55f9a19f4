"""How per-request sidecar work scales with the policy: rules and endpoints.

    python loadtests/bench_rules.py

Times the whole in-process decision (parse, features, rules, endpoint pick,
answer) for generated policies with 10 and 200 rules (none matching, so every
rule is evaluated) and with 10 and 220 endpoints, and prints medians of several
rounds and the ratios. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from multidict import CIMultiDict  # noqa: E402

from sidecar.edge.app import decide  # noqa: E402
from sidecar.policy.spec import compile_policy  # noqa: E402

BODY = (b'{"model":"auto","messages":[{"role":"system","content":"You are terse."},'
        b'{"role":"user","content":"What is the capital of France? Answer in one word."}]}')
HEADERS = CIMultiDict({"Content-Type": "application/json", "X-Constitutional-Hash": "cdd01ef066bc6cf2"})
CONDITIONS = [
    '{tokens: "50000.."}', '{complexity: ">= 0.99"}', '{model: {prefix: [legacy-, old-]}}',
    '{all: [{code: true}, {math: true}, {stream: true}]}', '{headers: {x-team: research}}',
    '{any: [{messages: "100.."}, {max_tokens: "100000.."}]}', '{model: {regex: "^ft:.*:org$"}}',
    '{not: {method: POST}}',
]


def policy_text(rules: int, endpoints_per_tier: int) -> bytes:
    lines = ["version: 1", "tiers:"] + [f"  t{i}: {{rank: {i}}}" for i in range(1, 6)] + ["endpoints:"]
    for tier in range(1, 6):
        for j in range(endpoints_per_tier):
            lines.append(f'  - {{name: e{tier}-{j}, tier: t{tier}, url: "http://127.0.0.1:{9000 + tier * 100 + j}/v1", '
                         f'model: m{tier}-{j}, weight: {1 + j % 3}}}')
    lines.append("rules:")
    for i in range(rules):
        lines.append(f"  - {{name: r{i}, when: {CONDITIONS[i % len(CONDITIONS)]}, tier: t{1 + i % 5}}}")
    lines.append("default: {tier: t1}")
    return "\n".join(lines).encode()


def time_decision(policy, n: int = 20000) -> float:
    start = time.perf_counter()
    for _ in range(n):
        decide(policy, "POST", "/v1/chat/completions", HEADERS, BODY, lua_mode=True)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    cases = {"10 rules": (10, 2), "200 rules": (200, 2), "10 endpoints": (10, 2), "220 endpoints": (10, 44)}
    policies = {name: compile_policy(policy_text(r, e), f"{name}.yaml", {}) for name, (r, e) in cases.items()}
    samples = {name: [] for name in cases}
    for _ in range(7):
        for name, policy in policies.items():
            samples[name].append(time_decision(policy))
    med = {name: statistics.median(v) for name, v in samples.items()}
    for name, us in med.items():
        print(f"{name:14} {us:7.2f} µs per decision (median of 7 rounds)")
    print(f"200 rules / 10 rules:        {med['200 rules'] / med['10 rules']:.2f}x")
    print(f"220 endpoints / 10 endpoints: {med['220 endpoints'] / med['10 endpoints']:.2f}x")


if __name__ == "__main__":
    main()
