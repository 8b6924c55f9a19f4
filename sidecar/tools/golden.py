"""Golden policy suites: request → expected route or denial, next to the policy.

    policies/tests/demo.yaml:
      cases:
        - name: a greeting stays on the cheapest tier
          request: {body: {model: auto, messages: [{role: user, content: hi}]}}
          expect: {tier: nano}
        - name: legacy models are refused
          request: {body: {model: legacy-1, messages: [...]}}
          expect: {deny: {status: 403, code: model_not_allowed}}

`request` takes `path` (default /v1/chat/completions), `method` (POST), `headers`
(the active constitutional hash and a JSON content type are added unless given)
and `body` (an object, or `raw` bytes as a string). `expect` takes any of
`tier`, `endpoint`, `rule`, or `deny: {status, code}`.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import yaml
from multidict import CIMultiDict

from sidecar.edge import app
from sidecar.denials import Denied
from sidecar.policy.compiled import Health, Policy


def suite_for(policy_path) -> Path:
    policy_path = Path(policy_path)
    return policy_path.parent / "tests" / policy_path.name


def request_parts(policy: Policy, request: dict):
    headers = CIMultiDict({"Content-Type": "application/json",
                           "X-Constitutional-Hash": policy.constitutional_hash})
    for name, value in (request.get("headers") or {}).items():
        if value is None:
            headers.popall(name, None)
        else:
            headers[name] = str(value)
    if "raw" in request:
        raw = request["raw"].encode()
    else:
        raw = orjson.dumps(request.get("body", {}))
    return (request.get("method", "POST"), request.get("path", "/v1/chat/completions"),
            headers, raw)


def outcome(policy: Policy, request: dict) -> dict:
    method, path, headers, raw = request_parts(policy, request)
    try:
        route, _, _ = app.decide(policy, method, path, headers, raw)
    except Denied as denied:
        return {"deny": {"status": denied.status, "code": denied.reason}}
    return {"tier": route.endpoint.tier.name, "endpoint": route.endpoint.name, "rule": route.rule}


def run_suite(policy: Policy, suite_path: Path) -> list[str]:
    """Every failing case as a message; an empty list means the suite passed."""
    doc = yaml.safe_load(suite_path.read_text())
    cases = (doc or {}).get("cases")
    if not isinstance(cases, list) or not cases:
        return [f"{suite_path.name}: expected a non-empty 'cases' list"]
    failures = []
    for i, case in enumerate(cases):
        name = case.get("name", f"cases[{i}]")
        policy.health = Health()  # each case sees every endpoint up
        got = outcome(policy, case.get("request") or {})
        expect = case.get("expect") or {}
        if not expect:
            failures.append(f"{suite_path.name}: {name}: no 'expect' given")
            continue
        for key, want in expect.items():
            if got.get(key) != want:
                failures.append(f"{suite_path.name}: {name}: expected {key} {want!r}, "
                                f"got {got.get(key)!r} ({got})")
    return failures
