"""Training the interaction trees (sidecar.complexity.interactions) on top of the
additive model: gradient boosting on the same all-threshold ordinal loss, cut
points fixed. Training side only (the `train` extra: scikit-learn grows the
trees; serving reads them as plain JSON).

Each round fits a small regression tree to the Newton step of every prompt
(−gradient / curvature of its loss, weighted by curvature and by its file's
weight), so a leaf holds the step that best lowers the loss of the prompts in
it; `eta` shrinks each step. Inputs are the clamped signals and the additive
score, so a tree can say "this score, but for a prompt shaped like this".
Deterministic: fixed random_state.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.tree import DecisionTreeRegressor

TIERS = 5


def _nested(tree, eta: float):
    """A fitted sklearn tree → nested lists, leaves already multiplied by eta
    (exactly the step the training scores took)."""
    t = tree.tree_

    def node(i):
        if t.children_left[i] == -1:
            return float(eta * t.value[i][0][0])
        return [int(t.feature[i]), float(t.threshold[i]),
                node(t.children_left[i]), node(t.children_right[i])]
    return node(0)


def _step(scores, y, thresholds):
    """Per prompt: gradient and curvature of the ordinal loss in its score."""
    Y = np.where(y[:, None] > np.arange(1, TIERS)[None, :], 1.0, -1.0)
    p = expit(-Y * (scores[:, None] - thresholds[None, :]))
    return (-Y * p).sum(axis=1), (p * (1.0 - p)).sum(axis=1) + 1e-9


def boost(inputs, scores, y, weights, thresholds, count: int, depth: int, eta: float,
          min_leaf: int) -> list:
    """inputs: (n, signals + 1) clamped signals and additive score; scores: the
    additive scores. Returns the trees as nested lists for the model file."""
    scores = np.array(scores, dtype=np.float64)
    trees = []
    for _ in range(count):
        gradient, curvature = _step(scores, y, thresholds)
        tree = DecisionTreeRegressor(max_depth=depth, min_samples_leaf=min_leaf, random_state=0)
        tree.fit(inputs, -gradient / curvature, sample_weight=weights * curvature)
        trees.append(_nested(tree, eta))
        scores += eta * tree.predict(inputs)
    return trees
