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

from sidecar.complexity import interactions


def _nested(tree, eta: float):
    """A fitted sklearn tree → nested lists, leaves already multiplied by eta
    and rounded to 12 decimals, so the file does not depend on the last bit of
    a float sum."""
    t = tree.tree_

    def node(i):
        if t.children_left[i] == -1:
            return round(float(eta * t.value[i][0][0]), 12)
        return [int(t.feature[i]), float(t.threshold[i]),
                node(t.children_left[i]), node(t.children_right[i])]
    return node(0)


def _step(scores, y, thresholds):
    """Per prompt: gradient and curvature of the ordinal loss in its score.
    Summed column by column: element-wise additions give the same bits
    wherever the arrays sit in memory, a SIMD reduction may not."""
    gradient, curvature = np.zeros(len(scores)), np.full(len(scores), 1e-9)
    for cut, threshold in enumerate(thresholds, start=1):
        sign = np.where(y > cut, 1.0, -1.0)
        p = expit(-sign * (scores - threshold))
        gradient += -sign * p
        curvature += p * (1.0 - p)
    return gradient, curvature


def boost(inputs, scores, y, weights, thresholds, count: int, depth: int, eta: float,
          min_leaf: int) -> list:
    """inputs: (n, signals + 1) clamped signals and additive score; scores: the
    additive scores. Returns the trees as nested lists for the model file."""
    scores = np.array(scores, dtype=np.float64)
    rows = inputs.tolist()
    trees = []
    for _ in range(count):
        gradient, curvature = _step(scores, y, thresholds)
        tree = DecisionTreeRegressor(max_depth=depth, min_samples_leaf=min_leaf, random_state=0)
        # Rounded: exp's vector and scalar code paths may differ in the last
        # bit depending on where an array sits in memory, and that was enough
        # to flip a near-tie between two splits from one process to the next.
        tree.fit(inputs, np.round(-gradient / curvature, 9),
                 sample_weight=np.round(weights * curvature, 9))
        trees.append(_nested(tree, eta))
        # The step the scores take is the leaf as written to the model file,
        # read as serving reads it (float64; sklearn's predict compares float32).
        scores += [interactions.leaf(trees[-1], x) for x in rows]
    return trees
