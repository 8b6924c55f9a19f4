"""The interaction trees: compiled code equals the node-by-node reading; only
well-formed numeric trees are accepted, so nothing but numbers reaches the
generated source."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.complexity import complexity, interactions

WIDTH = 6
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
trees = st.recursive(finite, lambda child: st.tuples(
    st.integers(0, WIDTH - 1), finite, child, child).map(list), max_leaves=24)


@settings(max_examples=200, deadline=None)
@given(st.lists(trees, max_size=8), st.lists(finite, min_size=WIDTH, max_size=WIDTH))
def test_compiled_trees_add_up_exactly_like_the_reference_reading(forest, x):
    assert interactions.compile_trees(forest, WIDTH)(x) == interactions.evaluate(forest, x)


def test_a_threshold_sends_equal_values_left():
    tree = [[0, 1.5, -1.0, 2.0]]
    compiled = interactions.compile_trees(tree, 1)
    assert compiled([1.5]) == -1.0
    assert compiled([1.5000001]) == 2.0


@pytest.mark.parametrize("tree,message", [
    ([0, 1.0, 0.0], "a node is"),
    ([7, 1.0, 0.0, 0.0], "feature index 7"),
    ([-1, 1.0, 0.0, 0.0], "feature index -1"),
    ([True, 1.0, 0.0, 0.0], "feature index True"),
    ([0.5, 1.0, 0.0, 0.0], "feature index 0.5"),
    ([0, float("nan"), 0.0, 0.0], "finite number"),
    ([0, 1.0, float("inf"), 0.0], "finite number"),
    ([0, "__import__('os')", 0.0, 0.0], "finite number"),
    ([0, 1.0, "__import__('os').system('true')", 0.0], "finite number"),
    ({"feature": 0}, "finite number"),
])
def test_malformed_trees_are_refused_before_any_code_is_made(tree, message):
    with pytest.raises(ValueError, match=message):
        interactions.compile_trees([tree], WIDTH)


def test_trees_deeper_than_the_limit_are_refused():
    tree = 0.0
    for _ in range(interactions.MAX_DEPTH + 1):
        tree = [0, 0.0, tree, 0.0]
    with pytest.raises(ValueError, match="deep"):
        interactions.compile_trees([tree], WIDTH)


def test_the_shipped_model_scores_with_its_trees():
    model = complexity.default_model()
    assert model.trees, "the shipped model has interaction trees"
    dense, words = complexity.signals.extract("Design a lock-free queue and prove it linearizable.")
    clamped, bins = model._prepare(dense)
    additive = model._sums(clamped, bins, words)[0]
    expected = additive + interactions.evaluate(model.trees, [*clamped, additive])
    assert model.raw_score(dense, words) == expected
    assert any(name == "interactions (trees)" for name, _ in model.contributions(
        "Design a lock-free queue and prove it linearizable.", top=50))


def test_a_model_file_with_broken_trees_is_refused_with_its_path(tmp_path):
    spec = json.loads(complexity.DEFAULT_MODEL.read_text())
    broken = copy.deepcopy(spec)
    broken["trees"][0] = [len(spec["signals"]) + 5, 0.0, 0.0, 0.0]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=f"{path}: malformed trees"):
        complexity.load(path)
