"""The tier a policy routes a prompt to (`python -m sidecar eval --policy FILE`):
the model's tier after the policy's rules (thresholds, token and prompt rules),
so routing quality is measured where users see it, not only the model's own
tier. Each prompt is read as the server reads a chat request with it as one
user message and model "auto" (sidecar.edge.features), its complexity is the
evaluated model's, and the policy's own route() picks the tier."""

from __future__ import annotations

import orjson
from multidict import CIMultiDict

from sidecar.denials import Denied
from sidecar.edge import features
from sidecar.policy.spec import load_policy

PATH = "/v1/chat/completions"
HEADERS = CIMultiDict({"Content-Type": "application/json"})


class RoutedTier:
    """Looks like a complexity model to sidecar.complexity.evaluation: assess()
    gives (the model's score, the rank of the tier the policy chose); a refused
    request counts as rank 0, which every metric scores as wrong."""

    def __init__(self, policy, model):
        self.policy, self.model = policy, model

    def assess(self, text: str, messages: int = 1) -> tuple[float, int]:
        score, tier = self.model.assess(text, messages)
        body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]})
        feats = features.Features("POST", PATH, HEADERS)
        try:
            features.extract(feats, features.parse_body(body, "application/json"))
            feats.complexity, feats.tier_hint = score, tier
            route = self.policy.route(feats)
        except Denied:
            return score, 0
        return score, route.endpoint.tier.rank


def routed_by(policy_path: str):
    """model → RoutedTier for the policy file (one load for every model)."""
    policy = load_policy(policy_path, {})
    return lambda model: RoutedTier(policy, model)
