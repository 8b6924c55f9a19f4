"""Training: deterministic, produces a model the server loads, learns an order."""

from __future__ import annotations

import json
import subprocess
import sys

from sidecar import training
from sidecar.complexity import ComplexityModel


def synthetic_rows():
    rows = []
    for i in range(60):
        rows.append({"file": "chat", "id": i, "tier": 1, "prompt": f"hey what time is it in city {i}"})
        rows.append({"file": "code", "id": i, "tier": 3,
                     "prompt": f"Write a function f{i}(xs) that returns the sorted unique values.\n"
                               f"def f{i}(xs):\n    return sorted(set(xs))\n"})
        rows.append({"file": "math", "id": i, "tier": 5,
                     "prompt": f"Prove that for every integer $n > {i}$ the sum $\\sum_{{k=1}}^n k^3$ "
                               f"equals $(n(n+1)/2)^2$, then derive the closed form of "
                               f"$\\sum_{{k=1}}^n k^4$ step by step."})
    return rows


def test_training_is_deterministic_and_learns_the_order():
    a = training.train(synthetic_rows(), augment=0.2)
    b = training.train(synthetic_rows(), augment=0.2)
    assert training.dump(a) == training.dump(b)
    model = ComplexityModel(a)
    low = model.assess("hey what time is it in Lisbon")
    high = model.assess("Prove that $\\sum_{k=1}^n k = n(n+1)/2$ and derive $\\sum k^2$ step by step.")
    assert low[1] == 1 and high[1] >= 3 and low[0] < high[0]


def test_train_eval_classify_commands(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows()))
    model = tmp_path / "model.json"
    run = [sys.executable, "-m", "sidecar"]
    trained = subprocess.run(run + ["train", "--data", str(data), "--out", str(model), "--loso"],
                             capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr
    assert "leave-one-source-out over 3 files" in trained.stdout
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
