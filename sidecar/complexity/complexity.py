"""The `complexity` feature: a score in [0, 1], monotone in how hard a prompt
looks, and the tier (1-5) it suggests (`tier_hint`).

An ordinal model (sidecar/complexity/complexity_model.json, made by
`python -m sidecar train`) over the signals in sidecar.complexity.signals: score =
bias + Σ (weight·signal + step(signal)) + Σ weight of each known word present,
plus, in models trained with trees (the shipped one), boosted trees over the
signals and that score (sidecar.complexity.interactions), or, in models trained
with `--known-sources`, a correction of at most half a tier for a prompt that
plainly comes from a training file (KnownSources). The model's four
cut points between tiers map to complexity 0.2, 0.4, 0.6 and 0.8, so
`complexity >= 0.6` in a policy means "the model thinks tier 4 or above".
The model is loaded once. This module and signals.py are the reference reading;
serving uses their compiled twin (_reading.c, _scoring.c) when it was built.
"""

from __future__ import annotations

import json
import math
import operator
from bisect import bisect_right
from functools import lru_cache
from itertools import repeat
from pathlib import Path

from sidecar.complexity import interactions, signals

try:  # the compiled scorer (setup.py builds it when a C compiler is there)
    from sidecar.complexity._scoring import Scorer
except ImportError:  # pragma: no cover - test_scoring runs it with the import blocked
    Scorer = None

DEFAULT_MODEL = Path(__file__).resolve().parent / "complexity_model.json"
TIER_CUTS = (0.2, 0.4, 0.6, 0.8)


class Additive:
    """bias + Σ (weight·signal + step over the signal's bins) + Σ weight of each known word."""

    __slots__ = ("dense", "steps", "bias", "words")

    def __init__(self, dense, steps, bias, words):
        self.dense = tuple(float(v) for v in dense)
        self.steps = tuple(tuple(float(x) for x in s) for s in steps)
        self.bias = float(bias)
        self.words = {str(k): float(v) for k, v in words.items()}

    def score(self, clamped, bins, words) -> float:
        return (self.bias + sum(map(operator.mul, self.dense, clamped))
                + sum(map(tuple.__getitem__, self.steps, bins))
                + sum(filter(None, map(self.words.get, words))))

    def parts(self, names, clamped, bins, words) -> list[tuple[str, float]]:
        out = [(name, w * x + steps[b])
               for name, w, x, steps, b in zip(names, self.dense, clamped, self.steps, bins)]
        return out + [(f"word '{word}'", self.words[word]) for word in words if word in self.words]


class KnownSources:
    """When a prompt plainly comes from a source the model was trained on, a
    small correction learned on that source alone (see sidecar.complexity.known_sources
    for why these limits, and how they were chosen). Everything else is left
    to the general model."""

    __slots__ = ("names", "min_confidence", "max_shift", "gate_bias", "gate_bins", "gate_words",
                 "corrections", "floors", "masks")

    def __init__(self, spec: dict, widths: list[int]):
        """widths: the number of bins of each signal, which every table indexed
        by a bin must match."""
        self.names = tuple(str(n) for n in spec["names"])
        k = len(self.names)
        self.min_confidence = float(spec["min_confidence"])
        self.max_shift = float(spec["max_shift"])
        gate = spec["gate"]
        self.gate_bias = tuple(float(v) for v in gate["bias"])
        self.gate_bins = tuple(tuple(tuple(float(v) for v in row) for row in signal)
                               for signal in gate["bins"])
        self.gate_words = {str(w): tuple(float(v) for v in row) for w, row in gate["words"].items()}
        self.corrections = tuple(Additive(c["dense"], c["bins"], c["bias"], c["words"])
                                 for c in spec["corrections"])
        self.floors = tuple(float(f) for f in spec["coverage"]["floors"])
        self.masks = {str(w): int(m) for w, m in spec["coverage"]["words"].items()}
        if (len(self.gate_bias) != k or len(self.corrections) != k or len(self.floors) != k
                or [len(rows) for rows in self.gate_bins] != widths
                or any(len(c.dense) != len(widths) or [len(st) for st in c.steps] != widths
                       for c in self.corrections)
                or any(len(row) != k for rows in self.gate_bins for row in rows)
                or any(len(row) != k for row in self.gate_words.values())):
            raise ValueError("tables do not match the sources or the signal bins")

    def correction(self, logits, clamped, bins, words) -> tuple[str, float] | None:
        """(source, score shift) when the gate's logits are sure of one source and
        the prompt's words pass that source's coverage floor."""
        best = max(logits)
        top = logits.index(best)
        # p(top) = 1 / Σ exp(logit - best), so p < min_confidence ⇔ Σ·min_confidence > 1.
        if sum([math.exp(v - best) for v in logits]) * self.min_confidence > 1.0:
            return None
        bit = 1 << top
        covered = sum(map(bit.__and__, map(self.masks.get, words, repeat(0)))) >> top
        if covered < self.floors[top] * max(1, len(words)):
            return None
        shift = self.corrections[top].score(clamped, bins, words)
        return self.names[top], max(-self.max_shift, min(self.max_shift, shift))


class ComplexityModel:
    __slots__ = ("general", "lows", "highs", "edges", "thresholds", "gap", "known", "path",
                 "bias_row", "bin_rows", "word_rows", "trees", "interactions", "compiled")

    def __init__(self, spec: dict, path: str = "", compiled: bool = True):
        """compiled: serve raw_score from the C scorer when it is built and the
        model has no known_sources (False: the pure-Python reference only)."""
        where = path or "model"
        if spec.get("format") not in (2, 3, 4) or list(spec.get("signals", ())) != list(signals.NAMES):
            raise ValueError(f"{where}: made for other signals; retrain it with "
                             "`python -m sidecar train`")
        n = len(signals.NAMES)
        self.lows = tuple(float(lo) for lo, _ in spec["ranges"])
        self.highs = tuple(float(hi) for _, hi in spec["ranges"])
        self.edges = tuple(tuple(float(x) for x in b["edges"]) for b in spec["bins"])
        self.general = Additive(spec["dense"], [b["weights"] for b in spec["bins"]], spec["bias"],
                                spec["words"])
        if len(self.general.dense) != n or len(self.edges) != n or len(self.lows) != n or any(
                len(w) != len(e) + 1 for e, w in zip(self.edges, self.general.steps)):
            raise ValueError(f"{where}: malformed signal weights")
        self.thresholds = tuple(float(t) for t in spec["thresholds"])
        if len(self.thresholds) != 4 or list(self.thresholds) != sorted(self.thresholds):
            raise ValueError(f"{where}: expected four ordered thresholds")
        self.gap = max(1e-6, (self.thresholds[-1] - self.thresholds[0]) / 3)
        try:
            self.known = (KnownSources(spec["known_sources"], [len(e) + 1 for e in self.edges])
                          if spec.get("known_sources") else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: malformed known_sources ({exc})") from None
        self.trees = spec.get("trees") or None
        try:
            self.interactions = (interactions.compile_trees(self.trees, n + 1)
                                 if self.trees is not None else None)
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"{where}: malformed trees ({exc})") from None
        if self.trees is not None and self.known is not None:
            raise ValueError(f"{where}: trees and known_sources cannot be combined")
        self.path = path
        self._merge_tables()
        self.compiled = self._compile() if compiled and Scorer is not None else None

    def _compile(self):
        if self.known is not None:
            return None  # the gate and corrections stay in Python (no shipped model has them)
        general = self.general
        return Scorer(self.lows, self.highs, general.dense, self.edges, general.steps, general.bias,
                      general.words, *interactions.flatten(self.trees or []),
                      tables=signals.COMPILED_TABLES)

    def _merge_tables(self):
        """One row per bias, bin and word: (general weight, gate logit per known
        source). A single zip-and-sum then yields the general score's
        step-and-word part and the gate's logits: one pass over the prompt's
        words on the hot path, not two."""
        general, known = self.general, self.known
        k = len(known.names) if known else 0
        none = (0.0,) * k
        self.bias_row = (general.bias, *(known.gate_bias if known else ()))
        self.bin_rows = tuple(
            tuple((step, *(known.gate_bins[j][b] if known else ())) for b, step in enumerate(steps))
            for j, steps in enumerate(general.steps))
        gate_words = known.gate_words if known else {}
        self.word_rows = {w: (general.words.get(w, 0.0), *gate_words.get(w, none))
                          for w in sorted({*general.words, *gate_words})}

    def _sums(self, clamped, bins, words) -> list[float]:
        if self.known is None:
            # Rows of width one: the same additions in the same order (so the same
            # float), without zipping ~40 one-element rows.
            general = self.general
            first = sum((general.bias, *map(tuple.__getitem__, general.steps, bins),
                         *filter(None, map(general.words.get, words))))
            return [first + sum(map(operator.mul, general.dense, clamped))]
        sums = list(map(sum, zip(self.bias_row, *map(tuple.__getitem__, self.bin_rows, bins),
                                 *filter(None, map(self.word_rows.get, words)))))
        sums[0] += sum(map(operator.mul, self.general.dense, clamped))
        return sums

    def _prepare(self, dense):
        """(signals clamped to the training range, bin index of each). The bins
        need no clamping: the edges lie inside the range."""
        return ([lo if x < lo else hi if x > hi else x for x, lo, hi in zip(dense, self.lows, self.highs)],
                list(map(bisect_right, self.edges, dense)))

    def raw_score(self, dense, words) -> float:
        if self.compiled is not None:
            return self.compiled(dense, words)
        return self.reference_score(dense, words)

    def reference_score(self, dense, words) -> float:
        """raw_score in Python: what the compiled scorer must equal."""
        clamped, bins = self._prepare(dense)
        sums = self._sums(clamped, bins, words)
        if self.interactions is not None:
            clamped.append(sums[0])
            return sums[0] + self.interactions(clamped)
        if self.known is not None:
            shift = self.known.correction(sums[1:], clamped, bins, words)
            if shift is not None:
                return sums[0] + shift[1]
        return sums[0]

    def calibrate(self, s: float) -> tuple[float, int]:
        """Raw score → (complexity in [0, 1], tier 1-5); the cut points land on TIER_CUTS."""
        t = self.thresholds
        tier = 1 + sum(s >= cut for cut in t)
        if s < t[0]:
            return 0.2 * math.exp((s - t[0]) / self.gap), tier
        if s >= t[-1]:
            return 1.0 - 0.2 * math.exp(-(s - t[-1]) / self.gap), tier
        lo = t[tier - 2]
        hi = t[tier - 1]
        return TIER_CUTS[tier - 2] + 0.2 * (s - lo) / (hi - lo), tier

    def assess(self, text: str, messages: int = 1) -> tuple[float, int]:
        if self.compiled is not None:  # read and scored in C: no word set, no signal list
            sample, total, context = signals.sample_of(text)
            return self.calibrate(self.compiled.score_text(
                sample.encode("utf-8", "surrogatepass"), total, context, messages))
        dense, words = signals.extract(text, messages)
        return self.calibrate(self.raw_score(dense, words))

    def contributions(self, text: str, messages: int = 1, top: int = 6) -> list[tuple[str, float]]:
        """The signals and words that moved the score most, for `explain`."""
        dense, words = signals.extract(text, messages)
        clamped, bins = self._prepare(dense)
        parts = self.general.parts(signals.NAMES, clamped, bins, words)
        shift = (self.known.correction(self._sums(clamped, bins, words)[1:], clamped, bins, words)
                 if self.known is not None else None)
        if shift is not None:
            parts.append((f"known source '{shift[0]}'", shift[1]))
        if self.trees is not None:
            additive = self._sums(clamped, bins, words)[0]
            parts.append(("interactions (trees)",
                          interactions.evaluate(self.trees, [*clamped, additive])))
        parts.sort(key=lambda p: -abs(p[1]))
        return parts[:top]


def load(path: str | Path, compiled: bool = True) -> ComplexityModel:
    path = Path(path)
    return ComplexityModel(json.loads(path.read_text()), str(path), compiled)


@lru_cache(maxsize=1)
def default_model() -> ComplexityModel:
    return load(DEFAULT_MODEL)


def assess(text: str, messages: int = 1) -> tuple[float, int]:
    return default_model().assess(text, messages)


def tier_for(score: float, cuts: tuple[float, ...] = TIER_CUTS) -> int:
    return 1 + sum(score >= cut for cut in cuts)
