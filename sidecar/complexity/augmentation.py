"""Pasted-document copies for training (sidecar.complexity.training): real
traffic pastes documents before or after a question, and the labelled sets
rarely do. Deterministic; training side only (numpy)."""

from __future__ import annotations

import numpy as np

# What reading a pasted document of at least this many characters needs, at
# the least: 2-8 KB is a passage (SAT reading passages are tier 2 in the
# gathered data), 8-24 KB a report, and 24 KB and up (6k+ tokens) is
# long-document work (QMSum and SQuALITY tasks, tier 4; the held-out
# long-document set of issue 12 was labelled 3.9 on average).
READING_FLOORS = ((24_000, 4), (8_000, 3), (0, 2))


PASTED = "pasted_documents"


def reading_floor(chars: int) -> int:
    return next(tier for least, tier in READING_FLOORS if chars >= least)


def with_pasted_documents(rows, share: float, layouts: int = 3, seed: int = 20261126) -> list[dict]:
    """Add copies of a `share` of the rows with a "document" of 2.5-100 KB
    (log-uniform) pasted before or after the prompt. A copy's tier is the
    prompt's own or what reading that much needs (READING_FLOORS), whichever is
    higher: the question still decides among hard ones, the length among easy
    ones. The reference set has no such shape, and real traffic does.
    Deterministic."""
    rng = np.random.default_rng(seed)
    texts = [r["prompt"] for r in rows]
    extra = []
    for i in np.flatnonzero(rng.random(len(rows)) < share):
        target = int(np.exp(rng.uniform(np.log(2_500), np.log(100_000))))
        parts, size = [], 0
        while size < target:
            part = texts[int(rng.integers(len(texts)))]
            parts.append(part)
            size += len(part) + 1
        document = "\n".join(parts)
        question = rows[i]["prompt"]
        layout = int(rng.integers(layouts))  # document then question, or the question first
        if "\n" in question:
            layout = 0  # the one-line layouts only make sense for one-line questions
        prompt = (document + "\n\n" + question if layout == 0 else
                  document + "\n" + question if layout == 1 else question + "\n" + document)
        tier = max(int(rows[i]["tier"]), reading_floor(len(document)))
        # A file of their own: copies must not take weight from their original's file.
        extra.append({**rows[i], "prompt": prompt, "tier": tier, "file": PASTED,
                      "kind": PASTED, "copied_from": rows[i].get("file")})
    return rows + extra
