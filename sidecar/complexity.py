"""The `complexity` feature: a score in [0, 1], monotone in how hard a prompt
looks, and the tier (1-5) it suggests (`tier_hint`).

An additive ordinal model (sidecar/complexity_model.json, made by
`python -m sidecar train`) over the signals in sidecar.signals: score =
bias + Σ (weight·signal + step(signal)) + Σ weight of each known word present. The model's four
cut points between tiers map to complexity 0.2, 0.4, 0.6 and 0.8, so
`complexity >= 0.6` in a policy means "the model thinks tier 4 or above".
Pure Python; the model is loaded once.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path

from sidecar import signals

DEFAULT_MODEL = Path(__file__).resolve().parent / "complexity_model.json"
TIER_CUTS = (0.2, 0.4, 0.6, 0.8)


class ComplexityModel:
    __slots__ = ("dense", "lows", "highs", "edges", "steps", "bias", "words", "thresholds", "gap",
                 "path")

    def __init__(self, spec: dict, path: str = ""):
        if spec.get("format") != 2 or list(spec.get("signals", ())) != list(signals.NAMES):
            raise ValueError(f"{path or 'model'}: made for other signals; retrain it with "
                             "`python -m sidecar train`")
        self.dense = tuple(float(v) for v in spec["dense"])
        self.lows = tuple(float(lo) for lo, _ in spec["ranges"])
        self.highs = tuple(float(hi) for _, hi in spec["ranges"])
        self.edges = tuple(tuple(float(x) for x in b["edges"]) for b in spec["bins"])
        self.steps = tuple(tuple(float(x) for x in b["weights"]) for b in spec["bins"])
        if len(self.dense) != len(signals.NAMES) or len(self.edges) != len(signals.NAMES) or len(
                self.lows) != len(signals.NAMES) or any(
                len(w) != len(e) + 1 for e, w in zip(self.edges, self.steps)):
            raise ValueError(f"{path or 'model'}: malformed signal weights")
        self.bias = float(spec["bias"])
        self.words = {str(k): float(v) for k, v in spec["words"].items()}
        self.thresholds = tuple(float(t) for t in spec["thresholds"])
        if len(self.thresholds) != 4 or list(self.thresholds) != sorted(self.thresholds):
            raise ValueError(f"{path or 'model'}: expected four ordered thresholds")
        self.gap = max(1e-6, (self.thresholds[-1] - self.thresholds[0]) / 3)
        self.path = path

    def raw_score(self, dense, words) -> float:
        s = self.bias
        for w, x, lo, hi, edges, steps in zip(self.dense, dense, self.lows, self.highs,
                                              self.edges, self.steps):
            x = lo if x < lo else hi if x > hi else x
            s += w * x + steps[bisect_right(edges, x)]
        table = self.words
        for word in words:
            v = table.get(word)
            if v is not None:
                s += v
        return s

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
        dense, words = signals.extract(text, messages)
        return self.calibrate(self.raw_score(dense, words))

    def contributions(self, text: str, messages: int = 1, top: int = 6) -> list[tuple[str, float]]:
        """The signals and words that moved the score most, for `explain`."""
        dense, words = signals.extract(text, messages)
        parts = []
        for name, w, x, lo, hi, edges, steps in zip(signals.NAMES, self.dense, dense, self.lows,
                                                    self.highs, self.edges, self.steps):
            x = min(hi, max(lo, x))
            parts.append((name, w * x + steps[bisect_right(edges, x)]))
        parts += [(f"word '{word}'", self.words[word]) for word in words if word in self.words]
        parts.sort(key=lambda p: -abs(p[1]))
        return parts[:top]


def load(path: str | Path) -> ComplexityModel:
    path = Path(path)
    return ComplexityModel(json.loads(path.read_text()), str(path))


@lru_cache(maxsize=1)
def default_model() -> ComplexityModel:
    return load(DEFAULT_MODEL)


def assess(text: str, messages: int = 1) -> tuple[float, int]:
    return default_model().assess(text, messages)


def tier_for(score: float, cuts: tuple[float, ...] = TIER_CUTS) -> int:
    return 1 + sum(score >= cut for cut in cuts)
