"""Training: deterministic, produces a model the server loads, learns an order."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import sparse

from sidecar.complexity import augmentation, boosting, evaluation, interactions, known_sources, training
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


def test_boosted_trees_learn_an_interaction_an_additive_score_cannot():
    # Tier 4 when exactly one of two signals is on, tier 1 otherwise (XOR): no
    # sum of per-signal terms separates it; a few depth-2 trees must.
    cells = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 50, dtype=float)
    y = np.where(cells[:, 0] != cells[:, 1], 4, 1)
    thresholds = np.array([-1.5, -0.5, 0.5, 1.5])
    inputs = np.hstack([cells, np.zeros((len(cells), 1))])
    trees = boosting.boost(inputs, np.zeros(len(cells)), y, np.ones(len(cells)), thresholds,
                           count=30, depth=2, eta=0.3, min_leaf=5)
    score = interactions.compile_trees(trees, 3)
    for x, tier in zip(inputs.tolist(), y):
        assert 1 + sum(score(x) >= t for t in thresholds) == tier
    again = boosting.boost(inputs, np.zeros(len(cells)), y, np.ones(len(cells)), thresholds,
                           count=30, depth=2, eta=0.3, min_leaf=5)
    assert again == trees


def test_a_model_with_trees_is_the_default_and_known_sources_replace_them():
    with_trees = training.train(synthetic_rows(), trees=20)
    assert with_trees["format"] == 4 and len(with_trees["trees"]) == 20
    assert ComplexityModel(with_trees).interactions is not None
    additive = training.train(synthetic_rows(), trees=0)
    assert "trees" not in additive and ComplexityModel(additive).interactions is None
    known = training.train(synthetic_rows(), known_sources=True)
    assert "trees" not in known and known["known_sources"] is not None


@pytest.mark.parametrize("trees", [0, 20])
def test_the_cut_shift_moves_only_the_cut_points_and_never_lowers_a_tier(trees):
    fitted = training.train(synthetic_rows(), trees=trees, cut_shift=0.0)
    shifted = training.train(synthetic_rows(), trees=trees, cut_shift=0.9)
    cuts, moved = np.array(fitted.pop("thresholds")), np.array(shifted.pop("thresholds"))
    assert moved == pytest.approx(cuts - 0.9 * (cuts[-1] - cuts[0]) / 3, abs=2e-6)
    for spec in (fitted, shifted):
        del spec["trained_on"]["options"]["cut_shift"]
    assert fitted == shifted                                   # the fit and the trees are the same
    before = ComplexityModel({**fitted, "thresholds": list(cuts)})
    after = ComplexityModel({**shifted, "thresholds": list(moved)})
    rows = synthetic_rows()
    # From the chat prompt to the maths one a few characters at a time: every score between.
    chat, maths = rows[0]["prompt"], rows[2]["prompt"]
    blends = [chat[:len(chat) - i] + " " + maths[:i * 4] for i in range(len(chat))]
    tiers = [(before.assess(p)[1], after.assess(p)[1]) for p in blends]
    assert all(a >= b for b, a in tiers) and any(a > b for b, a in tiers)


def test_reference_files_weigh_their_share_and_copies_weigh_as_one_file():
    files = ["ref"] * 4 + ["gathered"] * 2 + [augmentation.PASTED] * 10
    w = training.source_weights(files, {"ref": 3.0})
    totals = {f: w[[i for i, g in enumerate(files) if g == f]].sum() for f in set(files)}
    assert totals["ref"] == pytest.approx(3 * totals["gathered"])
    assert totals[augmentation.PASTED] == pytest.approx(totals["gathered"])


def test_leave_one_kind_out_trains_without_the_kind_it_scores():
    rows = [dict(r, kind=None) for r in synthetic_rows() if r["file"] == "chat"]
    rows += [dict(r, kind="code_kind") for r in synthetic_rows() if r["file"] == "code"]
    rows += [dict(r, kind="math_kind") for r in synthetic_rows() if r["file"] == "math"]
    seen = []

    def train(train_rows):
        seen.append({r.get("kind") for r in train_rows})
        return ComplexityModel(training.train(train_rows, trees=0))
    report = evaluation.leave_kinds_out(train, rows)
    assert seen == [{None, "math_kind"}, {None, "code_kind"}]
    assert "leave-one-kind-out over 2 kinds" in report
    assert report.splitlines()[-1].startswith("macro over kinds")
    assert "leave-one-kind-out over 2 kinds: model tier" in report


def test_two_training_processes_write_the_same_model_file(tmp_path):
    # Separate processes: arrays land at other addresses, which is what once made
    # the trees differ in the last bit (and then in a split) between builds.
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in synthetic_rows()))
    outs = []
    for name in ("a.json", "b.json"):
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "sidecar", "train", "--data", str(data), "--out", str(out)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and b'"trees"' in outs[0]
