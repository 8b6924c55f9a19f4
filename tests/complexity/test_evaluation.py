"""Evaluation maths: per-file accuracy, confusion, cost/quality curve and APGR."""

from __future__ import annotations

import random

import pytest

from sidecar.complexity import evaluation


def test_tier_metrics():
    m = evaluation.tier_metrics([(1, 1), (2, 3), (5, 2), (3, 3)])
    assert (m["exact"], m["within_one"], m["mae"], m["n"]) == (0.5, 0.75, 1.0, 4)


def test_confusion_counts_true_rows_predicted_columns():
    matrix = evaluation.confusion([(1, 2), (1, 2), (5, 5)])
    assert matrix[0][1] == 2 and matrix[4][4] == 1 and sum(map(sum, matrix)) == 3


LABELS = ["both_correct"] * 60 + ["strong_only"] * 30 + ["both_wrong"] * 10


def test_a_router_that_knows_the_answer_recovers_almost_everything():
    scored = [(1.0 if label == "strong_only" else 0.0, label) for label in LABELS]
    curve = evaluation.cost_quality_curve(scored)
    assert curve[0] == (0.0, 0.6) and curve[-1] == (1.0, 0.9)
    assert evaluation.apgr(curve) == pytest.approx(0.85, abs=0.01)


def test_a_random_router_scores_about_half():
    rng = random.Random(4)
    values = [evaluation.apgr(evaluation.cost_quality_curve([(rng.random(), label) for label in LABELS]))
              for _ in range(200)]
    assert sum(values) / len(values) == pytest.approx(0.5, abs=0.03)


def test_a_backwards_router_scores_below_half():
    scored = [(0.0 if label == "strong_only" else 1.0, label) for label in LABELS]
    assert evaluation.apgr(evaluation.cost_quality_curve(scored)) < 0.2


class FixedModel:
    def __init__(self, table):
        self.table = table

    def assess(self, prompt, messages=1):
        return self.table[prompt]


def test_evaluate_reports_files_macro_and_apgr(tmp_path):
    rows = [{"file": "a", "prompt": "p1", "tier": 1}, {"file": "a", "prompt": "p2", "tier": 2},
            {"file": "b", "prompt": "p3", "tier": 3},
            {"file": "routellm_x", "prompt": "p4", "tier": 4, "label": "strong_only",
             "label_kind": "weak_strong_correctness"},
            {"file": "routellm_x", "prompt": "p5", "tier": 3, "label": "both_correct",
             "label_kind": "weak_strong_correctness"}]
    model = FixedModel({"p1": (0.1, 1), "p2": (0.1, 1), "p3": (0.5, 3), "p4": (0.7, 4), "p5": (0.5, 3)})
    result = evaluation.evaluate(model, rows)
    assert result["files"]["a"]["exact"] == 0.5 and result["files"]["b"]["exact"] == 1.0
    assert result["macro"]["exact"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert result["apgr"]["routellm_x"] > 0.7
    text = evaluation.report(result)
    assert "routellm_x: APGR" in text and "macro" in text
    evaluation.plot(result, str(tmp_path / "out.png"))
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"

