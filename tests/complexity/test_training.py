"""Training: deterministic, produces a model the server loads, learns an order."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from scipy import sparse

from sidecar.complexity import known_sources, training
from sidecar.complexity.complexity import ComplexityModel
from synthetic_prompts import synthetic_rows


def test_training_is_deterministic_and_learns_the_order():
    a = training.train(synthetic_rows(), augment=0.2)
    b = training.train(synthetic_rows(), augment=0.2)
    assert training.dump(a) == training.dump(b)
    model = ComplexityModel(a)
    low = model.assess("hey what time is it in Lisbon")
    high = model.assess("Prove that $\\sum_{k=1}^n k = n(n+1)/2$ and derive $\\sum k^2$ step by step.")
    assert low[1] == 1 and high[1] >= 3 and low[0] < high[0]


def test_known_sources_are_learned_per_file_and_recognised():
    spec = training.train(synthetic_rows(), augment=0.2, known_sources=True)
    model = ComplexityModel(spec)
    assert model.known.names == ("chat", "code", "math")
    parts = dict(model.contributions("hey what time is it in city 7", top=50))
    assert "known source 'chat'" in parts
    assert abs(parts["known source 'chat'"]) <= model.known.max_shift
    off = training.train(synthetic_rows(), augment=0.2)  # the default: general part only
    assert off["known_sources"] is None and ComplexityModel(off).known is None


def test_a_correction_learns_what_the_general_score_gets_wrong():
    # Four rows of tier 3 whose general score sits in tier 2: the correction
    # must push them up, and only by what the data says.
    thresholds = np.array([-1.0, 0.0, 1.0, 2.0])
    X = sparse.csr_matrix(np.zeros((4, 1)))
    w, b = known_sources.fit_correction(X, np.array([3, 3, 3, 3]), np.full(4, -0.5), thresholds, 1e-2)
    assert b > 0.5  # from -0.5 past the cut at 0.0
    w, b = known_sources.fit_correction(X, np.array([2, 2, 2, 2]), np.full(4, -0.5), thresholds, 1e-2)
    assert abs(b) < 0.5  # already right: stays in tier 2


def test_coverage_floors_count_words_other_prompts_of_the_file_used():
    vocabs = [{"a", "b"}, {"a", "b"}, {"a", "c"}, {"x", "y"}, {"x", "y"}]
    files = ["f", "f", "f", "g", "g"]
    masks, floors = known_sources.coverage_floors(vocabs, files, ["f", "g"], np.ones(5, bool))
    assert masks == {"a": 1, "b": 1, "x": 2, "y": 2}
    # Leave-one-out: "a" is in 3 prompts of f (2 others), "b" in 2 (1 other) -> not counted.
    assert floors[0] == np.quantile([0.5, 0.5, 0.5], known_sources.COVERAGE_QUANTILE)
    assert floors[1] == 0.0


def test_train_eval_classify_commands(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows()))
    model = tmp_path / "model.json"
    run = [sys.executable, "-m", "sidecar"]
    trained = subprocess.run(run + ["train", "--data", str(data), "--out", str(model), "--loso",
                                    "--known-sources"],
                             capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    assert "leave-one-source-out over 3 files" in trained.stdout
    assert json.loads(model.read_text())["known_sources"]["names"] == ["chat", "code", "math"]
    evaluated = subprocess.run(run + ["eval", "--data", str(data), "--model", str(model)],
                               capture_output=True, text=True)
    assert evaluated.returncode == 0 and "macro" in evaluated.stdout
    prompts = '{"id": "a", "prompt": "hey what time is it"}\n{"id": "b", "prompt": "Prove $x^2 \\\\ge 0$ step by step.", "extra": 1}\n'
    classified = subprocess.run(run + ["classify", "--model", str(model)], input=prompts,
                                capture_output=True, text=True)
    assert classified.returncode == 0, classified.stderr
    out = [json.loads(line) for line in classified.stdout.splitlines()]
    assert [r["id"] for r in out] == ["a", "b"] and out[1]["extra"] == 1
    assert out[0]["tier_pred"] < out[1]["tier_pred"] and 0 <= out[0]["score"] < out[1]["score"] <= 1
    bad = subprocess.run(run + ["classify"], input='{"id": 1}\n', capture_output=True, text=True)
    assert bad.returncode == 2 and "line 1" in bad.stderr
