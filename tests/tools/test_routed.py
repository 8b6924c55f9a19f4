"""The tier a policy routes a prompt to, for `eval --policy` and
`train --holdout-kinds --policy`: the policy's rules decide, fed the evaluated
model's complexity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.policy.spec import load_policy
from sidecar.tools.routed import RoutedTier


class OneTierModel:
    """A model that rates every prompt `tier` (score in the middle of the tier)."""

    def __init__(self, tier):
        self.tier = tier

    def assess(self, text, messages=1):
        return (0.1, 0.3, 0.5, 0.7, 0.9)[self.tier - 1], self.tier


POLICY = Path(__file__).resolve().parents[2] / "policies" / "demo.yaml"


@pytest.mark.parametrize("model_tier,prompt,routed", [
    (1, "hi", 1),
    (3, "hi", 3),                                   # complexity >= 0.40: balanced
    (5, "hi", 5),                                   # >= 0.80: expert
    (1, "word " * 2500, 2),                         # tokens >= 2000: at least fast
    (2, "Prove it rigorously, step by step.", 3),   # the proof regex with complexity >= 0.25
])
def test_the_routed_tier_is_the_policys_choice_not_the_models(model_tier, prompt, routed):
    router = RoutedTier(load_policy(str(POLICY), {}), OneTierModel(model_tier))
    score, tier = router.assess(prompt)
    assert tier == routed and score == OneTierModel(model_tier).assess(prompt)[0]


def test_eval_reports_routed_tiers_for_a_policy(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"file": "f", "prompt": "hi", "tier": 1}\n{"file": "f", "prompt": "hello", "tier": 2}\n')
    run = subprocess.run([sys.executable, "-m", "sidecar", "eval", "--data", str(data), "--policy", str(POLICY)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    row = next(line for line in run.stdout.splitlines() if line.startswith("f "))
    assert row.split()[1] == "2"  # n


def test_train_refuses_a_policy_without_kinds_to_hold_out(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"file": "f", "prompt": "hi", "tier": 1}\n')
    run = subprocess.run([sys.executable, "-m", "sidecar", "train", "--data", str(data), "--policy", str(POLICY)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--holdout-kinds" in run.stderr
