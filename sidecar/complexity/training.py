"""Training the complexity model (python -m sidecar train). Needs the `train`
extra (numpy, scipy, scikit-learn); never imported by the server.

The additive part: for every structural signal a linear term plus a step
function over quantile bins (so "longer is harder, up to a point" needs no
hand-made transform), plus a regularised bag of words, trained with the
all-threshold ordinal logistic loss (tiers are ordered: one score, four cut
points). Then interaction trees boosted on the same loss
(sidecar.complexity.boosting) for what a sum of per-signal terms cannot say.
What keeps it from learning which benchmark a prompt came from:
  - every source file gets the same total weight whatever its size, times
    `reference_share` for the reference set's files;
  - every part is L2-penalised, and the defaults were chosen by holding out
    whole kinds of prompts and whole files, next to held-out rows of seen
    sources (docs/operations.md, "The complexity model").
Instead of the trees, known-source corrections (sidecar.complexity.known_sources)
can use what the general model leaves out, only for prompts that plainly come
from a training file. Deterministic: same data and options, same model file,
byte for byte, in any process.
"""

from __future__ import annotations

import json
import math
import zlib
from collections import defaultdict

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from sidecar.complexity import signals
from sidecar.complexity.augmentation import PASTED, with_pasted_documents

TIERS = 5


def featurize(rows):
    dense, vocabs = [], []
    for row in rows:
        d, words = signals.extract(row["prompt"], row.get("messages", 1))
        dense.append(d)
        vocabs.append(words)
    return np.asarray(dense, dtype=np.float64), vocabs


def choose_vocabulary(vocabs, files, min_sources: int, min_docs: int, max_words: int) -> list[str]:
    sources, docs = defaultdict(set), defaultdict(int)
    for words, file in zip(vocabs, files):
        for w in words:
            if len(w) > 1 and not w[0].isdigit():  # numbers and one-letter names are not words
                sources[w].add(file)
                docs[w] += 1
    keep = [w for w in docs if len(sources[w]) >= min_sources and docs[w] >= min_docs]
    keep.sort(key=lambda w: (-docs[w], w))
    return sorted(keep[:max_words])


def bag(vocabs, index: dict) -> sparse.csr_matrix:
    rows, cols = [], []
    for i, words in enumerate(vocabs):
        for w in words:
            j = index.get(w)
            if j is not None:
                rows.append(i)
                cols.append(j)
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(vocabs), len(index)))


def source_weights(files, shares: dict | None = None) -> np.ndarray:
    """Every file the same total weight, times its share (default 1)."""
    counts = defaultdict(int)
    for f in files:
        counts[f] += 1
    shares = shares or {}
    w = np.array([shares.get(f, 1.0) / counts[f] for f in files])
    return w * len(files) / math.fsum(w)  # fsum: the same bits wherever w sits


def bin_edges(dense, bins: int) -> list[np.ndarray]:
    qs = np.linspace(0, 1, bins + 1)[1:-1]
    return [np.unique(np.quantile(dense[:, j], qs)) for j in range(dense.shape[1])]


def one_hot_bins(dense, edges) -> sparse.csr_matrix:
    blocks = []
    for j, e in enumerate(edges):
        b = np.searchsorted(e, dense[:, j], side="right")
        blocks.append(sparse.csr_matrix((np.ones(len(b)), (np.arange(len(b)), b)),
                                        shape=(len(b), len(e) + 1)))
    return sparse.hstack(blocks).tocsr()


def fit(X, y, weights, penalty):
    """All-threshold ordinal logistic regression with a per-column L2 penalty.
    Returns (w, thresholds)."""
    n, d = X.shape
    k = TIERS - 1
    # Y[i, j] = +1 if tier_i > j+1 (above cut j), else -1.
    Y = np.where(y[:, None] > np.arange(1, TIERS)[None, :], 1.0, -1.0)
    wsum = weights.sum()

    def loss(params):
        w, theta = params[:d], params[d:]
        s = X @ w
        margin = Y * (s[:, None] - theta[None, :])
        l = np.logaddexp(0.0, -margin)
        g = -Y * (1.0 / (1.0 + np.exp(margin)))          # d loss / d (s - theta)
        gw = weights[:, None] * g
        value = (weights[:, None] * l).sum() / wsum + 0.5 * (penalty * w * w).sum()
        grad_w = X.T @ gw.sum(axis=1) / wsum + penalty * w
        grad_t = -gw.sum(axis=0) / wsum
        return value, np.concatenate([np.asarray(grad_w).ravel(), grad_t])

    start = np.concatenate([np.zeros(d), np.linspace(-1.5, 1.5, k)])
    result = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 3000})
    return result.x[:d], np.sort(result.x[d:])


# augment: the share of rows copied with a pasted document (graded by length,
# see with_pasted_documents); layouts 3: after, after on one line, or before.
# reference_share: how many times a file of the reference set (rows without a
# "kind": ../shared/data/routing, whose labels define the tiers) counts against
# a gathered file; chosen by leave-one-kind-out and seen-source validation.
# trees: interaction trees boosted on top (sidecar.complexity.boosting); 0 for
# an additive model alone. Known-source corrections replace them (opt-in).
# cut_shift: once fitted, every cut point moves down by this share of the mean
# gap between them (shifted_cuts); chosen by leave-one-kind-out and seen-source
# validation like reference_share.
DEFAULTS = {"bins": 8, "min_sources": 1, "min_docs": 5, "max_words": 20000,
            "l2_dense": 1e-3, "l2_bins": 3e-3, "l2_words": 3e-3, "augment": 0.15, "layouts": 3,
            "known_sources": False, "reference_share": 5.0, "cut_shift": 0.12,
            "trees": 160, "tree_depth": 5, "tree_eta": 0.2, "tree_min_leaf": 30}


def shifted_cuts(thresholds, shift: float) -> list[float]:
    """The cut points moved down by `shift` of the mean gap between them.

    A kind of prompt the model never saw is rated about 0.4 of a tier low: the
    gathered kinds are harder than the reference set's easy end, and whatever
    looks unfamiliar falls toward it. The fit cannot see that (every kind it
    scores, it was trained on), so the correction comes after it, and the trees
    are boosted against the fitted cut points, not these."""
    gap = (thresholds[-1] - thresholds[0]) / 3
    return [round(float(t) - shift * gap, 6) for t in thresholds]


FOLDS = 5


def _fold(row) -> int:
    """A fixed fold per labelled prompt (pasted-document copies keep their original's)."""
    key = f"{row.get('copied_from', row.get('file'))}/{row.get('id', row['prompt'])}"
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % FOLDS


class General:
    """The general model fitted on some rows; scores any rows' design matrix."""

    def __init__(self, dense, vocabs, files, y, opts):
        self.mean, self.std = dense.mean(axis=0), dense.std(axis=0)
        self.std[self.std < 1e-9] = 1.0
        # Bins and vocabulary from labelled prompts only: pasted-document copies
        # would spend the bins' resolution on lengths and inflate word counts.
        basis = [i for i, f in enumerate(files) if f != PASTED] or list(range(len(files)))
        self.edges = bin_edges(dense[basis], opts["bins"])
        vocab = choose_vocabulary([vocabs[i] for i in basis], [files[i] for i in basis],
                                  opts["min_sources"], opts["min_docs"], opts["max_words"])
        self.index = {w: i for i, w in enumerate(vocab)}
        self.binned = one_hot_bins(dense, self.edges)  # kept: the known-source gate reads it too
        self.X = self.matrix((dense - self.mean) / self.std, self.binned, bag(vocabs, self.index))
        n_dense, n_bins = dense.shape[1], self.binned.shape[1]
        penalty = np.concatenate([np.full(n_dense, opts["l2_dense"]), np.full(n_bins, opts["l2_bins"]),
                                  np.full(len(self.index), opts["l2_words"])])
        self.w, self.theta = fit(self.X, y, source_weights(files, opts.get("shares")), penalty)

    def design(self, dense, vocabs):
        return (dense - self.mean) / self.std, one_hot_bins(dense, self.edges), bag(vocabs, self.index)

    @staticmethod
    def matrix(dense_std, binned, words):
        return sparse.hstack([sparse.csr_matrix(dense_std), binned, words]).tocsr()

    def scores(self, dense, vocabs) -> np.ndarray:
        return self.matrix(*self.design(dense, vocabs)) @ self.w


def out_of_fold_scores(rows, dense, vocabs, files, y, opts) -> np.ndarray:
    """General scores each row would get from a model that never saw it: the
    known-source corrections must learn from honest errors, not memorised ones."""
    folds = np.array([_fold(r) for r in rows])
    scores = np.zeros(len(rows))
    for k in range(FOLDS):
        train_rows, held = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        if len(held) == 0 or len(set(y[train_rows])) < 2:
            continue
        model = General(dense[train_rows], [vocabs[i] for i in train_rows],
                        [files[i] for i in train_rows], y[train_rows], opts)
        scores[held] = model.scores(dense[held], [vocabs[i] for i in held])
    return scores


def _additive(w, mean, std, edges, digits: int = 6) -> dict:
    """Standardised weights [dense, bins, words...] → raw-signal weights, bias and bins."""
    n_dense = len(mean)
    bins, at = [], n_dense
    for e in edges:
        bins.append([round(float(x), digits) for x in w[at:at + len(e) + 1]])
        at += len(e) + 1
    return {"dense": [round(float(v), 8) for v in w[:n_dense] / std],
            "bias": -float((w[:n_dense] * mean / std).sum()), "bins": bins, "words_at": at}


def _known_sources(general, rows, dense, vocabs, files, y, opts, original) -> dict | None:
    from sidecar.complexity import known_sources as ts
    if len(set(files)) < 2:
        return None
    gate_index = {w: i for i, w in enumerate(
        choose_vocabulary(vocabs, files, 1, opts["min_docs"], ts.GATE_WORDS))}
    gate_X = sparse.hstack([general.binned, bag(vocabs, gate_index)]).tocsr()
    fitted = ts.fit_known_sources(gate_X, general.X, vocabs, files, y,
                                  out_of_fold_scores(rows, dense, vocabs, files, y, opts),
                                  general.theta, original)
    gate_w, gate_b = fitted["gate"]
    gate_bins, gate_at = [], 0
    for e in general.edges:
        gate_bins.append([[round(float(v), 4) for v in gate_w[gate_at + b]] for b in range(len(e) + 1)])
        gate_at += len(e) + 1
    corrections = []
    for w, b in fitted["corrections"]:
        part = _additive(w, general.mean, general.std, general.edges)
        at = part.pop("words_at")
        part["bias"] = round(part["bias"] + b, 8)
        part["words"] = {word: round(float(w[at + i]), 6) for word, i in sorted(general.index.items())
                         if abs(w[at + i]) >= 1e-4}
        corrections.append(part)
    gap = (general.theta[-1] - general.theta[0]) / 3
    return {
        "names": fitted["names"],
        "min_confidence": ts.MIN_CONFIDENCE,
        "max_shift": round(float(ts.MAX_SHIFT_TIERS * gap), 6),
        "gate": {"bias": [round(float(v), 4) for v in gate_b], "bins": gate_bins,
                 "words": {word: [round(float(v), 4) for v in gate_w[gate_at + i]]
                           for word, i in sorted(gate_index.items())}},
        "corrections": corrections,
        "coverage": {"floors": [round(f, 6) for f in fitted["floors"]], "words": fitted["masks"]},
    }


def train(rows, **options) -> dict:
    """Rows with "prompt", "tier" and "file" → the model as a JSON-able dict."""
    opts = {**DEFAULTS, **options}
    labelled = [r for r in rows if r.get("tier")]
    opts["shares"] = {r.get("file", "unknown"): float(opts["reference_share"])
                      for r in labelled if not r.get("kind")}
    rows = with_pasted_documents(labelled, opts["augment"], opts["layouts"])
    original = np.arange(len(rows)) < len(labelled)
    files = [r.get("file", "unknown") for r in rows]
    y = np.array([int(r["tier"]) for r in rows])
    dense, vocabs = featurize(rows)
    general = General(dense, vocabs, files, y, opts)
    model = _additive(general.w, general.mean, general.std, general.edges)
    at = model.pop("words_at")
    words = {word: round(float(general.w[at + i]), 6) for word, i in general.index.items()
             if abs(general.w[at + i]) >= 1e-4}
    spec = {
        "format": 3,
        "signals": list(signals.NAMES),
        "dense": model["dense"],
        # Signals are clamped to what training saw: no extrapolation on odd prompts.
        "ranges": [[round(float(lo), 8), round(float(hi), 8)]
                   for lo, hi in zip(dense.min(axis=0), dense.max(axis=0))],
        "bins": [{"edges": [round(float(x), 8) for x in e], "weights": w}
                 for e, w in zip(general.edges, model["bins"])],
        "bias": round(model["bias"], 8),
        "words": dict(sorted(words.items())),
        "thresholds": [round(float(t), 6) for t in general.theta],
        # Copies with a pasted document belong to their original's file there.
        "known_sources": (_known_sources(general, rows, dense, vocabs,
                                         [r.get("copied_from", f) for r, f in zip(rows, files)],
                                         y, opts, original)
                          if opts["known_sources"] else None),
        "trained_on": {"rows": len(rows), "files": sorted(set(files)), "options": opts},
    }
    if opts["trees"] and not opts["known_sources"]:
        spec["trees"] = _trees(spec, dense, vocabs, y, source_weights(files, opts["shares"]), opts)
        spec["format"] = 4
    spec["thresholds"] = shifted_cuts(spec["thresholds"], opts["cut_shift"])
    return spec


def _trees(spec, dense, vocabs, y, weights, opts) -> list:
    """Interaction trees boosted on the additive score exactly as serving
    computes it (from the rounded model file, not the fitted floats)."""
    from sidecar.complexity import boosting
    from sidecar.complexity.complexity import ComplexityModel
    additive = ComplexityModel(spec, compiled=False)  # only its Python tables are read here
    inputs = []
    for d, words in zip(dense.tolist(), vocabs):
        clamped, bins = additive._prepare(d)
        inputs.append([*clamped, additive._sums(clamped, bins, words)[0]])
    inputs = np.asarray(inputs)
    return boosting.boost(inputs, inputs[:, -1], y, weights, np.asarray(spec["thresholds"]),
                          opts["trees"], opts["tree_depth"], opts["tree_eta"], opts["tree_min_leaf"])


def dump(model: dict) -> str:
    return json.dumps(model, indent=None, separators=(",", ":"), sort_keys=False) + "\n"
