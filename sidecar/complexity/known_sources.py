"""Known-source corrections for the complexity model (`train --known-sources`;
training side, needs the `train` extra).

The general model is kept free of "which benchmark is this" on purpose, so it
carries over to prompts from elsewhere. But operators train on their own
traffic, and a prompt that plainly comes from a distribution we have labels
for deserves what those labels say. So, next to the general model:

  - a gate: a softmax over the training files (bins + words), "which known
    source does this look like, and how sure";
  - per file, a correction: an additive model trained on that file alone, on
    top of the general score (the general model's cut points stay fixed), so it
    learns only what the general model gets wrong there;
  - per file, a coverage floor: the share of a prompt's words that file has
    seen before. A new source that merely resembles a known one (competition
    math vs. grade-school word problems) tends to fail it; a prompt of that
    file passes it 80% of the time.

At serving time a correction applies only when the gate is sure, the coverage
floor is met, and then by at most half a tier. These three limits were chosen
by leave-one-source-out validation: with them, sources left out of training
score within noise of the general model alone (looser limits cost them up to
ten points), and held-out prompts of known sources gain about three points of
exact-tier accuracy. They cost ~25 µs per 1 KB prompt, so they are opt-in:
worth it for a model trained on the traffic it routes.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
from scipy.optimize import minimize

MIN_CONFIDENCE = 0.97    # gate probability of the most likely source
COVERAGE_QUANTILE = 0.2  # a file's own prompts fall below its floor this often
MAX_SHIFT_TIERS = 0.5    # a correction moves the score by at most this many tier widths
GATE_WORDS = 6000
GATE_L2 = 1e-4
CORRECTION_L2 = 1e-2


def fit_softmax(X, labels: np.ndarray, classes: int, l2: float):
    """Multinomial logistic regression, mean loss + L2 (bias unpenalised).
    Returns (weights d×K, bias K)."""
    n, d = X.shape
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), labels] = 1.0

    def loss(params):
        w, b = params[:d * classes].reshape(d, classes), params[d * classes:]
        z = np.asarray(X @ w) + b
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -(onehot * logp).sum() / n + 0.5 * l2 * (w * w).sum()
        g = (np.exp(logp) - onehot) / n
        grad_w = np.asarray(X.T @ g) + l2 * w
        return value, np.concatenate([grad_w.ravel(), g.sum(axis=0)])

    result = minimize(loss, np.zeros(d * classes + classes), jac=True, method="L-BFGS-B",
                      options={"maxiter": 500})
    return result.x[:d * classes].reshape(d, classes), result.x[d * classes:]


def fit_correction(X, y: np.ndarray, offset: np.ndarray, thresholds: np.ndarray, l2: float):
    """Ordinal logistic with the score = offset + X·w + b and the cut points
    fixed: what to add to the general score on this file. Returns (w, b)."""
    n, d = X.shape
    Y = np.where(y[:, None] > np.arange(1, len(thresholds) + 1)[None, :], 1.0, -1.0)

    def loss(params):
        w, b = params[:d], params[d]
        margin = Y * ((offset + X @ w + b)[:, None] - thresholds[None, :])
        g = (-Y / (1.0 + np.exp(margin))).sum(axis=1) / n
        value = np.logaddexp(0.0, -margin).sum() / n + 0.5 * l2 * (w @ w)
        return value, np.concatenate([np.asarray(X.T @ g).ravel() + l2 * w, [g.sum()]])

    result = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", options={"maxiter": 2000})
    return result.x[:d], float(result.x[d])


def coverage_floors(vocabs, files, names, original: np.ndarray):
    """(word → bitmask of the files that used it in ≥ 2 prompts, floor per file).
    Coverage is the share of a prompt's distinct words (numbers too: a file's
    usual numbers are part of its look) that the file has used. The floor is a
    low quantile of each file's own prompts' coverage, counted leave-one-out (a
    word must appear in ≥ 2 *other* prompts), so it matches what a new prompt
    of that file sees at serving time."""
    df = defaultdict(Counter)
    for words, file, keep in zip(vocabs, files, original):
        if keep:
            df[file].update(words)
    masks = defaultdict(int)
    for bit, name in enumerate(names):
        for word, count in df[name].items():
            if count >= 2:
                masks[word] |= 1 << bit
    floors = []
    for name in names:
        own = df[name]
        shares = [sum(own[w] >= 3 for w in words) / max(1, len(words))
                  for words, file, keep in zip(vocabs, files, original) if keep and file == name]
        floors.append(float(np.quantile(shares, COVERAGE_QUANTILE)) if shares else 1.0)
    return dict(sorted(masks.items())), floors


def fit_known_sources(gate_X, X, vocabs, files, y, oof_scores, thresholds, original):
    """gate_X: bins + gate words; X: the general model's design matrix. Returns
    everything the serving side needs, as arrays (see complexity.KnownSources)."""
    names = sorted(set(files))
    label = np.array([names.index(f) for f in files])
    gate_w, gate_b = fit_softmax(gate_X, label, len(names), GATE_L2)
    corrections = []
    for k in range(len(names)):
        rows = np.flatnonzero(label == k)
        corrections.append(fit_correction(X[rows], y[rows], oof_scores[rows], thresholds,
                                          CORRECTION_L2))
    masks, floors = coverage_floors(vocabs, files, names, original)
    return {"names": names, "gate": (gate_w, gate_b), "corrections": corrections,
            "masks": masks, "floors": floors}
