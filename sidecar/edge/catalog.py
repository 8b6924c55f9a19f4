"""`GET /v1/models` and `GET /v1/models/{id}`: the names a client may send as
`model`, in OpenAI's list shape. The router's own names are `auto` (the rules
decide), each tier (pinned by the demo policy's rules) and each alias; a tenant
limited to some tiers sees only those (and the aliases that lead to them).
Built once per policy and tenant; a request costs a dict lookup.
"""

from __future__ import annotations

import orjson

from sidecar.denials import Denied

OWNER = "hybrid-inference-router"


def _entries(policy, allowed) -> list[dict]:
    created = policy.created
    out = [{"id": "auto", "object": "model", "created": created, "owned_by": OWNER,
            "description": "the router chooses the tier"}]
    for tier in sorted(policy.tiers, key=lambda t: t.rank):
        if allowed is None or tier.name in allowed:
            out.append({"id": tier.name, "object": "model", "created": created, "owned_by": OWNER,
                        "description": tier.description or f"tier {tier.rank}"})
    for name, tier, endpoint in policy.models.aliases:
        target = tier or endpoint.tier
        if allowed is None or target.name in allowed:
            out.append({"id": name, "object": "model", "created": created, "owned_by": OWNER,
                        "description": f"alias of {endpoint.name if endpoint else tier.name}"})
    return out


class Catalog:
    __slots__ = ("version", "bodies")

    def __init__(self):
        self.version = ""
        self.bodies: dict = {}   # (allowed tiers, model id or "") -> JSON bytes

    def answer(self, policy, tenant, model_id: str) -> bytes:
        if self.version != policy.version:
            self.version, self.bodies = policy.version, {}
        allowed = tenant.tiers if tenant is not None else None
        key = (allowed, model_id)
        body = self.bodies.get(key)
        if body is None:
            entries = _entries(policy, allowed)
            if not model_id:
                body = orjson.dumps({"object": "list", "data": entries})
            else:
                found = next((e for e in entries if e["id"] == model_id), None)
                if found is None:
                    raise Denied("model_not_found", f"the model '{model_id}' does not exist; "
                                 "GET /v1/models lists the models this router serves")
                body = orjson.dumps(found)
            if len(self.bodies) < 1024:  # ids a client invents are not kept
                self.bodies[key] = body
        return body
