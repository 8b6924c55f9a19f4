"""The tier a policy routes a prompt to (`python -m sidecar eval --policy FILE`):
the model's tier after the policy's rules (thresholds, token and prompt rules,
pins), so routing quality is measured where users see it, not only the model's
own tier. Decided by the server's own code path (sidecar.tools.golden), as a
chat request with the prompt as one user message and model "auto"."""

from __future__ import annotations

from sidecar.tools import golden


class RoutedTier:
    """Looks like a complexity model to sidecar.complexity.evaluation: assess()
    gives (the model's score, the rank of the tier the policy chose); a refused
    request counts as rank 0, which every metric scores as wrong."""

    def __init__(self, policy, model):
        self.policy, self.model = policy, model
        self.ranks = {tier.name: tier.rank for tier in policy.tiers}

    def assess(self, text: str, messages: int = 1) -> tuple[float, int]:
        score, _ = self.model.assess(text, messages)
        outcome = golden.outcome(self.policy, {"body": {
            "model": "auto", "messages": [{"role": "user", "content": text}]}})
        return score, self.ranks.get(outcome.get("tier"), 0)
