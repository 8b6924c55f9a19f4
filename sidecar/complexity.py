"""The `complexity` feature: a score in [0, 1], monotone in how hard a prompt
looks, and the tier (1-5) it suggests.

This is a transparent heuristic over structural signals (length, reasoning
cues, math and code). Work is bounded: only the first and last 8 KiB of a long
prompt are scanned for cues; length itself is taken from the whole prompt.
"""

from __future__ import annotations

import math

SCAN = 8192
REASONING_CUES = ("prove", "proof", "derive", "step by step", "step-by-step", "theorem",
                  "lemma", "rigorous", "analyze", "analyse", "trade-off", "tradeoff",
                  "design a", "architecture", "optimi", "complexity", "why does", "explain why")
MATH_CUES = ("\\frac", "\\sqrt", "\\int", "\\sum", "$", "^", "=", "∫", "√")
CODE_CUES = ("```", "def ", "class ", "function ", "return ", "#include", "{", ";")
TIER_CUTS = (0.2, 0.4, 0.6, 0.8)


def assess(text: str, messages: int = 1) -> tuple[float, int]:
    n = len(text)
    sample = (text if n <= 2 * SCAN else text[:SCAN] + text[-SCAN:]).lower()
    # Length: ~0 for a few words, ~0.5 at 2,000 characters, saturating by 50k.
    length = min(1.0, math.log1p(n) / math.log1p(50_000))
    reasoning = min(1.0, sum(cue in sample for cue in REASONING_CUES) / 3)
    maths = min(1.0, sum(sample.count(cue) for cue in MATH_CUES) / 12)
    code = min(1.0, sum(cue in sample for cue in CODE_CUES) / 4)
    depth = min(1.0, (messages - 1) / 10)
    score = 0.45 * length + 0.25 * reasoning + 0.15 * maths + 0.10 * code + 0.05 * depth
    score = max(0.0, min(1.0, score))
    return score, tier_for(score)


def tier_for(score: float, cuts: tuple[float, ...] = TIER_CUTS) -> int:
    tier = 1
    for cut in cuts:
        if score >= cut:
            tier += 1
    return tier
