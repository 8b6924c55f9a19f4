"""The shipped complexity model: loads, calibrates monotonically, routes the
shapes it must not be fooled by."""

from __future__ import annotations

import copy
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import unseen_kinds
from sidecar.complexity import complexity

MODEL = complexity.default_model()
NOTES = "The meeting went fine and everyone agreed on the plan for next week. " * 200


def test_the_model_file_is_small_and_matches_the_signals():
    assert complexity.DEFAULT_MODEL.stat().st_size < 5 * 1024 * 1024
    assert len(MODEL.general.dense) == len(MODEL.edges) == len(complexity.signals.NAMES)


@settings(max_examples=300, deadline=None)
@given(st.floats(-50, 50), st.floats(0, 10))
def test_calibration_is_monotone_and_bounded(s, step):
    low, tier_low = MODEL.calibrate(s)
    high, tier_high = MODEL.calibrate(s + step)
    assert 0.0 <= low <= high <= 1.0
    assert tier_low <= tier_high


def test_the_cut_points_land_on_the_policy_thresholds():
    for i, cut in enumerate(MODEL.thresholds):
        score, tier = MODEL.calibrate(cut)
        assert score == pytest.approx(complexity.TIER_CUTS[i])
        assert tier == i + 2
        assert complexity.tier_for(score + 1e-9) == tier


@pytest.mark.parametrize("prompt,most", [
    ("hi", 1),
    ("what's the weather like tomorrow", 1),
    ("Is it safe to eat raw cookie dough?", 1),
    ("Who agreed on the plan?", 2),
    ("Summarise these notes in one line: we met, we agreed, we left.", 2),
])
def test_easy_prompts_stay_low(prompt, most):
    assert MODEL.assess(prompt)[1] <= most


@pytest.mark.parametrize("reference", [False, True])
def test_a_prompt_with_no_text_is_rated_as_a_blank_one(reference):
    """An image-only turn carries no text; it must not read as a one-letter word
    (which the trees, never shown that shape, put at tier 3)."""
    model = copy.copy(MODEL)
    if reference:
        model.compiled = None
    assert model.assess("") == model.assess(" ") == MODEL.assess(" ")
    assert model.assess("")[1] == 1


# Issue 12: on kinds of prompts it never saw, the old model rated exam
# questions 1.3, long-document tasks 1.3 and hard user prompts 2.2 on average
# (on these generators), against labelled means of 2.8, 3.9 and 4 on the
# held-out sets. These bound the mean over a generated batch, and what no
# single prompt of the kind may get.
KINDS = {
    "exam questions": (unseen_kinds.exam_question, 2.0, 3.6, 1),
    "reasoning puzzles": (unseen_kinds.reasoning_puzzle, 2.5, 4.2, 2),
    "hard user prompts": (unseen_kinds.hard_chat_prompt, 2.5, 4.2, 2),
    "long-document tasks": (lambda rng: unseen_kinds.long_document_task(rng, 40_000), 3.5, 4.6, 3),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_unseen_kinds_are_not_squeezed_toward_the_cheap_tiers(kind):
    make, low, high, floor = KINDS[kind]
    tiers = [MODEL.assess(make(random.Random(seed)))[1] for seed in range(120)]
    assert low <= sum(tiers) / len(tiers) <= high
    assert min(tiers) >= floor


@settings(max_examples=40, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(2_000, 6_000))
def test_reading_more_never_lowers_the_tier(rng, short):
    state = rng.getstate()
    brief = unseen_kinds.long_document_task(rng, short)
    rng.setstate(state)
    long = unseen_kinds.long_document_task(rng, short * 12)
    assert MODEL.assess(long)[1] >= MODEL.assess(brief)[1]


@pytest.mark.parametrize("prompt,least", [
    ("Let $f(x)=x^3-3x+1$. Find all real $x$ such that $f(f(x))=0$ and prove that the sum of "
     "their squares is an integer.", 3),                     # short but hard
    ("Find the number of ordered pairs $(a,b)$ of integers with $1 \\le a,b \\le 100$ such that "
     "$a^2+b^2$ is divisible by $7$ and $\\gcd(a,b)=1$.", 3),
])
def test_short_hard_math_goes_high(prompt, least):
    assert MODEL.assess(prompt)[1] >= least


def test_contributions_name_the_signals_that_moved_the_score():
    parts = MODEL.contributions("Prove that $\\sqrt{2}$ is irrational.", top=4)
    assert len(parts) == 4
    assert all(isinstance(name, str) and isinstance(v, float) for name, v in parts)
    assert abs(parts[0][1]) >= abs(parts[-1][1])


def test_a_model_for_other_signals_is_refused(tmp_path):
    spec = json.loads(complexity.DEFAULT_MODEL.read_text())
    spec["signals"] = spec["signals"][:-1]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="made for other signals"):
        complexity.load(path)


@pytest.fixture(scope="module")
def known_spec():
    """A model with known-source corrections, trained on three synthetic sources."""
    from sidecar.complexity import training
    from synthetic_prompts import synthetic_rows
    return training.train(synthetic_rows(), augment=0.2, known_sources=True)


@pytest.fixture(scope="module")
def known(known_spec):
    return complexity.ComplexityModel(known_spec)


PROMPTS = [
    "hi", "what's the weather like tomorrow", "Is it safe to eat raw cookie dough?",
    "Which gas do plants absorb? (A) oxygen (B) carbon dioxide (C) helium (D) neon",
    "Write a function to find the shared elements from the given two lists.",
    "Let $f(x)=x^3-3x+1$. Find all real $x$ such that $f(f(x))=0$.",
    "Write a 300+ word essay on the history of tea. Do not use any commas.",
    NOTES + "\n\nWho agreed on the plan?",
    "hey what time is it in city 12",
    "Write a function f3(xs) that returns the sorted unique values.\ndef f3(xs):\n    return xs\n",
]


def reference_score(model, text):
    """The model's score computed the slow, obvious way: general model, then
    the gate's logits one source at a time, then the bounded correction."""
    dense, words = complexity.signals.extract(text)
    clamped, bins = model._prepare(dense)
    score = model.general.score(clamped, bins, words)
    known = model.known
    logits = [known.gate_bias[k]
              + sum(known.gate_bins[j][b][k] for j, b in enumerate(bins))
              + sum(known.gate_words[w][k] for w in words if w in known.gate_words)
              for k in range(len(known.names))]
    shift = known.correction(logits, clamped, bins, words)
    return score, (shift[1] if shift else 0.0)


def test_the_fast_path_scores_like_the_reference(known):
    shifted = 0
    for prompt in PROMPTS:
        general, shift = reference_score(known, prompt)
        dense, words = complexity.signals.extract(prompt)
        assert known.raw_score(dense, words) == pytest.approx(general + shift, abs=1e-9)
        shifted += shift != 0.0
    assert shifted >= 1  # a prompt shaped like a training source was corrected


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=400))
def test_a_known_source_correction_moves_the_score_by_at_most_half_a_tier(known, text):
    general, shift = reference_score(known, text)
    assert abs(shift) <= known.known.max_shift + 1e-12
    assert known.known.max_shift <= 0.5 * known.gap + 1e-6
    dense, words = complexity.signals.extract(text)
    assert known.raw_score(dense, words) == pytest.approx(general + shift, abs=1e-9)


def test_words_no_known_source_has_seen_get_no_correction(known):
    dense, words = complexity.signals.extract("zqxv blorptane kwyjibo frandle snorpwick vextroid "
                                              "glarnish quibbleflux")
    clamped, bins = known._prepare(dense)
    assert known.known.correction(known._sums(clamped, bins, words)[1:], clamped, bins, words) is None


def test_a_model_without_known_sources_scores_with_the_general_part_alone(known_spec, known):
    general = complexity.ComplexityModel({**known_spec, "known_sources": None})
    assert general.known is None
    for prompt in PROMPTS:
        assert general.raw_score(*complexity.signals.extract(prompt)) == pytest.approx(
            reference_score(known, prompt)[0], abs=1e-9)


@pytest.mark.parametrize("damage", [
    lambda ks: ks["gate"]["bias"].pop(),
    lambda ks: ks["corrections"].pop(),
    lambda ks: ks["gate"]["bins"].pop(),
    lambda ks: ks.pop("coverage"),
    lambda ks: ks["gate"]["words"].__setitem__("the", [1.0]),
    lambda ks: ks["gate"]["bins"][0].pop(),
    lambda ks: ks["corrections"][1]["bins"][2].pop(),
    lambda ks: ks["corrections"][0]["dense"].pop(),
])
def test_malformed_known_sources_are_refused_with_the_file_named(tmp_path, known_spec, damage):
    spec = json.loads(json.dumps(known_spec))
    damage(spec["known_sources"])
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=r"damaged\.json: malformed known_sources"):
        complexity.load(path)


@settings(max_examples=300, deadline=None)
@given(text=st.text(min_size=1, max_size=600))
def test_the_shipped_models_shortcut_gives_the_merged_tables_float_exactly(text):
    # A model without known sources skips the merged (width-one) tables; the
    # score must be the same float, not merely close: tiers cut on it.
    assert MODEL.known is None
    merged = copy.copy(MODEL)
    merged.known = object()  # any non-None value takes the merged-table path
    clamped, bins = MODEL._prepare(complexity.signals.extract(text)[0])
    words = complexity.signals.extract(text)[1]
    assert MODEL._sums(clamped, bins, words) == merged._sums(clamped, bins, words)[:1]
